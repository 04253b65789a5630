"""`mathgpt regrade DIR|STUDY_DIR`: re-score saved predictions with the current checker.

A run directory holds ``predictions.jsonl`` (docs/CONTRACTS.md); a study directory holds run directories
(``base/``, ``trial_<n>/``) and, for a journal study, ``journal.log``. Each run gets a ``regraded.jsonl`` next to
its predictions: every record with its grading fields replaced by the current checker's verdict and the
stored ones kept under ``before``. On a study the stored points are re-scored too, so the report reads the new
verdicts: the study's ``bases`` are rewritten, each trial's re-scored points go to the study attribute
``regraded_points`` (a finished trial's own attributes cannot change), and the study's ``checker_version``
becomes the current one, so the sweep accepts new trials again.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from mathgpt.checker import CHECKER_VERSION, grade_both
from mathgpt.example import DataError
from mathgpt.jsonl import read_jsonl
from mathgpt.record import Point, SelectSlice, study_baselines, study_bases, trial_points
from mathgpt.scored import by_set, slice_summary
from mathgpt.storage import open_study

_GRADED = ("extracted", "correct", "status", "reason", "strict_correct", "answered")


def regrade_record(record: dict) -> dict:
    """The record with its grading fields from the current checker; the stored ones under ``before``."""
    for key in ("gold", "output", "grader", "status"):
        if key not in record:
            raise DataError(f"prediction record {record.get('id', '?')} has no {key!r} field")
    flexible, strict = grade_both(record["gold"], record["output"], record["grader"])
    return {
        **record,
        "extracted": flexible.extracted,
        "correct": flexible.correct,
        "status": flexible.status,
        "reason": flexible.reason,
        "strict_correct": strict.correct,
        "answered": flexible.extracted is not None,
        "before": {k: record[k] for k in _GRADED if k in record},
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
        return str(json.loads((run / "metrics.json").read_text()).get("checker_version") or "unknown")
    except (FileNotFoundError, json.JSONDecodeError):
        return "unknown"


def regrade_run(run: Path) -> tuple[list[dict], list[str]]:
    """Write ``run/regraded.jsonl``; returns its records and one summary line per (model, point)."""
    regraded = [regrade_record(r) for r in read_jsonl(run / "predictions.jsonl")]
    with open(run / "regraded.jsonl", "w") as f:
        for r in regraded:
            f.write(json.dumps(r) + "\n")
    groups: dict[tuple[str, object], list[dict]] = {}
    for r in regraded:
        groups.setdefault((str(r["model"]), r["point"]), []).append(r)
    version = _stored_version(run)
    out = []
    for (model, point), rs in groups.items():
        n = len(rs)
        before = sum(bool(r["before"]["correct"]) for r in rs) / n
        after = sum(r["correct"] for r in rs) / n
        changed = sum(
            r["before"]["correct"] != r["correct"] or r["before"]["status"] != r["status"] for r in rs
        )
        ungradable = sum(r["status"] == "ungradable" for r in rs)
        out.append(
            f"{run} {model} point {point}: accuracy {before:.3f} -> {after:.3f} (n={n}, changed {changed}, "
            f"ungradable {ungradable}; checker {version} -> {CHECKER_VERSION})"
        )
    out.append(f"wrote {run / 'regraded.jsonl'} ({len(regraded)} records)")
    return regraded, out


def regraded_point(point: Point, records: list[dict], model: str, eval_ids: list[str]) -> dict:
    """``point`` re-scored from its run's regraded records (report slice in the study's order)."""
    mine = [r for r in records if r["model"] == model and r["point"] == point.point]
    report = {str(r["id"]): r for r in mine if r["slice"] == "report"}
    missing = [i for i in eval_ids if i not in report]
    if missing:
        raise DataError(f"point {point.point} of {model}: no prediction for problem {missing[0]}")
    rep = [report[i] for i in eval_ids]
    update: dict = {
        **slice_summary(rep),
        "correct": [int(r["correct"]) for r in rep],
        "answered": [int(r["answered"]) for r in rep],
        "status": [r["status"] for r in rep],
        "by_set": by_set(rep),
        "checker_version": CHECKER_VERSION,
    }
    if point.select is not None:
        sel = [r for r in mine if r["slice"] == "select"]
        s = slice_summary(sel)
        update["select"] = SelectSlice(
            **{k: s[k] for k in ("accuracy", "ci95", "n_eval", "n_correct")},
            fingerprint=point.select.fingerprint,
            correct=[int(r["correct"]) for r in sel],
        )
    return point.model_copy(update=update).stored()


def regrade_study(study: optuna.Study, regraded: dict[Path, list[dict]]) -> list[str]:
    """Re-score the study's stored points from its runs' regraded records (see the module docstring)."""
    eval_ids = [str(p["id"]) for p in study.user_attrs.get("eval_problems") or []]

    def records_of(run_dir: str | None, what: str) -> list[dict]:
        recs = regraded.get(Path(run_dir).resolve()) if run_dir else None
        if recs is None:
            raise DataError(f"{what}: no predictions.jsonl under {run_dir}; the study cannot be regraded")
        return recs

    bases = {}
    for model, base in study_bases(study).items():
        recs = records_of(base.dir, f"base of {model}")
        bases[model] = regraded_point(base, recs, "base", eval_ids)
    baselines: dict[str, dict] = {}
    for model, by_name in study_baselines(study).items():
        for label, point in by_name.items():
            recs = records_of(point.dir, f"baseline '{label}' of {model}")
            baselines.setdefault(model, {})[label] = regraded_point(point, recs, "base", eval_ids)
    trials = {}
    for t in study.get_trials(deepcopy=False):
        points = trial_points(t)
        if points:
            recs = records_of(t.user_attrs.get("trial_dir"), f"trial {t.number}")
            trials[str(t.number)] = [regraded_point(p, recs, "finetuned", eval_ids) for p in points]
    study.set_user_attr("bases", bases)
    if baselines:
        study.set_user_attr("baselines", baselines)
    study.set_user_attr("regraded_points", trials)
    study.set_user_attr("checker_version", CHECKER_VERSION)
    return [f"study {study.study_name}: {len(bases)} base(s) and {len(trials)} trial(s) re-scored with checker "
            f"{CHECKER_VERSION}"]  # fmt: skip


def regrade(path: Path, storage: str | None = None) -> list[str]:
    """Regrade a run directory, or every run directory directly under a study directory (and the study's
    stored points when ``path`` holds its ``journal.log`` or ``storage`` names its database)."""
    path = Path(path)
    lines, regraded = [], {}
    for run in _run_dirs(path):
        records, out = regrade_run(run)
        regraded[run.resolve()] = records
        lines += out
    if storage or (path / "journal.log").is_file():
        lines += regrade_study(open_study(path.name, storage, path.parent), regraded)
    return lines
