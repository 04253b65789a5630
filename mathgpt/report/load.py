"""Study -> per-problem matrix and point table (docs/CONTRACTS.md: "Optuna study" in, "Per-problem matrix" out).

Pure: reads only the study object's trials and user attributes, never run folders. Every point pairs with its
own model's base run by fingerprint (same report-slice ids in the same order); a mismatch is refused with one
line naming both fingerprints, because pairing different problems would make every McNemar test meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from mathgpt.example import DataError
from mathgpt.record import (
    KNOB_COLUMNS,
    MATRIX_COLUMNS,
    PROBLEM_COLUMNS,
    SETTING,
    Point,
    study_baselines,
    study_bases,
    study_points,
)
from mathgpt.stats import wilson_ci

__all__ = ["MATRIX_COLUMNS", "SETTING", "PairingError", "StudyData", "build_matrix", "load_study"]


class PairingError(DataError):
    """A point cannot be paired with its base run (different problems or order)."""


@dataclass
class StudyData:
    """What the report reads from a study: the matrix, one row per point, and the study's settings."""

    name: str
    matrix: pd.DataFrame  # MATRIX_COLUMNS, one row per (point or base, problem)
    points: pd.DataFrame  # one row per point (base rows: trial NA, train_examples 0)
    problems: pd.DataFrame  # eval_problems: id, eval_set, level, subject, steps (in `correct` order)
    delta: float = 0.03
    alpha: float = 0.05
    power: float = 0.8
    states: dict[str, int] = field(default_factory=dict)
    select_fingerprint: str | None = None
    eval_fingerprint: str | None = None
    fail_reasons: dict[int, str] = field(default_factory=dict)
    # Every baseline of every model (the study's zero-shot base "base" and the sweep's ``baselines``), one row
    # each like ``points``' base rows; ``points`` holds the one each model's gains are measured against.
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)
    baseline_rule: str = "base"  # report.baseline: "strongest", "base" or a baseline's name


def _point_row(line: Point) -> dict[str, Any]:
    n, k = len(line.correct), int(sum(line.correct))
    lo, hi = wilson_ci(k, n) if n else (math.nan, math.nan)
    return {
        "point": line.point,
        "train_examples": line.train_examples,
        "epoch": float(line.epoch),
        "optimizer_steps": line.optimizer_steps,
        "train_tokens": line.train_tokens,
        "loss": line.loss,
        "n": n,
        "n_correct": k,
        "accuracy": k / n if n else math.nan,
        "ci_lo": lo,
        "ci_hi": hi,
        "n_answered": line.n_answered,
        "n_truncated": line.n_truncated,
        "select_accuracy": line.select.accuracy if line.select else None,
        "select_n": line.select.n_eval if line.select else None,
        "fingerprint": line.fingerprint,
        "general": line.general,
        "_correct": line.correct,
        "_answered": line.answered,
        "_status": line.status,
        "few_shot": (line.prompt or {}).get("few_shot", 0),
        "max_new_tokens": (line.prompt or {}).get("max_new_tokens"),
    }


ROW_COLUMNS = [
    "point", "train_examples", "epoch", "optimizer_steps", "train_tokens", "loss", "n", "n_correct", "accuracy",
    "ci_lo", "ci_hi", "n_answered", "n_truncated", "select_accuracy", "select_n", "fingerprint", "general",
    "_correct", "_answered", "_status", "few_shot", "max_new_tokens",
]  # fmt: skip


