"""`mathgpt regrade DIR|STUDY_DIR`: re-score saved predictions with the current checker.

A run directory holds ``predictions.jsonl`` (docs/CONTRACTS.md); a study directory holds run directories
(``base/``, ``trial_<n>/``). Each run gets a ``regraded.jsonl`` next to its predictions: every record with
its grading fields replaced by the current checker's verdict and the stored ones kept under ``before``.
Nothing else is rewritten, so a regrade can be compared with, or thrown away. Records from before checker
2.0 (no ``status`` field) are read too: their stored status is taken as "correct"/"wrong" from ``correct``.
"""

from __future__ import annotations

import json
from pathlib import Path

from mathgpt.checker import CHECKER_VERSION, grade_both
from mathgpt.data import DataError

_GRADED = ("extracted", "correct", "status", "reason", "strict_correct", "answered")


def _dataset(record: dict) -> str:
    """The checker convention of a record's eval set: MATH sets are LaTeX, every other set is a number."""
    return "math" if str(record.get("eval_set", "")).startswith("math") else "gsm8k"


def regrade_record(record: dict) -> dict:
    """The record with its grading fields from the current checker; the stored ones under ``before``."""
    for key in ("gold", "output"):
        if key not in record:
            raise DataError(f"prediction record {record.get('id', '?')} has no {key!r} field")
    flexible, strict = grade_both(record["gold"], record["output"], _dataset(record))
    before = {k: record[k] for k in _GRADED if k in record}
    before.setdefault("status", "correct" if record.get("correct") else "wrong")
    return {
        **record,
        "extracted": flexible.extracted,
        "correct": flexible.correct,
        "status": flexible.status,
        "reason": flexible.reason,
        "strict_correct": strict.correct,
        "answered": flexible.extracted is not None,
        "before": before,
    }


def _run_dirs(path: Path) -> list[Path]:
    if not path.is_dir():
        raise FileNotFoundError(f"no such run or study directory: {path}")
    if (path / "predictions.jsonl").exists():
        return [path]
    runs = sorted(p.parent for p in path.glob("*/predictions.jsonl"))
    if not runs:
        raise FileNotFoundError(f"{path} holds no predictions.jsonl (nor do its subdirectories)")
    return runs


def _stored_version(run: Path) -> str:
    try:
        return str(json.loads((run / "metrics.json").read_text()).get("checker_version") or "before 2.0")
    except (FileNotFoundError, json.JSONDecodeError):
        return "unknown"


def regrade_run(run: Path) -> list[str]:
    """Write ``run/regraded.jsonl``; one summary line per (model, point) in the run."""
    lines = (run / "predictions.jsonl").read_text().splitlines()
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as err:
        raise DataError(f"{run / 'predictions.jsonl'} is not JSON lines: {err}") from None
    regraded = [regrade_record(r) for r in records]
    with open(run / "regraded.jsonl", "w") as f:
        for r in regraded:
            f.write(json.dumps(r) + "\n")
    groups: dict[tuple[str, object], list[dict]] = {}
    for r in regraded:
        groups.setdefault((str(r.get("model", "?")), r.get("point", r.get("epoch"))), []).append(r)
    version = _stored_version(run)
    out = []
    for (model, point), rs in groups.items():
        n = len(rs)
        before = sum(bool(r["before"].get("correct")) for r in rs) / n
        after = sum(r["correct"] for r in rs) / n
        changed = sum(
            r["before"].get("correct") != r["correct"] or r["before"]["status"] != r["status"] for r in rs
        )
        ungradable = sum(r["status"] == "ungradable" for r in rs)
        out.append(
            f"{run} {model} point {point}: accuracy {before:.3f} -> {after:.3f} (n={n}, changed {changed}, "
            f"ungradable {ungradable}; checker {version} -> {CHECKER_VERSION})"
        )
    return out


def regrade(path: Path) -> list[str]:
    """Regrade a run directory, or every run directory directly under a study directory."""
    return [line for run in _run_dirs(Path(path)) for line in regrade_run(run)]
