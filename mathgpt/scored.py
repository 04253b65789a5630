"""Scored slices -> one epochs.jsonl line, predictions rows and metrics summaries (the writer side of a point)."""

from __future__ import annotations

from dataclasses import dataclass

from mathgpt.evaluate import EvalResult, verdict_counts
from mathgpt.record import Point, SelectSlice
from mathgpt.stats import wilson_ci


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


def point_line(
    point: int,
    scored: Scored,
    info: dict,
    *,
    n_train: int,
    fingerprints: dict,
    train_wall_s: float,
    knobs: dict,
    machine: dict | None = None,
    general: dict | None = None,
    prompt: dict | None = None,
) -> Point:
    """One epochs.jsonl line (docs/CONTRACTS.md) as a record; ``knobs`` from ``record.knob_values``."""
    rep = scored.report
    sel = None
    if scored.select:
        s = slice_summary(scored.select)
        sel = SelectSlice(
            **{k: s[k] for k in ("accuracy", "ci95", "n_eval", "n_correct")},
            fingerprint=fingerprints["select"],
            ids=[r["id"] for r in scored.select],
            correct=[int(r["correct"]) for r in scored.select],
        )
    return Point(
        point=point,
        epoch=info["train_examples"] / n_train if n_train else 0.0,
        train_examples=info["train_examples"],
        optimizer_steps=info["optimizer_steps"],
        train_tokens=info["train_tokens"],
        train_wall_s=round(train_wall_s, 3),
        eval_wall_s=round(scored.result.wall_s, 3),
        loss=info["loss"],
        **slice_summary(rep),
        ids=[r["id"] for r in rep],
        correct=[int(r["correct"]) for r in rep],
        answered=[int(r["answered"]) for r in rep],
        status=[r["status"] for r in rep],
        fingerprint=fingerprints["eval"],
        by_set=by_set(rep),
        select=sel,
        general=general or {},
        checker_version=scored.result.checker_version,
        gen=scored.result.gen,
        knobs=knobs,
        machine=machine,
        prompt=prompt,
    )


def prediction_rows(line: Point, scored: Scored, model_name: str, steps: dict[str, int | None]) -> list[dict]:
    base = {
        "model": model_name,
        "point": line.point,
        "epoch": line.epoch,
        "train_examples": line.train_examples,
    }
    out = []
    for slice_name, records in (("report", scored.report), ("select", scored.select)):
        for r in records:
            row = {**base, "slice": slice_name, **r}
            row.setdefault("steps", steps.get(r["id"]))
            out.append(row)
    return out


def sum_gen(lines: list[Point]) -> dict | None:
    """Generation stats summed over points; rates recomputed from the summed seconds."""
    gens = [ln.gen for ln in lines if ln.gen]
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
        "rows": max(g.get("rows", 0) for g in gens),
    }


def summary(line: Point | None) -> dict | None:
    if line is None:
        return None
    keys = ("accuracy", "ci95", "n_correct", "strict_accuracy", "n_answered", "n_truncated", "n_no_answer")
    return {k: getattr(line, k) for k in (*keys, "n_ungradable")}
