"""The study's fixed slices, and how a run's points are checked against them before the study stores them.

A run appends one ``epochs.jsonl`` line per evaluation point (``mathgpt.record.Point``). The study keeps each
point without ``ids`` (the study's ``eval_problems`` holds them once, in the order of every stored ``correct``),
so a point's per-problem lists are re-ordered to the study's order by problem id before they are stored:
pairing is by id, never by position. A point scored on other problems (its fingerprint differs from the
study's) is refused with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mathgpt.jsonl import read_jsonl
from mathgpt.record import PER_PROBLEM, Point, ids_fingerprint


class SliceMismatch(ValueError):
    """A point scored on other problems than the study's slice: the trial fails with this one line."""


def select_fingerprint(point: Point) -> str | None:
    return point.select.fingerprint if point.select is not None else None


def to_study_order(point: Point, eval_ids: list[str]) -> Point:
    """The point's report-slice lists in the study's ``eval_ids`` order, and without ``ids``.

    Raises SliceMismatch (one line) when the point was scored on other problems.
    """
    ids = point.ids
    update: dict[str, Any] = {"ids": None}
    if ids is not None and eval_ids and list(ids) != list(eval_ids):
        if sorted(map(str, ids)) != sorted(map(str, eval_ids)):
            raise SliceMismatch(
                f"point {point.point} was scored on other problems (fingerprint "
                f"{point.fingerprint}, study {ids_fingerprint(eval_ids)})"
            )
        where = {str(i): n for n, i in enumerate(ids)}
        for key in PER_PROBLEM:
            values = getattr(point, key)
            update[key] = [values[where[str(i)]] for i in eval_ids]
    return point.model_copy(update=update)


def check_point(point: Point, eval_fp: str | None, select_fp: str | None) -> None:
    """Refuse (SliceMismatch, one line) a point whose report or selection slice is not the study's."""
    if eval_fp and point.fingerprint != eval_fp:
        raise SliceMismatch(
            f"point {point.point}: report slice fingerprint {point.fingerprint} differs from the study's {eval_fp}"
        )
    sel = select_fingerprint(point)
    if select_fp and sel and sel != select_fp:
        raise SliceMismatch(
            f"point {point.point}: selection slice fingerprint {sel} differs from the study's {select_fp}"
        )


def objective_value(point: Point) -> float:
    """What Optuna maximises: the selection slice's accuracy, or the report slice's when there is none."""
    return point.select.accuracy if point.select is not None else point.accuracy


def pruning_vector(point: Point) -> list[int]:
    """What the Wilcoxon pruner pairs across trials: the selection slice's per-problem results (the report
    slice's only when the study has no selection slice), so pruning never looks at the slice claims are made on."""
    return point.select.correct if point.select is not None else point.correct


def ungradable_rate(point: Point) -> float | None:
    return point.n_ungradable / point.n_eval if point.n_eval else None


def eval_problems(run_dir: Path, base_line: Point) -> list[dict[str, Any]]:
    """[{id, eval_set, level, subject, steps}] of the report slice, in the base line's ``ids`` order.

    Read from the base run's predictions.jsonl (its point-0 report-slice records); a problem missing there
    keeps its id with null fields.
    """
    ids = [str(i) for i in base_line.ids or []]
    found: dict[str, dict[str, Any]] = {}
    path = run_dir / "predictions.jsonl"
    if path.is_file():
        for rec in read_jsonl(path):
            if rec["point"] == 0 and rec["slice"] == "report":
                found.setdefault(str(rec.get("id")), rec)
    keys = ("eval_set", "level", "subject", "steps")
    return [{"id": i, **{k: (found.get(i) or {}).get(k) for k in keys}} for i in ids]


def general_ids(base_line: Point) -> dict[str, list[str]]:
    return {name: list(res.get("ids") or []) for name, res in base_line.general.items()}
