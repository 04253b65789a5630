"""The report's words and tables: per-model results, the plain-words answer, trials.csv and answer.csv."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mathgpt.record import KNOB_COLUMNS
from mathgpt.report import analysis as an
from mathgpt.report.load import StudyData
from mathgpt.stats import mcnemar_test


def _pts(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _count(x: float) -> str:
    """An example count from a fit: whole numbers from 10 up, two significant digits below."""
    if not math.isfinite(x):
        return "unbounded"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def _sizes(sizes: list[int]) -> str:
    words = [str(s) for s in sizes]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or x is pd.NA:
        return ""
    return f"{x:g}" if isinstance(x, float | np.floating) else str(x)


def analyse(data: StudyData, n_boot: int = an.N_BOOT) -> dict[str, dict[str, Any]]:
    """Per model and benchmark: size tests, the fixed-sequence answer, the fits and the detection limits."""
    out: dict[str, dict[str, Any]] = {}
    for model in an.models(data):
        out[model] = {}
        for bench, mask in an.benchmarks(data).items():
            tests = an.size_tests(data, model, mask)
            out[model][bench] = {
                "tests": tests,
                "answer": an.fixed_sequence(tests, data.delta),
                "slope": an.slope_fit(data, model, mask),
                "needed": an.examples_needed(data, model, mask, n_boot),
                "limit0": an.detection_limit(data, model, mask),
                "limit_delta": an.detection_limit(data, model, mask, data.delta),
                "n": int(mask.sum()),
            }
    return out


def answer_sentence(data: StudyData, bench: str, r: dict[str, Any]) -> str:
    """The plain-words answer for one model on one benchmark."""
    tests, answer = r["tests"], r["answer"]
    lim = f"{100 * r['limit0']:.1f} points"
    if tests.empty:
        return f"{bench}: no fine-tuned point with per-problem results yet."
    by = tests.set_index("train_examples")
    if answer.size is not None:
        t = by.loc[answer.size]
        head = (
            f"{answer.size} examples ({t['seeds']} seed{'s' if t['seeds'] != 1 else ''}): "
            f"{_pts(t['gain'])} points [{_pts(t['lo'])}, {_pts(t['hi'])}] on {bench} "
            f"(base {_pct(t['base_accuracy'])}, n = {t['n']})"
        )
    else:
        t = by.iloc[-1]
        head = (
            f"no data size shows a gain of at least {100 * data.delta:g} points on {bench}; the largest, "
            f"{int(by.index[-1])} examples ({t['seeds']} seeds), gains {_pts(t['gain'])} points "
            f"[{_pts(t['lo'])}, {_pts(t['hi'])}] (base {_pct(t['base_accuracy'])}, n = {t['n']})"
        )
    below = by[by.index < answer.size] if answer.size is not None else by.iloc[:-1]
    null = [int(s) for s, row in below.iterrows() if row["lo"] <= 0]
    weak = [int(s) for s, row in below.iterrows() if 0 < row["lo"] < data.delta]
    parts = [head]
    if (
        abs(t["answered"] - t["base_answered"]) >= 0.05
    ):  # format learning: an answer is now extracted more often
        parts.append(
            f"the answered rate moves {_pct(t['base_answered'])} → {_pct(t['answered'])}, so part of the change "
            "may be format rather than math"
        )
    if null:
        verb = "is" if len(null) == 1 else "are"
        parts.append(
            f"{_sizes(null)} {verb} not distinguishable from the base at this slice's detection limit of {lim}"
        )
    if weak:
        parts.append(
            f"{_sizes(weak)} beat the base but not by {100 * data.delta:g} points with 95% confidence"
        )
    if not null and answer.size is None:
        parts.append(f"this slice's detection limit is {lim}")
    nd = r["needed"]
    if nd is not None and math.isfinite(nd.estimate):
        hi = _count(nd.hi)
        sizes = by.index
        beyond = (
            " (extrapolated beyond the sizes run)" if not sizes.min() <= nd.estimate <= sizes.max() else ""
        )
        parts.append(
            f"the logistic fit puts +{100 * data.delta:g} points at about {_count(nd.estimate)} examples "
            f"[{_count(nd.lo)}, {hi}]{beyond}"
        )
    return "; ".join(parts) + "."


def tables(
    data: StudyData, results: dict[str, dict[str, Any]], effects: pd.DataFrame, general: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    rows = []
    for model, per in results.items():
        for bench, r in per.items():
            for _, t in r["tests"].iterrows():
                seeds = "; ".join(
                    f"seed {s['seed']}: {s['k']}/{s['n']}, +{s['fixed']}/-{s['broken']}, p {_p(s['p'])}{' exact' if s['exact'] else ''}"
                    for s in t["per_seed"]
                )
                rows.append(
                    {
                        "model": model,
                        "benchmark": bench,
                        "examples": t["train_examples"],
                        "seeds": t["seeds"],
                        "n": t["n"],
                        "base": f"{t['base_k']}/{t['n']}",
                        "accuracy": _pct(t["accuracy"]),
                        "answered (base → tuned)": f"{_pct(t['base_answered'])} → {_pct(t['answered'])}",
                        "gain (pts)": _pts(t["gain"]),
                        "95% CI": f"[{_pts(t['lo'])}, {_pts(t['hi'])}]",
                        f"p (gain ≤ {100 * data.delta:g})": _p(t["p_above_delta"]),
                        "tested": "yes" if t["train_examples"] in r["answer"].tested else "no",
                        "per seed: k/n, fixed/broken, McNemar p": seeds,
                    }
                )
    fits = []
    for model, per in results.items():
        for bench, r in per.items():
            s, nd = r["slope"], r["needed"]
            if s is None:
                continue
            fits.append(
                {
                    "model": model,
                    "benchmark": bench,
                    "sizes": s.n_sizes,
                    "points per doubling": f"{_pts(s.slope)} [{_pts(s.lo)}, {_pts(s.hi)}]",
                    "R² (size means)": "n/a (2 sizes)"
                    if s.n_sizes < 3
                    else (f"{s.r2:.3f}" if math.isfinite(s.r2) else "undefined"),
                    f"examples for +{100 * data.delta:g}": ""
                    if nd is None or not math.isfinite(nd.estimate)
                    else f"{_count(nd.estimate)} [{_count(nd.lo)}, {_count(nd.hi)}]",
                    "detection limit (pts)": f"{100 * r['limit0']:.1f} ({100 * r['limit_delta']:.1f} to show +{100 * data.delta:g})",
                }
            )
    out = {"answer": pd.DataFrame(rows), "fits": pd.DataFrame(fits)}
    if not effects.empty:
        out["knobs"] = pd.DataFrame(
            {
                "model": effects["model"],
                "examples": effects["train_examples"],
                "knob": effects["knob"],
                "comparison": [
                    f"{v:g} vs {r:g}" for v, r in zip(effects["value"], effects["reference"], strict=True)
                ],
                "pairs": effects["pairs"],
                "difference (pts)": effects["diff"].map(_pts),
                "95% CI": [
                    f"[{_pts(lo)}, {_pts(hi)}]" for lo, hi in zip(effects["lo"], effects["hi"], strict=True)
                ],
            }
        )
    if not general.empty:
        out["general"] = pd.DataFrame(
            {
                "model": general["model"],
                "trial": general["trial"],
                "examples": general["train_examples"],
                "mix": general["mix_fraction"].map(_num),
                "math gain (pts)": [
                    f"{_pts(m)} [{_pts(lo)}, {_pts(hi)}]"
                    for m, lo, hi in zip(
                        general["math_gain"], general["math_lo"], general["math_hi"], strict=True
                    )
                ],
                "general change (pts)": [
                    f"{_pts(m)} [{_pts(lo)}, {_pts(hi)}]"
                    for m, lo, hi in zip(
                        general["general_change"], general["general_lo"], general["general_hi"], strict=True
                    )
                ],
            }
        )
    return out


def points_table(data: StudyData) -> pd.DataFrame:
    """trials.csv: one row per point (base rows first) with its counts, rates, interval and McNemar test."""
    p = data.points
    chosen = an.choose(data)
    chosen_keys = {
        (m, s, k)
        for m, s, k, c in zip(
            chosen["model"], chosen["train_examples"], chosen["setting"], chosen["chosen"], strict=True
        )
        if c
    }
    rows = []
    for _, r in p.iterrows():
        row = {
            c: r.get(c)
            for c in [
                "model",
                "trial",
                "state",
                "seed",
                "point",
                "train_examples",
                "epoch",
                *(c for c in KNOB_COLUMNS if c not in ("model", "seed")),
                "optimizer_steps",
                "train_tokens",
                "loss",
                "n",
                "n_correct",
                "accuracy",
                "ci_lo",
                "ci_hi",
                "n_answered",
                "n_truncated",
                "select_accuracy",
                "select_n",
                "fingerprint",
            ]
        }
        if pd.notna(r["trial"]) and isinstance(r["_correct"], list | tuple):
            row["chosen"] = (r["model"], int(r["train_examples"]), an.setting_key(r)) in chosen_keys
            mc = mcnemar_test(an.base_vector(data, r["model"]), r["_correct"])
            row |= {
                "fixed": mc.tuned_only,
                "broken": mc.base_only,
                "mcnemar_p": mc.pvalue,
                "mcnemar_exact": mc.exact,
            }
        for name, res in (r.get("general") or {}).items():  # general-ability sets: accuracy per point
            row[f"general_{name}"] = res.get("accuracy")
            row[f"general_{name}_norm"] = res.get("accuracy_norm")
        rows.append(row)
    return pd.DataFrame(rows)


def answer_csv(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """answer.csv: the size tests as numbers (fractions, not points), one row per model, benchmark, size."""
    rows = []
    for model, per in results.items():
        for bench, r in per.items():
            for _, t in r["tests"].iterrows():
                rows.append(
                    {"model": model, "benchmark": bench}
                    | {
                        k: t[k]
                        for k in [
                            "train_examples",
                            "seeds",
                            "n_points",
                            "n",
                            "base_k",
                            "base_accuracy",
                            "accuracy",
                            "gain",
                            "lo",
                            "hi",
                            "p_above_delta",
                            "base_answered",
                            "answered",
                        ]
                    }
                    | {
                        "tested": t["train_examples"] in r["answer"].tested,
                        "answer": t["train_examples"] == r["answer"].size,
                        "trials": " ".join(str(s["trial"]) for s in t["per_seed"]),
                    }
                )
    return pd.DataFrame(rows)
