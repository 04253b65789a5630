"""The report's words and tables: per-model results, the plain-words answer, trials.csv and answer.csv."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mathgpt.machine import describe, identity
from mathgpt.record import KNOB_COLUMNS
from mathgpt.report import analysis as an
from mathgpt.report.load import StudyData
from mathgpt.stats import MIN_SEEDS_RETRAIN, mcnemar_test, newcombe_gain


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


def needed_text(nd: an.Needed) -> str:
    """Examples needed for +delta, censored outside the sizes run: a logistic curve says nothing reliable
    about data sizes nobody trained on, so "< 32" or "> 256" replaces an extrapolated number or interval end.

    "< 32" alone needs the whole interval below the smallest size ("> 256": above the largest); an estimate
    outside with an interval reaching into the sizes keeps its interval ("< 32 [< 32, 76]"). The point
    estimate alone made "< 32" / "> 128" false in 21% of simulated demo-shaped slices whose truth was 60
    examples; the interval's statement held in 94% (bench/interval_coverage.py --needed).
    """
    if not math.isfinite(nd.estimate):
        return ""
    if nd.hi < nd.smallest:
        return f"< {nd.smallest}"
    if nd.lo > nd.largest:
        return f"> {nd.largest}"

    def end(x: float) -> str:
        if x < nd.smallest:
            return f"< {nd.smallest}"
        return f"> {nd.largest}" if x > nd.largest else _count(x)

    return f"{end(nd.estimate)} [{end(nd.lo)}, {end(nd.hi)}]"


def _power(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


COVERS = {"newcombe": "models trained", "retraining": "retraining (seeds random)"}


def _sizes(sizes: list[int]) -> str:
    words = [str(s) for s in sizes]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or x is pd.NA:
        return ""
    return f"{x:g}" if isinstance(x, float | np.floating) else str(x)


def analyse(data: StudyData) -> dict[str, dict[str, Any]]:
    """Per model and benchmark: size tests, the fixed-sequence answer, the fits and the detection limits."""
    out: dict[str, dict[str, Any]] = {}
    for model in an.models(data):
        out[model] = {}
        for bench, mask in an.benchmarks(data).items():
            tests = an.size_tests(data, model, mask)
            answer = an.fixed_sequence(tests, data.delta)
            at = (
                answer.size
                if answer.size is not None
                else (int(tests["train_examples"].max()) if len(tests) else None)
            )
            out[model][bench] = {
                "tests": tests,
                "baselines": an.baseline_gains(data, model, mask),
                "answered": None if at is None else an.answered_gain(data, model, mask, at),
                "answer": answer,
                "beats": an.fixed_sequence(tests, 0.0),
                "slope": an.slope_fit(data, model, mask),
                "needed": an.examples_needed(data, model, mask),
                "limit0": an.detection_limit(data, model, mask),
                "limit_delta": an.detection_limit(data, model, mask, data.delta),
                "n": int(mask.sum()),
            }
    return out


def answer_sentence(data: StudyData, bench: str, r: dict[str, Any]) -> str:
    """The plain-words answer for one model on one benchmark; every claim rests on a fixed-sequence test."""
    tests, answer, beats = r["tests"], r["answer"], r["beats"]
    if tests.empty:
        return f"{bench}: no fine-tuned point with per-problem results yet."
    by = tests.set_index("train_examples")
    b = r.get("baselines")
    chosen = b.loc[b["chosen"], "baseline"].iloc[0] if b is not None and len(b) else "base"
    who = "base" if chosen == "base" else f"baseline '{chosen}'"
    noun = "the base" if chosen == "base" else "the baseline"
    d = f"{100 * data.delta:g}"
    if answer.size is not None:
        t = by.loc[answer.size]
        head = (
            f"{answer.size} examples ({t['seeds']} seed{'s' if t['seeds'] != 1 else ''}): "
            f"{_pts(t['gain'])} points [{_pts(t['lo'])}, {_pts(t['hi'])}] on {bench} "
            f"({who} {_pct(t['base_accuracy'])}, n = {t['n']})"
        )
    else:
        t = by.iloc[-1]
        head = (
            f"no data size shows a gain of at least {d} points on {bench}; the largest, "
            f"{int(by.index[-1])} examples ({t['seeds']} seeds), gains {_pts(t['gain'])} points "
            f"[{_pts(t['lo'])}, {_pts(t['hi'])}] ({who} {_pct(t['base_accuracy'])}, n = {t['n']}): inconclusive "
            f"at this slice (power {_power(t['power_delta'])} at the observed gain), and "
            + (
                f"it beats {noun} (tested at 0)"
                if int(by.index[-1]) in beats.passed
                else f"not shown better than {noun}"
            )
        )
    parts = [head]
    if t["interval"] == "newcombe":
        parts.append(
            f"with {t['n_points']} training{'s' if t['n_points'] != 1 else ''} per size the interval covers only "
            f"the models trained, not retraining (that needs {MIN_SEEDS_RETRAIN} seeds)"
        )
    if (
        abs(t["answered"] - t["base_answered"]) >= 0.05
    ):  # format learning: an answer is now extracted more often
        parts.append(
            f"the answered rate moves {_pct(t['base_answered'])} → {_pct(t['answered'])}, so part of the change "
            "may be format rather than math"
        )
    below = by[by.index < answer.size] if answer.size is not None else by.iloc[:-1]
    shown = [int(s) for s in below.index if s in beats.passed]
    unshown = [int(s) for s in below.index if s not in beats.passed]
    if shown:
        verb = "beats" if len(shown) == 1 else "beat"
        parts.append(
            f"{_sizes(shown)} {verb} {noun} (tested at 0) but +{d} points is inconclusive at this slice "
            f"(power {_sizes([_power(by.loc[s, 'power_delta']) for s in shown])} at the observed gain"
            f"{'s' if len(shown) > 1 else ''})"
        )
    if unshown:
        gains = _sizes([_pts(by.loc[s, "gain"]) for s in unshown])
        parts.append(
            f"{_sizes(unshown)}: inconclusive at this slice, not shown better than {noun} (observed "
            f"{gains} points; this slice's detection limit is {100 * r['limit0']:.1f} points)"
        )
    nd = r["needed"]
    if nd is not None and math.isfinite(nd.estimate):
        text = needed_text(nd)
        text = text.replace(" [", " examples [", 1) if "[" in text else f"{text} examples"
        if nd.estimate < nd.smallest:
            where = f"below the smallest size run ({text})"
        elif nd.estimate > nd.largest:
            where = f"beyond the largest size run ({text})"
        else:
            where = f"at about {text}"
        parts.append(f"the logistic fit puts +{d} points {where}")
    return "; ".join(parts) + "."


# A baseline whose cap cuts off more than this share of its answers is scored partly on format (issue 17).
MAX_BASELINE_TRUNCATED = 0.05


def _prompt(few_shot: Any, cap: Any) -> str:
    k = int(few_shot or 0)
    shots = f"{k}-shot" if k else "zero-shot"
    return shots + (f", cap {int(cap)}" if cap is not None and not pd.isna(cap) else "")


def baseline_sentence(data: StudyData, r: dict[str, Any]) -> str:
    """Which baseline the gains are measured against, how it was chosen, and the others (first screen)."""
    b = r["baselines"]
    if b.empty:
        return ""
    first = b[b["train_examples"] == b["train_examples"].max()]
    chosen = first[first["chosen"]].iloc[0]
    how = {
        "strongest": "the strongest baseline by selection-slice accuracy",
        "base": "the zero-shot base (report.baseline: base)",
    }.get(data.baseline_rule, "the baseline named in report.baseline")

    def desc(row: pd.Series) -> str:
        return (
            f"'{row['baseline']}' ({_prompt(row['few_shot'], row['max_new_tokens'])}: "
            f"{_pct(row['base_accuracy'])}, {_pct(row['base_truncated'])} truncated)"
        )

    text = f"Gains are measured against {how}, {desc(chosen)}"
    others = [desc(row) for _, row in first[~first["chosen"]].iterrows()]
    if others:
        gains = "; ".join(
            f"{desc(row)} {_pts(row['gain'])} [{_pts(row['lo'])}, {_pts(row['hi'])}]"
            for _, row in first[~first["chosen"]].iterrows()
        )
        text += f"; against the other{'s' if len(others) > 1 else ''} at {int(chosen['train_examples'])} examples: {gains}"
    if chosen["base_truncated"] > MAX_BASELINE_TRUNCATED:
        text += (
            f". Warning: its cap truncates {_pct(chosen['base_truncated'])} of its answers (over "
            f"{100 * MAX_BASELINE_TRUNCATED:g}%), so it is partly scored on format: raise its max_new_tokens"
        )
    return text + "."


def answered_sentence(bench: str, r: dict[str, Any]) -> str:
    """The format-neutral diagnostic: the gain on only the problems the baseline answered."""
    a = r["answered"]
    if a is None:
        return ""
    if a.gain is None:
        return f"Format-neutral check on {bench}: the baseline answered none of the {a.of} problems."
    g = a.gain
    return (
        f"Format-neutral check on {bench} (a diagnostic, not the answer): on the {a.n} of {a.of} problems the "
        f"baseline answered, {a.size} examples gain {_pts(g.mean)} points [{_pts(g.lo)}, {_pts(g.hi)}]."
    )


def _verdict(verdict: str, power: float) -> str:
    """A failed bound is inconclusive, not a shortfall: say how likely this slice was to clear it."""
    return f"fail: inconclusive (power {_power(power)})" if verdict == "fail" else verdict


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
                        "interval covers": COVERS[t["interval"]],
                        f"gain ≥ {100 * data.delta:g} (fixed sequence)": _verdict(
                            r["answer"].verdict(t["train_examples"]), t["power_delta"]
                        ),
                        f"p (gain ≤ {100 * data.delta:g})": _p(t["p_above_delta"]),
                        "gain > 0 (second sequence)": r["beats"].verdict(t["train_examples"]),
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
                    f"examples for +{100 * data.delta:g}": "" if nd is None else needed_text(nd),
                    "detection limit (pts)": f"{100 * r['limit0']:.1f} ({100 * r['limit_delta']:.1f} to show +{100 * data.delta:g})",
                }
            )
    against = []
    for model, per in results.items():
        for bench, r in per.items():
            for _, b in r["baselines"].iterrows():
                against.append(
                    {
                        "model": model,
                        "benchmark": bench,
                        "examples": b["train_examples"],
                        "baseline": b["baseline"] + (" (chosen)" if b["chosen"] else ""),
                        "prompt": _prompt(b["few_shot"], b["max_new_tokens"]),
                        "baseline accuracy": f"{b['base_k']}/{b['n']} = {_pct(b['base_accuracy'])}",
                        "selection slice": _pct(b["select_accuracy"])
                        if b["select_accuracy"] is not None and not pd.isna(b["select_accuracy"])
                        else "none",
                        "truncated": _pct(b["base_truncated"]),
                        "answered": _pct(b["base_answered"]),
                        "gain (pts)": _pts(b["gain"]),
                        "95% CI": f"[{_pts(b['lo'])}, {_pts(b['hi'])}]",
                        "interval covers": COVERS[b["interval"]],
                        "p (gain ≤ 0)": _p(b["p_above_zero"]),
                    }
                )
    out = {"answer": pd.DataFrame(rows), "fits": pd.DataFrame(fits), "baselines": pd.DataFrame(against)}
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
        level = round(100 * (1 - 2 * data.alpha))
        out["general"] = pd.DataFrame(
            {
                "model": general["model"],
                "trial": general["trial"],
                "examples": general["train_examples"],
                "mix": general["mix_fraction"].map(_num),
                "math gain (pts, 95% CI)": [
                    f"{_pts(m)} [{_pts(lo)}, {_pts(hi)}]"
                    for m, lo, hi in zip(
                        general["math_gain"], general["math_lo"], general["math_hi"], strict=True
                    )
                ],
                f"general change (pts, {level}% CI)": [
                    f"{_pts(m)} [{_pts(lo)}, {_pts(hi)}]"
                    for m, lo, hi in zip(
                        general["general_change"], general["general_lo"], general["general_hi"], strict=True
                    )
                ],
                "items up/down": [
                    f"+{u:g}/-{d:g} of {n}"
                    for u, d, n in zip(
                        general["general_up"], general["general_down"], general["general_n"], strict=True
                    )
                ],
                "general ability": [
                    general_words(e, m, p)
                    for e, m, p in zip(
                        general["equivalent"], general["margin"], general["tost_p"], strict=True
                    )
                ],
            }
        )
    return out


def general_words(equivalent: bool, margin: float, p: float) -> str:
    """ "No forgetting" only where the TOST shows the change within the margin; otherwise inconclusive."""
    m = f"{100 * margin:g}"
    if equivalent:
        return f"no forgetting: within ±{m} points (TOST p {_p(p)})"
    return f"inconclusive: not shown within ±{m} points (TOST p {_p(p)})"


def breakdown_table(breakdown: pd.DataFrame) -> pd.DataFrame:
    """The subset table: Wilson accuracies, Newcombe (or retraining) gains, every row exploratory."""
    return pd.DataFrame(
        {
            "model": breakdown["model"],
            "subset (exploratory)": breakdown["group"],
            "examples": breakdown["train_examples"],
            "n": breakdown["n"],
            "accuracy": [
                f"{_pct(a)} [{_pct(lo)}, {_pct(hi)}]"
                for a, lo, hi in zip(breakdown["accuracy"], breakdown["lo"], breakdown["hi"], strict=True)
            ],
            "gain (pts)": [
                f"{_pts(g)} [{_pts(lo)}, {_pts(hi)}]" if e else ""
                for g, lo, hi, e in zip(
                    breakdown["gain"],
                    breakdown["gain_lo"],
                    breakdown["gain_hi"],
                    breakdown["train_examples"],
                    strict=True,
                )
            ],
        }
    )


def machine_notes(machines: list[dict | None]) -> tuple[list[str], str | None]:
    """The machines a study's points ran on (one line each, with its point count) and a warning when they
    differ in anything that changes the numbers (machine.IDENTITY) or some points did not record one."""
    seen: dict[tuple, list] = {}
    missing = 0
    for m in machines:
        if not m:
            missing += 1
            continue
        seen.setdefault(identity(m), [m, 0])[1] += 1
    lines = [f"{describe(m)}: {k} point{'s' if k != 1 else ''}" for m, k in seen.values()]
    warn = None
    if len(seen) > 1:
        warn = (
            f"this study mixes {len(seen)} machines: training is not bit-reproducible across them, so points "
            "from different machines differ by more than their seeds"
        )
    elif missing and seen:
        warn = f"{missing} point(s) did not record their machine, so the study may mix machines"
    return lines, warn


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
            base = an.base_vector(data, r["model"])
            mc = mcnemar_test(base, r["_correct"])
            gain = newcombe_gain(base, r["_correct"], data.alpha)
            row |= {
                "fixed": mc.tuned_only,
                "broken": mc.base_only,
                "mcnemar_p": mc.pvalue,
                "mcnemar_exact": mc.exact,
                "gain": gain.mean,
                "gain_lo": gain.lo,
                "gain_hi": gain.hi,
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
            b = r["baselines"]
            against = b.loc[b["chosen"], "baseline"].iloc[0] if len(b) else "base"
            for _, t in r["tests"].iterrows():
                rows.append(
                    {"model": model, "benchmark": bench, "baseline": against}
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
                            "interval",
                            "fixed",
                            "broken",
                            "p_above_delta",
                            "power_delta",
                            "p_above_zero",
                            "base_answered",
                            "answered",
                        ]
                    }
                    | {
                        "tested": t["train_examples"] in r["answer"].tested,
                        "passed": t["train_examples"] in r["answer"].passed,
                        "answer": t["train_examples"] == r["answer"].size,
                        "tested_zero": t["train_examples"] in r["beats"].tested,
                        "beats_base": t["train_examples"] in r["beats"].passed,
                        "trials": " ".join(str(s["trial"]) for s in t["per_seed"]),
                    }
                )
    return pd.DataFrame(rows)
