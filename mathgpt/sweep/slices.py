"""Evaluation points as the study stores them, and the fixed slices every trial is scored on.

A run appends one ``epochs.jsonl`` line per evaluation point (docs/CONTRACTS.md). The study keeps each line
without ``ids`` (the study's ``eval_problems`` holds them once, in the order of every stored ``correct``), so a
point's per-problem lists are re-ordered to the study's order by problem id before they are stored: pairing is
by id, never by position. A point scored on other problems (its fingerprint differs from the study's) is
refused with one line. Older runs wrote lines without ``point``/``fingerprint``: the point is then the epoch,
``train_examples`` is n_train x epoch, and the fingerprint is computed from the line's ids the way
``mathgpt.data.fingerprint`` does (sha256 over the sorted ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathgpt.data import ids_fingerprint

PER_PROBLEM = ("correct", "answered", "status")  # lists aligned with the line's ids


class SliceMismatch(ValueError):
    """A point scored on other problems than the study's slice: the trial fails with this one line."""


def line_fingerprint(line: dict[str, Any]) -> str | None:
    if line.get("fingerprint"):
        return str(line["fingerprint"])
    return ids_fingerprint(line["ids"]) if line.get("ids") is not None else None


def select_fingerprint(line: dict[str, Any]) -> str | None:
    sel = line.get("select")
    return sel.get("fingerprint") if isinstance(sel, dict) else None


def point_index(line: dict[str, Any]) -> int:
    """The line's point number; an old-style line's point is its (integer) epoch."""
    return int(line["point"]) if "point" in line else int(line.get("epoch") or 0)


def normalize(line: dict[str, Any], n_train: int | None = None) -> dict[str, Any]:
    """Fill what old-style lines lack (``point``, ``train_examples``, ``fingerprint``); leave new ones as is."""
    out = dict(line)
    out["point"] = point_index(line)
    if out.get("train_examples") is None and n_train is not None:
        out["train_examples"] = int(round(n_train * float(line.get("epoch") or 0)))
    fp = line_fingerprint(line)
    if fp is not None:
        out["fingerprint"] = fp
    return out


def to_study_order(line: dict[str, Any], eval_ids: list[str]) -> dict[str, Any]:
    """The line's per-problem lists in the study's ``eval_ids`` order, and without ``ids``.

    Raises SliceMismatch (one line) when the line was scored on other problems.
    """
    out = {k: v for k, v in line.items() if k != "ids"}
    ids = line.get("ids")
    if ids is not None and eval_ids and list(ids) != list(eval_ids):
        if sorted(map(str, ids)) != sorted(map(str, eval_ids)):
            raise SliceMismatch(
                f"point {line.get('point')} was scored on other problems (fingerprint "
                f"{line_fingerprint(line)}, study {ids_fingerprint(eval_ids)})"
            )
        where = {str(i): n for n, i in enumerate(ids)}
        for key in PER_PROBLEM:
            if isinstance(line.get(key), list):
                out[key] = [line[key][where[str(i)]] for i in eval_ids]
    if isinstance(
        out.get("general"), dict
    ):  # general sets keep their own fingerprints; ids live in the study
        out["general"] = {
            name: {k: v for k, v in res.items() if k != "ids"} for name, res in out["general"].items()
        }
    return out


def check_point(line: dict[str, Any], eval_fp: str | None, select_fp: str | None) -> None:
    """Refuse (SliceMismatch, one line) a point whose report or selection slice is not the study's."""
    fp = line_fingerprint(line)
    if eval_fp and fp and fp != eval_fp:
        raise SliceMismatch(
            f"point {point_index(line)}: report slice fingerprint {fp} differs from the study's {eval_fp}"
        )
    sel = select_fingerprint(line)
    if select_fp and sel and sel != select_fp:
        raise SliceMismatch(
            f"point {point_index(line)}: selection slice fingerprint {sel} differs from the study's {select_fp}"
        )


def objective_value(line: dict[str, Any]) -> float:
    """What Optuna maximises: the selection slice's accuracy, or the report slice's when there is none."""
    sel = line.get("select")
    if isinstance(sel, dict) and sel.get("accuracy") is not None:
        return float(sel["accuracy"])
    return float(line["accuracy"])


def ungradable_rate(line: dict[str, Any]) -> float | None:
    n, bad = line.get("n_eval"), line.get("n_ungradable")
    return bad / n if n and bad is not None else None


def eval_problems(run_dir: Path, base_line: dict[str, Any]) -> list[dict[str, Any]]:
    """[{id, eval_set, level, subject, steps}] of the report slice, in the base line's ``ids`` order.

    Read from the base run's predictions.jsonl (its point-0 report-slice records); a problem missing there
    keeps its id with null fields.
    """
    ids = [str(i) for i in base_line.get("ids") or []]
    found: dict[str, dict[str, Any]] = {}
    path = run_dir / "predictions.jsonl"
    if path.is_file():
        with path.open() as f:
            for raw in f:
                if not raw.strip():
                    continue
                rec = json.loads(raw)
                if point_index(rec) != 0 or rec.get("slice", "report") != "report":
                    continue
                found.setdefault(str(rec.get("id")), rec)
    keys = ("eval_set", "level", "subject", "steps")
    return [{"id": i, **{k: (found.get(i) or {}).get(k) for k in keys}} for i in ids]


def general_ids(base_line: dict[str, Any]) -> dict[str, list[str]]:
    general = base_line.get("general") or {}
    return {name: list(res.get("ids") or []) for name, res in general.items() if isinstance(res, dict)}
