"""The one JSON-lines reader, with one policy for a torn last line.

Every writer here appends whole lines and flushes them (epochs.jsonl, predictions.jsonl), so only the last
line of a file can be half-written: a run killed mid-write, or one still writing. That line, when it has no
newline yet and does not parse, is left out; a bad line anywhere else is damage, refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathgpt.example import DataError


def parse_jsonl(text: str, where: str | Path) -> list[Any]:
    """The rows of JSON-lines ``text`` (blank lines skipped; ``where`` names it in errors)."""
    lines = text.split("\n")
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # no newline after it: a torn last line
                break
            raise DataError(f"{where}: line {n} is not valid JSON") from None
    return rows


def read_jsonl(path: str | Path) -> list[Any]:
    """The rows of a JSON-lines file; a missing file is a one-line DataError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    return parse_jsonl(text, path)
