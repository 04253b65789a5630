"""Figures of the report (matplotlib's object API: no pyplot, no global backend). Every mark has an interval.

Each function takes the analysis results and returns PNG bytes, or None when there is nothing to draw (a
panel for a knob that does not vary is dropped, not drawn empty).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from mathgpt.report import analysis as an
from mathgpt.report.load import StudyData
from mathgpt.stats import accuracy_ci, wilson_ci

COLORS = colormaps["tab10"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _bars(below: Any, above: Any) -> np.ndarray:
    """Error bar lengths; rounding can make an interval end cross its mean by 1e-16, which matplotlib refuses."""
    return np.maximum(np.vstack([np.asarray(below, float), np.asarray(above, float)]), 0.0)


def _log2_x(ax: Any) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _offsets(settings: list[tuple]) -> dict[tuple, float]:
    """Multiplicative x offsets so points of different settings (lr, rank, ...) at one size do not overlap."""
    uniq = sorted(set(settings), key=str)
    span = 0.12 * (len(uniq) - 1)
    return {s: 2 ** (-span / 2 + 0.12 * i) for i, s in enumerate(uniq)}


def scaling(data: StudyData, results: dict[str, dict[str, Any]]) -> bytes | None:
    """One panel per benchmark; per model: every point (faint, offset by setting, Wilson bars), the chosen
    arm's mean with its CI, the seed band (min to max over seeds), the fit band, and stars where the fixed
    sequence rejected H0: gain <= delta."""
    benches = an.benchmarks(data)
    if not any(len(r["tests"]) for m in results.values() for r in m.values()):
        return None
    fig = Figure(figsize=(5.2 * len(benches), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(benches)))
    tuned = an.tuned_points(data)
    for ax, (bench, mask) in zip(axes, benches.items(), strict=True):
        for i, model in enumerate(an.models(data)):
            color = COLORS(i)
            res = results[model][bench]
            base = an.base_vector(data, model)[mask]
            b = accuracy_ci(base)
            ax.axhline(100 * b.mean, color=color, ls="--", lw=1, label=f"{model} base {100 * b.mean:.1f}%")
            ax.axhspan(100 * b.lo, 100 * b.hi, color=color, alpha=0.08, lw=0)
            pts = tuned[tuned["model"] == model]
            off = _offsets(list(pts["setting"]))
            for _, p in pts.iterrows():
                v = np.asarray(p["_correct"], float)[mask]
                ci = accuracy_ci(v)
                x = p["train_examples"] * off[p["setting"]]
                ax.errorbar(
                    x,
                    100 * ci.mean,
                    yerr=_bars([100 * (ci.mean - ci.lo)], [100 * (ci.hi - ci.mean)]),
                    fmt=".",
                    color=color,
                    alpha=0.3,
                    ms=4,
                    lw=0.8,
                )
            tests = res["tests"]
            if tests.empty:
                continue
            chosen = an.arms(data, model)
            sizes = tests["train_examples"].to_numpy(float)
            accs, los, his, smin, smax = [], [], [], [], []
            for s in tests["train_examples"]:
                mat = an.arm_matrix(chosen[int(s)])[:, mask]
                ci = accuracy_ci(mat.mean(axis=0), runs=mat.shape[0])
                accs.append(ci.mean)
                los.append(ci.mean - ci.lo)
                his.append(ci.hi - ci.mean)
                smin.append(mat.mean(axis=1).min())
                smax.append(mat.mean(axis=1).max())
            accs = np.array(accs)
            ax.errorbar(
                sizes,
                100 * accs,
                yerr=_bars(100 * np.asarray(los), 100 * np.asarray(his)),
                fmt="o-",
                color=color,
                lw=2,
                capsize=3,
                label=f"{model} chosen setting (mean over seeds, 95% CI)",
            )
            ax.fill_between(
                sizes,
                100 * np.array(smin),
                100 * np.array(smax),
                color=color,
                alpha=0.18,
                lw=0,
                label="seed range",
            )
            if res["slope"] is not None:
                xs = np.geomspace(sizes.min(), sizes.max(), 40)
                _mid, lo, hi = res["slope"].band(xs)
                ax.fill_between(
                    xs,
                    100 * lo,
                    100 * hi,
                    color=color,
                    alpha=0.1,
                    hatch="//",
                    lw=0,
                    label="log-linear fit, 95% band",
                )
            answer = res["answer"]
            if answer.size is not None:
                hit = tests[tests["train_examples"] >= answer.size]
                ax.plot(
                    hit["train_examples"],
                    100 * hit["accuracy"],
                    "*",
                    color="crimson",
                    ms=14,
                    label=f"gain ≥ {100 * data.delta:g} pts (fixed sequence)",
                )
        _log2_x(ax)
        ax.set_title(bench)
        ax.set_xlabel("training examples seen (log2)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    fig.legend(
        uniq.values(), uniq.keys(), loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.12)
    )
    return _png(fig)


def _rate_panel(ax: Any, data: StudyData, col: str, label: str) -> None:
    pts = data.points[data.points[col].notna() & data.points["n"].gt(0)]
    for i, model in enumerate(an.models(data)):
        mp = pts[pts["model"] == model]
        base = mp[mp["trial"].isna()]
        if len(base):
            r = float(base[col].iloc[0]) / float(base["n"].iloc[0])
            ax.axhline(100 * r, color=COLORS(i), ls="--", lw=1)
        tuned = mp[mp["trial"].notna()]
        if tuned.empty:
            continue
        g = tuned.groupby("train_examples").agg(k=(col, "sum"), n=("n", "sum"))
        ci = np.array([wilson_ci(int(k), int(n)) for k, n in zip(g["k"], g["n"], strict=True)])
        r = g["k"] / g["n"]
        ax.errorbar(
            g.index,
            100 * r,
            yerr=_bars(100 * (r - ci[:, 0]), 100 * (ci[:, 1] - r)),
            fmt="o-",
            color=COLORS(i),
            capsize=3,
            label=model,
        )
    _log2_x(ax)
    ax.set_title(label)
    ax.set_xlabel("training examples seen (log2)")
    ax.set_ylabel("% of report problems")
    ax.grid(alpha=0.3)


def rates(data: StudyData) -> bytes | None:
    """Accuracy next to the answered and truncated rates: learning to answer vs learning math."""
    tuned = data.points[data.points["trial"].notna()]
    if tuned.empty:
        return None
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    _rate_panel(axes[0], data, "n_correct", "accuracy (all points pooled per size)")
    _rate_panel(axes[1], data, "n_answered", "answered (an answer was extracted)")
    _rate_panel(axes[2], data, "n_truncated", "truncated (hit the token limit)")
    axes[0].legend(fontsize=7)
    return _png(fig)


def learning(data: StudyData) -> bytes | None:
    """Per-trial learning curves: accuracy (Wilson bars) and mean training loss at each evaluated point."""
    tuned = data.points[data.points["trial"].notna() & data.points["accuracy"].notna()]
    if tuned.empty:
        return None
    fig = Figure(figsize=(12, 4))
    ax1, ax2 = fig.subplots(1, 2)
    trials = sorted(tuned["trial"].unique())
    cmap = colormaps["viridis"]
    for j, t in enumerate(trials):
        g = tuned[tuned["trial"] == t].sort_values("train_examples")
        c = cmap(j / max(1, len(trials) - 1))
        ax1.errorbar(
            g["train_examples"],
            100 * g["accuracy"],
            yerr=_bars(100 * (g["accuracy"] - g["ci_lo"]), 100 * (g["ci_hi"] - g["accuracy"])),
            fmt="o-",
            color=c,
            ms=3,
            lw=1,
            alpha=0.7,
            capsize=2,
        )
        loss = pd.to_numeric(g["loss"], errors="coerce")
        ax2.plot(g["train_examples"], loss, "o-", color=c, ms=3, lw=1, alpha=0.7)
    for ax, y in ((ax1, "accuracy (%), 95% Wilson"), (ax2, "mean training loss since previous point")):
        _log2_x(ax)
        ax.set_xlabel("training examples seen (log2)")
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    ax1.set_title("Each trial's evaluated points (one line per trial)")
    ax2.set_title("Training loss (no interval: one run per line)")
    return _png(fig)


def knobs(effects: pd.DataFrame) -> bytes | None:
    """One panel per knob that varies: paired difference (value minus reference) at each size, 95% CI."""
    if effects.empty:
        return None
    names = list(dict.fromkeys(effects["knob"]))
    fig = Figure(figsize=(5 * len(names), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, knob in zip(axes, names, strict=True):
        g = effects[effects["knob"] == knob]
        for i, ((model, value), h) in enumerate(g.groupby(["model", "value"])):
            h = h.sort_values("train_examples")
            x = h["train_examples"] * 2 ** (0.08 * i)
            ax.errorbar(
                x,
                100 * h["diff"],
                yerr=_bars(100 * (h["diff"] - h["lo"]), 100 * (h["hi"] - h["diff"])),
                fmt="o-",
                capsize=3,
                color=COLORS(i),
                label=f"{model}: {value:g} vs {h['reference'].iloc[0]:g}",
            )
        ax.axhline(0, color="grey", lw=1)
        _log2_x(ax)
        ax.set_title(f"{knob}: paired difference, same seed and other knobs")
        ax.set_xlabel("training examples seen (log2)")
        ax.set_ylabel("accuracy difference (points)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


def breakdown(table: pd.DataFrame) -> bytes | None:
    """Per subset (MATH level/subject, synthetic steps): accuracy with 95% CI, one line per data size."""
    if table.empty:
        return None
    families: dict[str, list[str]] = {}
    for group in dict.fromkeys(table["group"]):
        name, tag = group.split(" · ", 1)
        fam = (
            f"{name} by {tag.split(' ')[0]}"
            if tag.split(" ")[0] in {"level", "steps"}
            else f"{name} by subject"
        )
        families.setdefault(fam, []).append(group)
    fig = Figure(figsize=(5.5 * len(families), 4))
    axes = np.atleast_1d(fig.subplots(1, len(families)))
    model = table["model"].iloc[0]
    for ax, (fam, groups) in zip(axes, families.items(), strict=True):
        sub = table[(table["group"].isin(groups)) & (table["model"] == model)]
        sizes = sorted(sub["train_examples"].unique())
        for j, s in enumerate(sizes):
            h = sub[sub["train_examples"] == s].set_index("group").loc[groups]
            x = np.arange(len(groups)) + 0.1 * (j - len(sizes) / 2)
            label = "base" if s == 0 else f"{s} examples"
            ax.errorbar(
                x,
                100 * h["accuracy"],
                yerr=_bars(
                    100 * (h["accuracy"] - h["lo"].clip(lower=0)),
                    100 * (h["hi"].clip(upper=1) - h["accuracy"]),
                ),
                fmt="o-",
                capsize=2,
                color=COLORS(j),
                label=label,
                lw=1,
            )
        ax.set_xticks(np.arange(len(groups)))
        ax.set_xticklabels([g.split(" · ", 1)[1] for g in groups], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{fam} ({model})")
        ax.set_ylabel("accuracy (%), 95% CI")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


def tradeoff(general: pd.DataFrame) -> bytes | None:
    """Math gain (95% CI) against general-ability change (the TOST's 1 - 2 alpha CI), one mark per point."""
    if general.empty:
        return None
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    margin = 100 * float(general["margin"].iloc[0])
    ax.axvspan(-margin, margin, color="green", alpha=0.08, lw=0)  # the equivalence margin
    for i, ((model, mix), g) in enumerate(general.groupby(["model", "mix_fraction"])):
        ax.errorbar(
            100 * g["general_change"],
            100 * g["math_gain"],
            xerr=_bars(
                100 * (g["general_change"] - g["general_lo"]), 100 * (g["general_hi"] - g["general_change"])
            ),
            yerr=_bars(100 * (g["math_gain"] - g["math_lo"]), 100 * (g["math_hi"] - g["math_gain"])),
            fmt="o",
            color=COLORS(i),
            capsize=2,
            label=f"{model}, mix {mix:g}",
        )
        for _, r in g.iterrows():
            rank = (
                ""
                if r["lora_r"] is None or (isinstance(r["lora_r"], float) and math.isnan(r["lora_r"]))
                else f" r{r['lora_r']:g}"
            )
            ax.annotate(
                f"{r['train_examples']}{rank}",
                (100 * r["general_change"], 100 * r["math_gain"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.axhline(0, color="grey", lw=1)
    ax.axvline(0, color="grey", lw=1)
    ax.set_xlabel("general-ability change vs base (points; < 0 is forgetting)")
    ax.set_ylabel("math gain vs base (points)")
    ax.set_title("Gain against forgetting (labels: examples, LoRA rank)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def importance(found: dict[str, float]) -> bytes:
    names = list(found)[::-1]
    fig = Figure(figsize=(6, 0.6 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [found[n] for n in names], color="steelblue")
    ax.set_xlabel("importance (Optuna PED-ANOVA, sums to 1; no interval: descriptive)")
    return _png(fig)
