"""Scaling-curve report of a sweep: how much fine-tuning until math accuracy is significantly better?

Reads an Optuna study written by the sweep (docs/CONTRACTS.md) into one DataFrame row per trial and epoch,
tests every fine-tuned point against the base model on the same problems (paired McNemar, Holm-adjusted
because every point is its own test), fits accuracy against log2(training examples), and writes report.md,
a self-contained report.html, the PNG figures and trials.csv. Reading and writing files happen in
`write_report`; everything between is pure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mathgpt.stats import LogLinearFit, holm, loglinear_fit, mcnemar_test, wilson_ci

ALPHA = 0.05
FIGURES = {"scaling.png", "hyperparameters.png", "importances.png", "compute.png"}
N_EXAMPLES = 3  # side-by-side examples shown in each direction
# Override keys the sweep applies (docs/CONTRACTS.md) -> frame column names.
PARAM_COLUMNS = {
    "data.train_size": "train_size",
    "train.epochs": "epochs",
    "lora.r": "lora_r",
    "lora.alpha": "lora_alpha",
    "train.learning_rate": "learning_rate",
}
FRAME_COLUMNS = [
    "trial",
    "state",
    "label",
    "epoch",
    "epochs",
    "train_size",
    "lora_r",
    "lora_alpha",
    "learning_rate",
    "train_examples",
    "train_tokens",
    "train_wall_s",
    "eval_wall_s",
    "loss",
    "device",
    "n_eval",
    "n_correct",
    "accuracy",
    "ci_lo",
    "ci_hi",
    "correct",
]


# ---------------------------------------------------------------------------------------------------------
# Study -> frame (pure: only the study object and already-read run files)


def _aligned(line: Mapping[str, Any], eval_ids: Sequence[str]) -> list[int] | None:
    """The line's 0/1 vector in eval_ids order, or None when it cannot be paired with the base."""
    correct = line.get("correct")
    if correct is None:
        return None
    ids = line.get("ids")
    if ids is not None and eval_ids:
        by_id = dict(zip(ids, correct, strict=False))
        if set(by_id) != set(eval_ids):
            return None
        return [int(by_id[i]) for i in eval_ids]
    if eval_ids and len(correct) != len(eval_ids):
        return None
    return [int(c) for c in correct]


def _measured(acc: float | None, correct: list[int] | None, n: int | None, k: int | None) -> dict[str, Any]:
    if correct is not None:
        n, k = len(correct), int(sum(correct))
    if n and k is None and acc is not None:
        k = round(acc * n)  # only the accuracy was reported (an intermediate value)
    if acc is None and n and k is not None:
        acc = k / n
    lo, hi = wilson_ci(int(k), int(n)) if n and k is not None else (math.nan, math.nan)
    return {"n_eval": n, "n_correct": k, "accuracy": acc, "ci_lo": lo, "ci_hi": hi, "correct": correct}


