"""What a second start of a study must respect: the config it was created with, and one base evaluation each.

A study is re-run to resume it (after a kill, with more trials or time) or joined by more workers; either way
it must run what it was created to run. ``check_same_config`` refuses a changed sweep or base config with one
line naming what changed, before anything is written; ``claim_base`` lets exactly one of several sweeps
started together evaluate a model's base while the others wait for its result.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from mathgpt.config import ConfigError
from mathgpt.redact import clip

# How many more trials and how long a worker runs change how much of the study is run, not what it is.
MAY_CHANGE = ("n_trials", "timeout_s")
SHOWN_CHANGES = 3


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values (a list is one value: a changed list of choices is one change)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``<unset>`` for a missing side)."""
    old, new = _flat(before), _flat(json.loads(json.dumps(after)))  # as the storage holds it (JSON)
    missing = "<unset>"
    return [
        f"{key}: {clip(old.get(key, missing))} -> {clip(new.get(key, missing))}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


def check_same_config(
    storage: optuna.storages.BaseStorage, name: str, sweep_raw: dict[str, Any], base_raw: dict[str, Any]
) -> None:
    """Refuse to resume study ``name`` with another sweep or base config than it was created with (one line).

    Called before ``optuna.create_study`` (which appends to the storage even when the study exists), so a
    refused resume writes nothing. The base config is compared resolved (the base file with the sweep's
    overrides): a changed ``data.eval_size`` in the base file is caught as well as a changed grid.
    """
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return  # a new study
    if "sweep_config" not in attrs:
        return  # created but never configured (its first start died before the attrs were set)
    drop = (*MAY_CHANGE, "base_config")  # the base file is compared by content, not by its path

    def kept(raw: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in raw.items() if k not in drop}

    changes = [f"sweep {c}" for c in config_changes(kept(attrs["sweep_config"]), kept(sweep_raw))]
    if "base_config" in attrs:
        changes += [f"base {c}" for c in config_changes(attrs["base_config"], base_raw)]
    if changes:
        more = f" and {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else ""
        raise ConfigError(
            f"study '{name}' was created with another config; changed: "
            f"{'; '.join(changes[:SHOWN_CHANGES])}{more}. Restore it, or start a new study (--study NAME)"
        )


@contextmanager
def claim_base(run_dir: Path) -> Iterator[None]:
    """Hold the claim on the base run in ``run_dir``: a second sweep on the same folder waits here.

    An exclusive ``flock`` on ``run_dir/claim.lock``: the kernel releases it when its holder exits, killed
    or not, so a dead sweep never leaves a stale claim. The caller re-reads the study's ``bases`` after the
    claim is granted and skips a base that the other sweep stored meanwhile.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "claim.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
