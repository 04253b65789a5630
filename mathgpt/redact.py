"""What the project shows of text it did not write: URLs without their credentials, long values clipped.

Every line the project prints or writes that can hold a storage URL (the console, the report, the W&B run's
recorded command line, error messages) goes through ``redact``; every error message that quotes a user's
value goes through ``clip``. This module imports nothing of the project, so every stage can use it.
"""

from __future__ import annotations

import re
import reprlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HIDDEN = "***"
# The password of a URL's user part: scheme://user:PASSWORD@host. Greedy up to the authority's last '@', so a
# password holding an unescaped '@' is hidden whole; the authority ends at the first '/' or whitespace.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")
# Query parameters that carry a secret (libpq's password / sslpassword, tokens, keys).
_QUERY = re.compile(r"([?&](?:[A-Za-z_]*(?:password|passwd|secret|token|key)[A-Za-z_]*)=)[^&\s#]*", re.I)
CLIP = 80  # characters of an offending value an error message quotes

_short = reprlib.Repr()  # Python 3.11's Repr takes no arguments: its limits are attributes
_short.maxlevel, _short.maxdict, _short.maxlist, _short.maxtuple, _short.maxset = 2, 4, 4, 4, 4
_short.maxstring = _short.maxother = CLIP


def redact(text: str) -> str:
    """``text`` with every URL's password and secret query values replaced by ``***``.

    Example: ``redact("postgresql://u:pw@h/db?sslpassword=x")`` is ``"postgresql://u:***@h/db?sslpassword=***"``.
    """
    return _QUERY.sub(rf"\g<1>{HIDDEN}", _USERINFO.sub(rf"\g<1>:{HIDDEN}@", text))


@contextmanager
def redacted_argv() -> Iterator[None]:
    """``sys.argv`` redacted for the block: W&B records the command line of the process that starts a run."""
    saved = sys.argv
    sys.argv = [redact(a) for a in saved]
    try:
        yield
    finally:
        sys.argv = saved


def clip(value: Any, limit: int = CLIP) -> str:
    """A short, bounded ``repr`` of ``value`` for an error message (a nested value is cut at depth and width).

    reprlib never formats more than its limits, so a value built from a YAML alias bomb costs nothing here.
    """
    text = _short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
