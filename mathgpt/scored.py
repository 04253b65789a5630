"""Scored slices -> one epochs.jsonl line, predictions rows and metrics summaries (the writer side of a point)."""

from __future__ import annotations

from dataclasses import dataclass

from mathgpt.evaluate import EvalResult, verdict_counts
from mathgpt.stats import wilson_ci

# docs/CONTRACTS.md "Per-problem matrix": one row per (point or base, problem), in problems.csv, the report
# and the study's W&B table.
MATRIX_COLUMNS = [
    "model",
    "trial",
    "seed",
    "point",
    "train_examples",
    "epoch",
    "lora_r",
    "learning_rate",
    "batch_size",
    "mix_fraction",
    "eval_set",
    "level",
    "subject",
    "steps",
    "problem_id",
    "correct",
    "answered",
    "status",
]


def trial_points(trial) -> list[dict]:
    """A study trial's point lines (docs/CONTRACTS.md ``points``); studies before the sweep split wrote
    them as ``epochs``."""
    return trial.user_attrs.get("points") or trial.user_attrs.get("epochs") or []


def slice_summary(records: list[dict]) -> dict:
    """Accuracy with its interval and the verdict counts (``evaluate.verdict_counts``) of one slice's records."""
    n = len(records)
    k = sum(int(r["correct"]) for r in records)
    counts = {key: v for key, v in verdict_counts(records).items() if key != "checker_version"}
    return {
        "accuracy": k / n if n else 0.0,
        "ci95": list(wilson_ci(k, n)),
        "n_eval": n,
        "n_correct": k,
        **counts,
        "n_truncated": sum(int(bool(r.get("truncated"))) for r in records),
    }


def by_set(records: list[dict]) -> dict[str, dict]:
    sets: dict[str, list[dict]] = {}
    for r in records:
        sets.setdefault(r["eval_set"], []).append(r)
    return {
        name: {
            "accuracy": sum(int(r["correct"]) for r in rs) / len(rs),
            "n": len(rs),
            "n_correct": sum(int(r["correct"]) for r in rs),
            "n_answered": sum(int(r["answered"]) for r in rs),
        }
        for name, rs in sets.items()
    }


@dataclass
class Scored:
    """One evaluation point's results on the report and selection slices (one generate call for both)."""

    report: list[dict]
    select: list[dict]
    result: EvalResult  # the whole call: wall time, tokens/s, gen stats, checker version


PER_PROBLEM = ("ids", "correct", "answered", "status")


def point_line(
    point: int,
    scored: Scored,
    info: dict,
    *,
    n_train: int,
    fingerprints: dict,
    train_wall_s: float,
    general: dict | None = None,
) -> dict:
    """One epochs.jsonl line (docs/CONTRACTS.md)."""
    rep = scored.report
    sel = None
    if scored.select:
        s = slice_summary(scored.select)
        sel = {k: s[k] for k in ("accuracy", "ci95", "n_eval", "n_correct")}
        sel["fingerprint"] = fingerprints["select"]
    return {
        "point": point,
        "epoch": info["train_examples"] / n_train if n_train else 0.0,
        "train_examples": info["train_examples"],
        "optimizer_steps": info["optimizer_steps"],
        "train_tokens": info["train_tokens"],
        "train_wall_s": round(train_wall_s, 3),
        "eval_wall_s": round(scored.result.wall_s, 3),
        "loss": info["loss"],
        **slice_summary(rep),
        "ids": [r["id"] for r in rep],
        "correct": [int(r["correct"]) for r in rep],
        "answered": [int(r["answered"]) for r in rep],
        "status": [r["status"] for r in rep],
        "fingerprint": fingerprints["eval"],
        "by_set": by_set(rep),
        "select": sel,
        "general": general or {},  # eval.general: {set: {accuracy, accuracy_norm, n, ids, ...}}
        "checker_version": scored.result.checker_version,
        "gen": getattr(scored.result, "gen", None),
    }


def prediction_rows(line: dict, scored: Scored, model_name: str, steps: dict[str, int | None]) -> list[dict]:
    base = {"model": model_name, "point": line["point"], "epoch": line["epoch"]}
    base["train_examples"] = line["train_examples"]
    out = []
    for slice_name, records in (("report", scored.report), ("select", scored.select)):
        for r in records:
            row = {**base, "slice": slice_name, **r}
            row.setdefault("steps", steps.get(r["id"]))
            out.append(row)
    return out


def sum_gen(lines: list[dict]) -> dict | None:
    """Generation stats summed over points; rates recomputed from the summed seconds."""
    gens = [ln["gen"] for ln in lines if ln.get("gen")]
    if not gens:
        return None
    useful = sum(g.get("useful_tokens", 0) for g in gens)
    slots = sum(g.get("slot_tokens", 0) for g in gens)
    secs = sum(g["useful_tokens"] / g["useful_tokens_per_s"] for g in gens if g.get("useful_tokens_per_s"))
    return {
        "useful_tokens": useful,
        "slot_tokens": slots,
        "useful_fraction": useful / slots if slots else None,
        "useful_tokens_per_s": useful / secs if secs else None,
        "slot_tokens_per_s": slots / secs if secs else None,
    }


def without_lists(line: dict) -> dict:
    out = {k: v for k, v in line.items() if k not in PER_PROBLEM}
    out["general"] = {
        name: {k: v for k, v in g.items() if k not in ("ids", "correct", "correct_norm")}
        for name, g in line.get("general", {}).items()
    }
    return out


def summary(line: dict | None) -> dict | None:
    if line is None:
        return None
    keys = ("accuracy", "ci95", "n_correct", "strict_accuracy", "n_answered", "n_truncated", "n_no_answer")
    return {k: line[k] for k in (*keys, "n_ungradable")}