def choose_baseline(rows: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The baseline a model's gains are measured against: by name, or "strongest": the highest selection-slice
    accuracy (the report slice never picks it; without a selection slice, the report slice), ties to the
    higher report accuracy, so a tie never favours fine-tuning."""
    if rule != "strongest":
        named = [r for r in rows if r["baseline"] == rule]
        if not named:
            raise PairingError(f"report.baseline '{rule}' has no run in this study")
        return named[0]

    def strength(r: dict[str, Any]) -> tuple[float, float]:
        sel = r["select_accuracy"]
        return (r["accuracy"] if sel is None else sel, r["accuracy"])

    return max(rows, key=strength)


def _check_pair(model: str, where: str, fp: str | None, base_fp: str | None) -> None:
    if fp is None or base_fp is None or fp != base_fp:
        raise PairingError(
            f"cannot pair {where} with the base of model '{model}': report-slice fingerprint {fp} differs "
            f"from the base's {base_fp} (different problems or order; rerun on the study's slice)"
        )


def _check_checker(where: str, version: str | None, base_version: str | None) -> None:
    """Verdicts from two checker versions are not the same measurement: refuse to pair them."""
    if version and base_version and version != base_version:
        raise PairingError(
            f"cannot pair {where} (checker {version}) with its base (checker {base_version}); "
            "re-score both with `mathgpt regrade` first"
        )


def load_study(study: optuna.Study) -> StudyData:
    """Read a study written per docs/CONTRACTS.md into a StudyData; refuses points that cannot be paired."""
    attrs = study.user_attrs
    problems = pd.DataFrame(attrs.get("eval_problems") or [])
    for col in ("id", "eval_set", "level", "subject", "steps"):
        if col not in problems:
            problems[col] = None
    n_problems = len(problems)
    bases = study_bases(study)
    extra = study_baselines(study)
    report_cfg = (attrs.get("sweep_config") or {}).get("report") or {}
    rule = str(report_cfg.get("baseline", "strongest"))
    rows: list[dict[str, Any]] = []
    baseline_rows: list[dict[str, Any]] = []
    for model, base in bases.items():
        candidates = []
        for label, line in {"base": base, **extra.get(model, {})}.items():
            where = f"baseline '{label}' of {model}"
            if label != "base":
                _check_pair(model, where, line.fingerprint, base.fingerprint)
                _check_checker(where, line.checker_version, base.checker_version)
            candidates.append(
                _point_row(line)
                | {"model": model, "trial": pd.NA, "state": "BASE", "seed": pd.NA, "train_examples": 0}
                | {"trial_dir": line.dir, "baseline": label}
            )
        chosen = choose_baseline(candidates, rule)
        baseline_rows += [r | {"chosen": r is chosen} for r in candidates]
        rows.append(chosen)
    states: dict[str, int] = {}
    fails: dict[int, str] = {}
    stored = study_points(study)
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.user_attrs.get("fail_reason"):
            fails[t.number] = str(t.user_attrs["fail_reason"])
        for line in stored[t.number]:
            if not line.train_examples:
                continue  # a trial's own base point: the study's per-model base is the one zero point
            row = _point_row(line) | line.knobs | {"trial": t.number, "state": t.state.name}
            row["trial_dir"] = t.user_attrs.get("trial_dir")
            if row["model"] not in bases:
                raise PairingError(f"trial {t.number}: no base run for model '{row['model']}' in the study")
            if len(line.correct) != n_problems:
                raise PairingError(
                    f"trial {t.number} point {row['point']}: {len(line.correct)} results for the "
                    f"study's {n_problems} report problems"
                )
            where = f"trial {t.number} point {row['point']}"
            _check_pair(row["model"], where, line.fingerprint, bases[row["model"]].fingerprint)
            _check_checker(where, line.checker_version, bases[row["model"]].checker_version)
            rows.append(row)
    columns = ROW_COLUMNS + ["model", "trial", "state", "seed", "mix_fraction", "trial_dir", "baseline"]
    columns += [c for c in KNOB_COLUMNS if c not in columns]
    points = pd.DataFrame(rows).reindex(columns=columns)
    points["trial"] = points["trial"].astype("Int64")
    points["epoch"] = points["epoch"].astype(float).round(6)
    baselines = pd.DataFrame(baseline_rows).reindex(columns=[*columns, "chosen"])
    # problems.csv holds every baseline's verdicts, the chosen one once, then the fine-tuned points
    matrix = build_matrix(
        pd.concat([baselines, points[points["trial"].notna()]], ignore_index=True), problems
    )
    return StudyData(
        name=study.study_name,
        matrix=matrix,
        points=points.reset_index(drop=True),
        problems=problems,
        delta=float(report_cfg.get("delta", 0.03)),
        alpha=float(report_cfg.get("alpha", 0.05)),
        power=float(report_cfg.get("power", 0.8)),
        states=states,
        select_fingerprint=attrs.get("select_fingerprint"),
        eval_fingerprint=attrs.get("eval_fingerprint"),
        fail_reasons=fails,
        baselines=baselines.reset_index(drop=True),
        baseline_rule=rule,
    )


def build_matrix(points: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """The per-problem matrix: one row per (point with per-problem results, problem), contract columns."""
    frames = []
    n = len(problems)
    for _, p in points.iterrows():
        if p.get("_correct") is None or not isinstance(p["_correct"], list | tuple):
            continue
        answered = p["_answered"] if isinstance(p.get("_answered"), list | tuple) else [np.nan] * n
        status = p["_status"] if isinstance(p.get("_status"), list | tuple) else [None] * n
        block = {col: [p.get(col)] * n for col in MATRIX_COLUMNS if col not in PROBLEM_COLUMNS}
        block |= {
            "eval_set": problems["eval_set"].tolist(),
            "level": problems["level"].tolist(),
            "subject": problems["subject"].tolist(),
            "steps": problems["steps"].tolist(),
            "problem_id": problems["id"].tolist(),
            "correct": [int(c) for c in p["_correct"]],
            "answered": list(answered),
            "status": list(status),
        }
        frames.append(pd.DataFrame(block))
    if not frames:
        return pd.DataFrame(columns=MATRIX_COLUMNS)
    out = pd.concat(frames, ignore_index=True)[MATRIX_COLUMNS]
    out["trial"] = out["trial"].astype("Int64")
    out["seed"] = out["seed"].astype("Int64")
    return out