def study_frame(
    study: optuna.Study,
    epoch_files: Mapping[int, list[dict[str, Any]]] | None = None,
    devices: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """One row per trial and evaluated epoch, plus an epoch-0 row for the base model (trial <NA>).

    Epoch lines come from the trial's `epochs` attribute, else `epoch_files[number]` (a running trial's
    epochs.jsonl), else its intermediate values (accuracy only). `correct` holds the per-problem vector in
    the study's `eval_ids` order, or None when it is unknown or cannot be aligned.
    """
    attrs = study.user_attrs
    eval_ids = list(attrs.get("eval_ids") or [])
    base = attrs.get("base") or {}
    rows: list[dict[str, Any]] = []
    if base:
        correct = _aligned(base, eval_ids)
        rows.append(
            {
                "trial": pd.NA,
                "state": "BASE",
                "label": "base",
                "epoch": 0,
                "train_examples": 0,
                "train_tokens": 0,
                "train_wall_s": 0.0,
            }
            | _measured(base.get("accuracy"), correct, base.get("n_eval"), None)
        )
    n_default = base.get("n_eval") or (len(eval_ids) or None)
    # Under the Wilcoxon pruner the sweep reports one step per problem, so steps are not epochs.
    steps_are_epochs = ((attrs.get("sweep_config") or {}).get("pruner") or {}).get("type") != "wilcoxon"
    for t in study.get_trials(deepcopy=False):
        raw = {**t.params, **t.user_attrs.get("overrides", {})}
        params = {PARAM_COLUMNS.get(k, k): v for k, v in raw.items()}
        reported = [{"epoch": int(s), "accuracy": float(v)} for s, v in sorted(t.intermediate_values.items())]
        lines = (
            t.user_attrs.get("epochs")
            or (epoch_files or {}).get(t.number)
            or (reported if steps_are_epochs else [])
        )
        for line in lines:
            epoch = int(line.get("epoch", 0))
            if epoch == 0:
                continue  # the study's base run is the one zero point
            size = params.get("train_size")
            examples = line.get("train_examples") or (size * epoch if size is not None else math.nan)
            row = {
                "trial": t.number,
                "state": t.state.name,
                "label": f"trial {t.number} · epoch {epoch}",
                "epoch": epoch,
                "train_examples": examples,
                "train_tokens": line.get("train_tokens", math.nan),
                "train_wall_s": line.get("train_wall_s", math.nan),
                "eval_wall_s": line.get("eval_wall_s"),
                "loss": line.get("loss"),
                "device": t.user_attrs.get("device") or (devices or {}).get(t.number),
            }
            row |= {k: v for k, v in params.items() if k not in row}
            if pd.isna(row.get("train_size")) and examples and not pd.isna(examples):
                row["train_size"] = examples / epoch
            correct = _aligned(line, eval_ids)
            rows.append(
                row
                | _measured(
                    line.get("accuracy"), correct, line.get("n_eval") or n_default, line.get("n_correct")
                )
            )
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in FRAME_COLUMNS]
    frame = frame.reindex(columns=FRAME_COLUMNS + extra)
    frame["trial"] = frame["trial"].astype("Int64")
    for col in ("epoch", "train_examples", "train_tokens", "accuracy", "ci_lo", "ci_hi", "train_wall_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame.sort_values(["trial", "epoch"], na_position="first", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# Analysis (pure)


def _tuned(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["trial"].notna() & frame["accuracy"].notna()]


def compare_to_base(frame: pd.DataFrame) -> pd.DataFrame:
    """Every fine-tuned point with a per-problem vector, tested against the base (McNemar), Holm-adjusted."""
    base = frame[frame["trial"].isna()]
    base_correct = base["correct"].iloc[0] if len(base) else None
    tuned = _tuned(frame)
    pairable = tuned["correct"].map(lambda c: c is not None and base_correct is not None).astype(bool)
    out = tuned.loc[pairable].drop(columns="correct")
    tests = [mcnemar_test(base_correct, c) for c in tuned.loc[pairable, "correct"]]
    out["gain"] = [r.gain for r in tests]
    out["base_only"] = [r.base_only for r in tests]
    out["tuned_only"] = [r.tuned_only for r in tests]
    out["exact"] = [r.exact for r in tests]
    out["p"] = [r.pvalue for r in tests]
    out["p_holm"] = holm(out["p"].tolist())
    out["significant"] = (out["p_holm"] < ALPHA) & (out["gain"] > 0)
    return out


def smallest_significant(comparisons: pd.DataFrame) -> pd.Series | None:
    """Fewest training examples seen (ties: fewest tokens) among points significantly better than the base."""
    sig = comparisons[comparisons["significant"]] if len(comparisons) else comparisons
    if sig.empty:
        return None
    return sig.sort_values(["train_examples", "train_tokens", "trial", "epoch"], kind="stable").iloc[0]


def best_point(frame: pd.DataFrame) -> pd.Series | None:
    """Highest accuracy among fine-tuned points; ties go to the one that saw fewer examples."""
    tuned = _tuned(frame)
    if tuned.empty:
        return None
    order = tuned.assign(neg_acc=-tuned["accuracy"]).sort_values(
        ["neg_acc", "train_examples", "train_tokens", "trial", "epoch"], kind="stable"
    )
    return tuned.loc[order.index[0]]


def scaling_fits(frame: pd.DataFrame) -> dict[str, LogLinearFit | None]:
    """accuracy ~ log2(examples seen), over every fine-tuned point and per epoch count (knobs pooled)."""
    tuned = _tuned(frame)
    fits = {"all points": loglinear_fit(tuned["train_examples"], tuned["accuracy"])}
    for epoch, group in tuned.groupby("epoch"):
        fits[f"epoch {int(epoch)}"] = loglinear_fit(group["train_examples"], group["accuracy"])
    return fits


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Optuna's importances over the parameters that vary; None and the reason when not computable."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return (
            None,
            f"Parameter importances need at least 2 complete trials (this study has {len(complete)}).",
        )
    names = sorted({k for t in complete for k in t.params})
    varying = [k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varying:
        return None, "Parameter importances need a parameter that varies across complete trials; none does."
    if len({t.value for t in complete}) == 1:
        return None, "Parameter importances are undefined: every complete trial has the same value."
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # PED-ANOVA: Optuna 5's default, and unlike fANOVA it needs no scikit-learn.
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    except (ValueError, RuntimeError) as err:
        return None, f"Optuna could not compute parameter importances: {err}"
    if caught:
        return None, f"Parameter importances are not informative here: {caught[0].message}"
    return importances, ""


def problem_groups(eval_ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Positions (in eval_ids order) of each evaluation set, then of each MATH level and subject within it."""
    meta = {r["id"]: r for r in records}
    groups: dict[tuple, list[int]] = {}
    for i, pid in enumerate(eval_ids):
        if (rec := meta.get(pid)) is None:
            continue
        name = str(rec.get("eval_set") or "unknown")
        keys = [(name, 0, "")]
        if rec.get("level") is not None:
            keys.append((name, 1, f"level {rec['level']}"))
        if rec.get("subject"):
            keys.append((name, 2, str(rec["subject"])))
        for key in keys:
            groups.setdefault(key, []).append(i)
    return {f"{n} · {sub}" if sub else n: idx for (n, _, sub), idx in sorted(groups.items())}


def breakdown(groups: Mapping[str, list[int]], base: Sequence[int], tuned: Sequence[int]) -> pd.DataFrame:
    rows = []
    for name, idx in groups.items():
        b, t = float(np.mean([base[i] for i in idx])), float(np.mean([tuned[i] for i in idx]))
        rows.append(
            {
                "problems": name,
                "n": len(idx),
                "base": _pct(b),
                "best": _pct(t),
                "change (points)": f"{100 * (t - b):+.1f}",
            }
        )
    return pd.DataFrame(rows)


def side_by_side(
    base_records: Sequence[Mapping[str, Any]], tuned_records: Sequence[Mapping[str, Any]], k: int = N_EXAMPLES
) -> tuple[list[tuple[dict, dict]], list[tuple[dict, dict]]]:
    """Up to k problems the fine-tuned model fixed, and up to k it broke, in the base records' order."""
    tuned = {r["id"]: r for r in tuned_records}
    fixed, broke = [], []
    for b in base_records:
        t = tuned.get(b["id"])
        if t is None:
            continue
        if not b.get("correct") and t.get("correct") and len(fixed) < k:
            fixed.append((dict(b), dict(t)))
        elif b.get("correct") and not t.get("correct") and len(broke) < k:
            broke.append((dict(b), dict(t)))
    return fixed, broke


def hours_unit(frame: pd.DataFrame) -> tuple[str, str]:
    """GPU-hours when every timed fine-tuned point ran on CUDA, else CPU-hours (noted when unrecorded)."""
    timed = _tuned(frame)
    devices = set(timed[timed["train_wall_s"].notna()]["device"].dropna())
    if devices == {"cuda"}:
        return "GPU-hours", ""
    note = (
        ""
        if devices == {"cpu"}
        else " The runs' device was not recorded as CUDA, so hours count as CPU-hours."
    )
    return "CPU-hours", note


# ---------------------------------------------------------------------------------------------------------
# Text


def _pct(x: float) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _r2(fit: LogLinearFit) -> str:
    return "undefined (accuracy does not vary)" if math.isnan(fit.r2) else f"{fit.r2:.3f}"


def _num(x: Any) -> str:
    if x is None or pd.isna(x):
        return "?"
    return f"{x:,.0f}" if float(x) == int(x) else f"{x:g}"


def describe(row: pd.Series) -> str:
    """A point in words: which trial, how much data, which knobs."""
    epochs = f" of {_num(row['epochs'])}" if not pd.isna(row.get("epochs")) else ""
    parts = [
        f"trial {row['trial']} after epoch {int(row['epoch'])}{epochs}: {_num(row['train_examples'])} "
        f"training examples seen (train_size {_num(row.get('train_size'))} × {int(row['epoch'])} epoch"
        f"{'s' if row['epoch'] != 1 else ''}, {_num(row['train_tokens'])} tokens)"
    ]
    if not pd.isna(row.get("lora_r")):
        parts.append(f"LoRA rank {_num(row['lora_r'])}")
    if not pd.isna(row.get("learning_rate")):
        parts.append(f"learning rate {row['learning_rate']:g}")
    return ", ".join(parts)


def answer_lines(frame: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """The answer to the study's question, first: smallest significant configuration, then the best one."""
    base = frame[frame["trial"].isna()]
    if base.empty:
        return [
            "No base-model result is stored in this study (study attribute `base`), so nothing can be "
            "tested against it."
        ]
    b = base.iloc[0]
    base_txt = f"base {_pct(b['accuracy'])} [{_pct(b['ci_lo'])}, {_pct(b['ci_hi'])}]"
    m = len(comparisons)
    if m == 0:
        return [
            f"No fine-tuned point can be compared with the base model yet ({base_txt}): no per-problem "
            "results to pair (the base's or any evaluated epoch's)."
        ]
    lines = []
    hit = smallest_significant(comparisons)
    if hit is not None:
        test = "exact" if hit["exact"] else "chi-square with continuity correction"
        lines.append(
            f"Smallest configuration significantly better than the base model: {describe(hit)}. Accuracy "
            f"{_pct(hit['accuracy'])} [{_pct(hit['ci_lo'])}, {_pct(hit['ci_hi'])}] vs {base_txt}: "
            f"{100 * hit['gain']:+.1f} points; McNemar p = {_p(hit['p'])} ({test}; "
            f"{hit['tuned_only']} problems fixed, {hit['base_only']} broken), Holm-adjusted p = "
            f"{_p(hit['p_holm'])} over {m} comparisons."
        )
    else:
        low = comparisons.sort_values("p_holm", kind="stable").iloc[0]
        lines.append(
            "Nothing is significant: no fine-tuned configuration is significantly better than the base "
            f"model ({base_txt}) at α = {ALPHA} after Holm adjustment over {m} comparisons. The closest is "
            f"{low['label']} ({100 * low['gain']:+.1f} points, p = {_p(low['p'])}, adjusted p = "
            f"{_p(low['p_holm'])})."
        )
    best = best_point(frame)
    if best is not None:
        match = comparisons[(comparisons["trial"] == best["trial"]) & (comparisons["epoch"] == best["epoch"])]
        test = (
            f", p = {_p(match.iloc[0]['p'])}, adjusted p = {_p(match.iloc[0]['p_holm'])}"
            if len(match)
            else ""
        )
        lines.append(
            f"Best configuration: {describe(best)}. Accuracy {_pct(best['accuracy'])} "
            f"[{_pct(best['ci_lo'])}, {_pct(best['ci_hi'])}], "
            f"{100 * (best['accuracy'] - b['accuracy']):+.1f} points over the base{test}."
        )
    lines.append(
        f"Each (trial, epoch) point is a separate paired McNemar test against the base model on the same "
        f"{_num(b['n_eval'])} problems (exact binomial below 25 discordant problems), so the answer uses "
        f"Holm-adjusted p-values (family of {m}) at α = {ALPHA}; a significant drop does not count."
    )
    return lines


# ---------------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot, no global backend)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _short(v: float, _pos: Any = None) -> str:
    """Tick labels people read at a glance: 32, 512, 12k, 1.5M, 0.002."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}" if v >= 1 else f"{v:.2g}"


def _log_x(ax: Any, base: int) -> None:
    ax.set_xscale("log", base=base)
    if base == 10:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _base_band(ax: Any, frame: pd.DataFrame) -> None:
    base = frame[frame["trial"].isna()]
    if base.empty:
        return
    b = base.iloc[0]
    label = f"base model (0 examples): {_pct(b['accuracy'])}"
    ax.axhline(100 * b["accuracy"], color="grey", ls="--", lw=1, label=label)
    ax.axhspan(100 * b["ci_lo"], 100 * b["ci_hi"], color="grey", alpha=0.15, lw=0)


def fig_scaling(frame: pd.DataFrame, fit: LogLinearFit | None, answer: pd.Series | None) -> bytes:
    tuned = _tuned(frame)
    tuned = tuned[tuned["train_examples"] > 0]
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    _base_band(ax, frame)
    epochs = sorted(tuned["epoch"].unique())
    for i, epoch in enumerate(epochs):
        g = tuned[tuned["epoch"] == epoch]
        color = colormaps["viridis"](0.1 + 0.75 * i / max(1, len(epochs) - 1))
        err = 100 * np.vstack([g["accuracy"] - g["ci_lo"], g["ci_hi"] - g["accuracy"]])
        ax.errorbar(g["train_examples"], 100 * g["accuracy"], yerr=err, fmt="o", color=color, alpha=0.5, ms=4)
        line = g.groupby("train_examples")["accuracy"].mean()
        ax.plot(
            line.index, 100 * line.values, "-", color=color, lw=2, label=f"after epoch {int(epoch)} (mean)"
        )
    if fit is not None:
        xs = np.geomspace(tuned["train_examples"].min(), tuned["train_examples"].max(), 50)
        label = f"log-linear fit: {100 * fit.slope:+.1f} points per doubling, R² = {_r2(fit)}"
        ax.plot(xs, 100 * fit.predict(xs), "k:", lw=1.5, label=label)
    if answer is not None:
        label = f"smallest significant: {answer['label']}"
        ax.plot(
            [answer["train_examples"]], [100 * answer["accuracy"]], "*", color="crimson", ms=16, label=label
        )
    if len(tuned):
        _log_x(ax, 2)
    ax.set_xlabel("training examples seen (train_size × epochs), log scale")
    ax.set_ylabel("accuracy (%), 95% Wilson intervals")
    ax.set_title("Accuracy against training data")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def _scatter_panel(
    ax: Any, frame: pd.DataFrame, points: pd.DataFrame, x: str, xlabel: str, base: int
) -> None:
    """Accuracy against one knob, coloured by examples seen (the knob that matters most, so kept visible)."""
    _base_band(ax, frame)
    xs = pd.to_numeric(points[x], errors="coerce") if x in points else pd.Series(dtype=float)
    pts = points[xs > 0] if len(xs) else points[:0]
    if pts.empty:
        ax.text(0.5, 0.5, f"no {xlabel} recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        seen = pts["train_examples"].astype(float).clip(lower=1)
        norm = LogNorm(seen.min(), max(seen.max(), 2 * seen.min()))
        sc = ax.scatter(xs[pts.index], 100 * pts["accuracy"], c=seen, norm=norm, cmap="viridis", s=36)
        bar = ax.figure.colorbar(sc, ax=ax, label="training examples seen")
        ticks = sorted(seen.unique())
        bar.set_ticks(ticks if len(ticks) <= 8 else ticks[:: math.ceil(len(ticks) / 8)])
        bar.ax.yaxis.set_major_formatter(FuncFormatter(_short))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
        _log_x(ax, base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)


def fig_hparams(frame: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    tuned = _tuned(frame)
    last = tuned.loc[tuned.groupby("trial")["epoch"].idxmax()] if len(tuned) else tuned
    _scatter_panel(ax1, frame, last, "lora_r", "LoRA rank (log scale)", base=2)
    _scatter_panel(ax2, frame, last, "learning_rate", "learning rate (log scale)", base=10)
    fig.suptitle("Accuracy at each trial's last evaluated epoch")
    return _png(fig)


def fig_compute(frame: pd.DataFrame, unit: str) -> bytes:
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    tuned = _tuned(frame).assign(hours=lambda d: d["train_wall_s"] / 3600)
    _scatter_panel(ax1, frame, tuned, "train_tokens", "training tokens seen (log scale)", base=10)
    _scatter_panel(ax2, frame, tuned, "hours", f"training {unit} (log scale)", base=10)
    fig.suptitle("Accuracy against compute (every trial and epoch)")
    return _png(fig)


def fig_importance(importances: Mapping[str, float]) -> bytes:
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="steelblue")
    ax.set_xlabel("importance (Optuna PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importances for the trial value")
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------
# Rendering: one list of blocks, written as Markdown and as HTML


@dataclass(frozen=True)
class Fig:
    name: str
    png: bytes
    caption: str


def _cells(df: pd.DataFrame) -> list[list[str]]:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if pd.isna(v) else (f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:,.4g}")
        return "" if v is None or v is pd.NA else str(v)

    return [[fmt(v) for v in row] for row in df.itertuples(index=False)]


def to_markdown(title: str, blocks: Sequence[Any]) -> str:
    out = [f"# {title}", ""]
    for kind, *body in blocks:
        if kind == "h":
            out += [f"## {body[0]}", ""]
        elif kind == "p":
            out += [body[0], ""]
        elif kind == "answer":
            first, *rest = body[0]
            out += [f"> **{first}**", *(f">\n> {line}" for line in rest), ""]
        elif kind == "fig":
            out += [f"![{body[0].caption}]({body[0].name})", "", f"*{body[0].caption}*", ""]
        elif kind == "table":
            df = body[0]
            out += ["| " + " | ".join(map(str, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _cells(df)]
            out.append("")
        elif kind == "pair":
            b, t, who = body
            out += [
                f"**{b['id']}** ({b.get('eval_set')}) — {html.escape(str(b.get('question')))}",
                "",
                f"Gold answer: `{b.get('gold')}`",
                "",
            ]
            for name, rec in (("base", b), (who, t)):
                mark = "right" if rec.get("correct") else "wrong"
                out += [
                    f"{name} ({mark}, extracted `{rec.get('extracted')}`):",
                    "",
                    "~~~~text",
                    str(rec.get("output", "")).replace("~~~~", "~ ~ ~ ~"),
                    "~~~~",
                    "",
                ]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
.answer{background:#fff8dc;border-left:6px solid #e0a800;padding:.8em 1.2em;margin:1em 0}
.answer p:first-child{font-weight:600;font-size:1.08em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.88em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f0f0f0}
img{max-width:100%}figcaption{font-size:.9em;color:#555}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin-bottom:2em}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.6em;font-size:.85em;border:1px solid #e3e3e3}
.right{color:#137333}.wrong{color:#b3261e}
"""


def to_html(title: str, blocks: Sequence[Any]) -> str:
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>",
    ]
    for kind, *body in blocks:
        if kind == "h":
            out.append(f"<h2>{e(body[0])}</h2>")
        elif kind == "p":
            out.append(f"<p>{e(body[0])}</p>")
        elif kind == "answer":
            out.append("<div class='answer'>" + "".join(f"<p>{e(line)}</p>" for line in body[0]) + "</div>")
        elif kind == "fig":
            data = base64.b64encode(body[0].png).decode("ascii")
            out.append(
                f"<figure><img alt='{e(body[0].caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(body[0].caption)}</figcaption></figure>"
            )
        elif kind == "table":
            df = body[0]
            head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _cells(df))
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "pair":
            b, t, who = body
            out.append(
                f"<p><b>{e(str(b['id']))}</b> ({e(str(b.get('eval_set')))}): {e(str(b.get('question')))}"
                f"<br>Gold answer: <code>{e(str(b.get('gold')))}</code></p><div class='pair'>"
            )
            for name, rec in (("base", b), (who, t)):
                mark = "right" if rec.get("correct") else "wrong"
                out.append(
                    f"<div><b>{e(name)}</b> — <span class='{mark}'>{mark}</span>, extracted "
                    f"<code>{e(str(rec.get('extracted')))}</code><pre>{e(str(rec.get('output', '')))}</pre>"
                    "</div>"
                )
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# The report's sections (pure: the study, its frame and the prediction records already read)


def _fmt_or(value: Any, fmt: str = "{}") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        raw = {
            PARAM_COLUMNS.get(k, k): v for k, v in {**t.params, **t.user_attrs.get("overrides", {})}.items()
        }
        done = [e.get("epoch") for e in t.user_attrs.get("epochs") or []]
        note = t.user_attrs.get("fail_reason", "") if t.state.name == "FAIL" else ""
        if t.state.name == "PRUNED":
            note = f"pruned after epoch {done[-1]}" if done else "pruned"
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "train_size": _fmt_or(raw.get("train_size")),
                "epochs": _fmt_or(raw.get("epochs")),
                "LoRA rank": _fmt_or(raw.get("lora_r")),
                "learning rate": _fmt_or(raw.get("learning_rate"), "{:g}"),
                "value": _fmt_or(t.value, "{:.3f}"),
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    c = comparisons.sort_values(["train_examples", "train_tokens", "trial", "epoch"], kind="stable")
    return pd.DataFrame(
        {
            "point": c["label"],
            "examples seen": c["train_examples"].map(_num),
            "tokens": c["train_tokens"].map(_num),
            "accuracy": c["accuracy"].map(_pct),
            "95% CI": [f"{_pct(lo)} – {_pct(hi)}" for lo, hi in zip(c["ci_lo"], c["ci_hi"], strict=True)],
            "gain (points)": (100 * c["gain"]).map("{:+.1f}".format),
            "fixed": c["tuned_only"],
            "broken": c["base_only"],
            "test": c["exact"].map({True: "exact", False: "chi2"}),
            "p": c["p"].map(_p),
            "Holm p": c["p_holm"].map(_p),
            "significant": c["significant"].map({True: "yes", False: "no"}),
        }
    )


def build_report(
    study: optuna.Study,
    frame: pd.DataFrame,
    base_records: list[dict[str, Any]] | None,
    tuned_records: list[dict[str, Any]] | None,
) -> tuple[str, list[tuple]]:
    """Title and blocks of the report, answer first; figures travel inside the blocks as PNG bytes."""
    blocks: list[tuple] = []

    def say(text: str) -> None:
        blocks.append(("p", text))

    def figure(name: str, png: bytes, caption: str) -> None:
        blocks.append(("fig", Fig(name, png, caption)))

    comparisons = compare_to_base(frame)
    answer = smallest_significant(comparisons)
    best = best_point(frame)
    base = frame[frame["trial"].isna()]
    states = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)], dtype=str).value_counts()
    words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    counts = ", ".join(f"{n} {words.get(s, s.lower())}" for s, n in states.items()) or "no trials yet"
    n_eval = _num(base.iloc[0]["n_eval"]) if len(base) else "?"
    say(
        f"Study '{study.study_name}': {len(study.trials)} trials ({counts}); every model is scored on "
        f"the same {n_eval} problems."
    )
    if running := int(states.get("RUNNING", 0)):
        say(
            f"Partial report: {running} trial(s) still running. Numbers, the Holm family and the answer will "
            "change; run `mathgpt report` again when the sweep ends."
        )
    blocks.append(("answer", answer_lines(frame, comparisons)))

    blocks.append(("h", "Accuracy against training data"))
    fits = scaling_fits(frame)
    figure(
        "scaling.png",
        fig_scaling(frame, fits["all points"], answer),
        "Accuracy against training examples seen (log scale); the grey band is the base model (zero "
        "examples) with its 95% interval.",
    )
    if (overall := fits["all points"]) is None:
        say("No log-linear fit yet: it needs fine-tuned points at two or more data sizes.")
    else:
        say(
            f"Log-linear fit over all {overall.n} fine-tuned points (other knobs pooled): "
            f"{100 * overall.slope:+.2f} accuracy points per doubling of training examples, R² = "
            f"{_r2(overall)}. Published math fine-tuning curves are close to log-linear, about 4.5 to 8 "
            "GSM8K points per doubling for 7B-65B models."
        )
        rows = [
            {"curve": k, "points": f.n, "points per doubling": f"{100 * f.slope:+.2f}", "R²": _r2(f)}
            for k, f in fits.items()
            if f is not None
        ]
        blocks.append(("table", pd.DataFrame(rows)))

    blocks.append(("h", "Every fine-tuned point against the base model"))
    if comparisons.empty:
        say("No point has per-problem results to pair with the base model yet.")
    else:
        say(
            "fixed = problems the base got wrong and this point got right; broken = the reverse. McNemar's "
            "test uses only these discordant problems."
        )
        blocks.append(("table", comparisons_table(comparisons)))

    blocks.append(("h", "Hyperparameters"))
    figure("hyperparameters.png", fig_hparams(frame), "Accuracy against LoRA rank and learning rate.")
    importances, why = param_importances(study)
    if importances is None:
        say(why)
    else:
        figure(
            "importances.png",
            fig_importance(importances),
            "Optuna's PED-ANOVA importances over complete trials.",
        )

    blocks.append(("h", "Accuracy against compute"))
    unit, note = hours_unit(frame)
    figure(
        "compute.png", fig_compute(frame, unit), f"Accuracy against training tokens seen and {unit}.{note}"
    )

    blocks.append(("h", "Breakdown by evaluation set"))
    base_vec = base.iloc[0]["correct"] if len(base) else None
    groups = problem_groups(
        study.user_attrs.get("eval_ids") or [], (base_records or []) + (tuned_records or [])
    )
    if best is None or best["correct"] is None or base_vec is None or not groups:
        say(
            "No breakdown: it needs per-problem records (predictions.jsonl) and the base's and best point's "
            "per-problem results."
        )
    else:
        say(f"Base model against the best point ({best['label']}), on the same problems.")
        blocks.append(("table", breakdown(groups, base_vec, best["correct"])))

    blocks.append(("h", "Side by side"))
    if best is None or not base_records or not tuned_records:
        say("No side-by-side examples: the base run's or the best trial's predictions.jsonl was not found.")
    else:
        who = f"trial {best['trial']}, epoch {int(frame[frame['trial'] == best['trial']]['epoch'].max())}"
        fixed, broke = side_by_side(base_records, tuned_records)
        for title, pairs in (
            ("Base model wrong, fine-tuned right", fixed),
            ("Base right, fine-tuned wrong", broke),
        ):
            say(f"{title} ({who}: the best trial's final-epoch outputs): {len(pairs) or 'no'} example(s).")
            blocks.extend(("pair", b, t, who) for b, t in pairs)

    blocks.append(("h", "Trials"))
    table = trials_table(study)
    blocks.append(("table", table) if len(table) else ("p", "The study has no trials yet."))
    say("trials.csv holds every (trial, epoch) point with its accuracy, interval and test against the base.")
    return f"MathGPT scaling report: {study.study_name}", blocks


# ---------------------------------------------------------------------------------------------------------
# Edge: storage and run directories in, report files out


def _read_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """Records of a JSONL file; None if absent. A torn last line (a run still writing) is skipped."""
    if not path.is_file():
        return None
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _study_root(study: optuna.Study, runs_dir: Path) -> Path:
    return Path(study.user_attrs.get("output_dir") or runs_dir / study.study_name)


def _trial_dirs(study: optuna.Study, runs_dir: Path) -> dict[int, Path]:
    root = _study_root(study, runs_dir)
    return {
        t.number: Path(t.user_attrs.get("trial_dir") or root / f"trial_{t.number}")
        for t in study.get_trials(deepcopy=False)
    }


def _device(run_dir: Path) -> str | None:
    """Where a run trained: metrics.json's resolved device, else an explicit model.device in config.yaml."""
    for name, keys in (("metrics.json", ["device"]), ("config.yaml", ["model", "device"])):
        try:
            value = yaml.safe_load((run_dir / name).read_text())  # YAML reads JSON too
            for key in keys:
                value = value.get(key)
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if str(value).startswith(("cuda", "cpu")):  # "auto" says nothing about where it ran
            return str(value).split(":")[0]
    return None


def write_report(
    study_name: str,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
) -> Path:
    """Write report.md, report.html, the PNG figures and trials.csv for a study; returns the folder."""
    from mathgpt.storage import open_study  # the one place that knows how studies are stored

    study = open_study(study_name, storage, runs_dir)
    dirs = _trial_dirs(study, Path(runs_dir))
    epoch_files = {n: lines for n, d in dirs.items() if (lines := _read_jsonl(d / "epochs.jsonl"))}
    devices = {n: dev for n, d in dirs.items() if (dev := _device(d))}
    frame = study_frame(study, epoch_files, devices)

    base_dir = (study.user_attrs.get("base") or {}).get("dir") or _study_root(study, Path(runs_dir)) / "base"
    base_records = _read_jsonl(Path(base_dir) / "predictions.jsonl")
    best = best_point(frame)
    tuned_all = _read_jsonl(dirs[int(best["trial"])] / "predictions.jsonl") if best is not None else None
    tuned_records = [r for r in tuned_all or [] if r.get("model") == "finetuned"] or None
    base_records = [r for r in (base_records or tuned_all or []) if r.get("model") == "base"] or None

    title, blocks = build_report(study, frame, base_records, tuned_records)
    out = Path(out_dir) if out_dir is not None else Path("analysis") / study_name
    out.mkdir(parents=True, exist_ok=True)
    figures = {block[1].name: block[1].png for block in blocks if block[0] == "fig"}
    for name in FIGURES - set(figures):
        (out / name).unlink(missing_ok=True)  # a figure this study no longer has must not linger from a rerun
    for name, png in figures.items():
        (out / name).write_bytes(png)
    tests = compare_to_base(frame)[
        ["trial", "epoch", "gain", "base_only", "tuned_only", "exact", "p", "p_holm"]
    ]
    table = frame.drop(columns="correct").merge(tests, on=["trial", "epoch"], how="left")
    table.to_csv(out / "trials.csv", index=False)
    (out / "report.md").write_text(to_markdown(title, blocks))
    (out / "report.html").write_text(to_html(title, blocks))
    return out
