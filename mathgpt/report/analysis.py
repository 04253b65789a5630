"""Pure statistics on a loaded study: the answer, its fits and the detection limit.

The answer's rule, fixed before looking at the report slice (so more trials cannot inflate it):
1. At each data size (training examples seen) the knob setting (rank, learning rate, batch, mix, epoch) with
   the highest **selection-slice** accuracy, averaged over seeds, is chosen; tied settings are pooled. Claims
   are made on the disjoint **report** slice, so choosing does not bias them (no winner's curse). Without a
   selection slice the choice falls back to the report slice and the report says so.
2. Each problem's score at a size is its correctness averaged over the chosen points (seeds); the gain is the
   mean paired difference from the base on the same problems. Its interval (stats.paired_gain) treats seeds as
   random from MIN_SEEDS_RETRAIN trainings up (it then covers retraining); with fewer it is Newcombe's paired
   interval, which covers only the models trained, and the report says so.
3. H0(size): gain <= delta is tested at level alpha/2 one-sided (the 95% interval's lower bound), from the
   largest size down, stopping at the first size not rejected (fixed-sequence: no multiplicity correction is
   needed because each test is only reached when all larger ones were rejected). The answer is the smallest
   size reached and rejected. One test per size, whatever the number of trials.
4. "Beats the base" is a second fixed sequence, H0(size): gain <= 0, the same way; it is its own family (its
   words never rest on the delta sequence). A size that does not clear a bound is inconclusive at this slice,
   with the power this slice had to clear it if the true gain were the observed one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import norm

from mathgpt.report.load import SETTING, StudyData
from mathgpt.stats import Gain, detectable_gain, logistic_fit, loglinear_fit, mcnemar_test, paired_gain

N_BOOT = 1000


def setting_key(row: pd.Series) -> tuple:
    return tuple(None if pd.isna(row[c]) else float(row[c]) for c in SETTING)


def tuned_points(data: StudyData) -> pd.DataFrame:
    p = data.points
    keep = p["trial"].notna() & p["_correct"].map(lambda c: isinstance(c, list | tuple))
    out = p[keep].copy()
    out["setting"] = [setting_key(r) for _, r in out.iterrows()]
    return out


def base_vector(data: StudyData, model: str) -> np.ndarray:
    """The per-problem verdicts of the baseline this model's gains are measured against (``report.baseline``)."""
    row = data.points[data.points["trial"].isna() & (data.points["model"] == model)].iloc[0]
    return np.asarray(row["_correct"], dtype=float)


def model_baselines(data: StudyData, model: str) -> pd.DataFrame:
    """Every baseline of one model (the zero-shot base and the sweep's ``baselines``), chosen one marked."""
    b = data.baselines
    return b[b["model"] == model] if len(b) else b


BASELINE_COLUMNS = [
    "train_examples", "baseline", "chosen", "few_shot", "max_new_tokens", "base_k", "n", "base_accuracy",
    "base_truncated", "base_answered", "select_accuracy", "gain", "lo", "hi", "interval", "p_above_zero",
]  # fmt: skip


def baseline_gains(data: StudyData, model: str, mask: np.ndarray) -> pd.DataFrame:
    """Per size and baseline: the chosen points' gain against that baseline, paired on the same problems, with
    the same interval as the answer's (so the table shows what each way of prompting the base leaves)."""
    rows = []
    for size, pts in sorted(arms(data, model).items()):
        mat = arm_matrix(pts)[:, mask]
        for _, b in model_baselines(data, model).iterrows():
            vec = np.asarray(b["_correct"], dtype=float)[mask]
            ci = paired_gain(vec, mat, data.alpha)
            rows.append(
                {
                    "train_examples": size,
                    "baseline": b["baseline"],
                    "chosen": bool(b["chosen"]),
                    "few_shot": int(b["few_shot"] or 0),
                    "max_new_tokens": b["max_new_tokens"],
                    "base_k": int(vec.sum()),
                    "n": int(mask.sum()),
                    "base_accuracy": float(vec.mean()),
                    "base_truncated": b["n_truncated"] / b["n"],  # over the whole report slice
                    "base_answered": _answered_rate(pd.DataFrame([b]), mask),
                    "select_accuracy": b["select_accuracy"],
                    "gain": ci.mean,
                    "lo": ci.lo,
                    "hi": ci.hi,
                    "interval": ci.method,
                    "p_above_zero": ci.p_above(0.0),
                }
            )
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


@dataclass(frozen=True)
class AnsweredGain:
    """The gain at one size on only the problems the baseline gave an answer to: a format-neutral diagnostic
    (a model that merely learned to stop and answer gains nothing here)."""

    size: int
    n: int  # problems the baseline answered, of the slice's
    of: int
    gain: Gain | None  # None when the baseline answered none


def answered_gain(data: StudyData, model: str, mask: np.ndarray, size: int) -> AnsweredGain | None:
    pts = arms(data, model).get(size)
    if pts is None:
        return None
    row = data.points[data.points["trial"].isna() & (data.points["model"] == model)].iloc[0]
    if not isinstance(row["_answered"], list | tuple):
        return None
    keep = mask & (np.asarray(row["_answered"], dtype=float) == 1)
    n = int(keep.sum())
    gain = paired_gain(base_vector(data, model)[keep], arm_matrix(pts)[:, keep], data.alpha) if n else None
    return AnsweredGain(size, n, int(mask.sum()), gain)


def models(data: StudyData) -> list[str]:
    return sorted(data.points.loc[data.points["trial"].isna(), "model"].dropna().unique().tolist())


def benchmarks(data: StudyData) -> dict[str, np.ndarray]:
    """Problem masks: one per evaluation set, and "all sets" (pooled, an extra) when there are several."""
    sets = data.problems["eval_set"].fillna("unknown").to_numpy()
    out = {name: sets == name for name in sorted(set(sets))}
    if len(out) > 1:
        out["all sets (pooled)"] = np.ones(len(sets), dtype=bool)
    return out


def choose(data: StudyData) -> pd.DataFrame:
    """Per (model, size): the chosen setting(s) and what chose them; one row per (model, size, setting)."""
    tuned = tuned_points(data)
    rows = []
    for (model, size), g in tuned.groupby(["model", "train_examples"]):
        scores = {}
        on = "select" if g["select_accuracy"].notna().all() else "report"
        for setting, s in g.groupby("setting", sort=False):
            col = "select_accuracy" if on == "select" else "accuracy"
            scores[setting] = float(s[col].astype(float).mean())
        best = max(scores.values())
        for setting, score in scores.items():
            rows.append(
                {
                    "model": model,
                    "train_examples": int(size),
                    "setting": setting,
                    "score": score,
                    "selected_on": on,
                    "chosen": abs(score - best) < 1e-12,
                }
            )
    return pd.DataFrame(
        rows, columns=["model", "train_examples", "setting", "score", "selected_on", "chosen"]
    )


def arms(data: StudyData, model: str) -> dict[int, pd.DataFrame]:
    """Per size: the chosen points (all their seeds) of one model."""
    tuned = tuned_points(data)
    ch = choose(data)
    ch = ch[(ch["model"] == model) & ch["chosen"]]
    out = {}
    for size, g in ch.groupby("train_examples"):
        pts = tuned[(tuned["model"] == model) & (tuned["train_examples"] == size)]
        out[int(size)] = pts[pts["setting"].isin(set(g["setting"]))]
    return out


def arm_matrix(pts: pd.DataFrame) -> np.ndarray:
    return np.vstack([np.asarray(c, dtype=float) for c in pts["_correct"]])


TEST_COLUMNS = [
    "train_examples",
    "n",
    "n_points",
    "seeds",
    "base_k",
    "accuracy",
    "base_accuracy",
    "gain",
    "lo",
    "hi",
    "interval",
    "fixed",
    "broken",
    "p_above_delta",
    "p_above_zero",
    "power_delta",
    "answered",
    "base_answered",
    "per_seed",
    "settings",
]


def _answered_rate(pts: pd.DataFrame, mask: np.ndarray) -> float:
    """Share of the masked problems with an extracted answer, over the points' runs (nan if unrecorded)."""
    rows = [np.asarray(a, dtype=float)[mask] for a in pts["_answered"] if isinstance(a, list | tuple)]
    return float(np.mean(rows)) if rows else math.nan


def size_tests(data: StudyData, model: str, mask: np.ndarray) -> pd.DataFrame:
    """One row per size: pooled-seed accuracy, paired gain with its CI, one-sided p, per-seed McNemar."""
    base = base_vector(data, model)[mask]
    rows = []
    for size, pts in sorted(arms(data, model).items()):
        pts = pts.sort_values(["seed", "trial"], na_position="last")
        mat = arm_matrix(pts)[:, mask]
        ci = paired_gain(base, mat, data.alpha)
        seeds = []
        for (_, p), vec in zip(pts.iterrows(), mat, strict=True):
            mc = mcnemar_test(base, vec)
            seeds.append(
                {
                    "seed": None if pd.isna(p["seed"]) else int(p["seed"]),
                    "trial": int(p["trial"]),
                    "k": int(vec.sum()),
                    "n": int(vec.size),
                    "fixed": mc.tuned_only,
                    "broken": mc.base_only,
                    "p": mc.pvalue,
                    "exact": mc.exact,
                }
            )
        rows.append(
            {
                "train_examples": size,
                "n": int(mask.sum()),
                "n_points": len(pts),
                "seeds": len({s["seed"] for s in seeds}),
                "base_k": int(base.sum()),
                "accuracy": float(mat.mean()),
                "base_accuracy": float(base.mean()),
                "gain": ci.mean,
                "lo": ci.lo,
                "hi": ci.hi,
                "interval": ci.method,
                "fixed": ci.fixed,
                "broken": ci.broken,
                "p_above_delta": ci.p_above(data.delta),
                "p_above_zero": ci.p_above(0.0),
                "power_delta": power_at_observed(ci, data.delta),
                "answered": _answered_rate(pts, mask),
                "base_answered": _answered_rate(  # the chosen baseline's
                    data.points[data.points["trial"].isna() & (data.points["model"] == model)], mask
                ),
                "per_seed": seeds,
                "settings": sorted(set(pts["setting"])),
            }
        )
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def power_at_observed(gain: Gain, delta: float) -> float:
    """Chance that this slice's lower 95% bound clears ``delta`` if the true gain were the observed one:
    normal approximation with the interval's own standard error (its lower half-width over z, or the
    retraining interval's standard error)."""
    se = gain.se if gain.method == "retraining" else (gain.mean - gain.lo) / gain.z
    if not (se > 0 and math.isfinite(se)):
        return math.nan
    return float(norm.cdf((gain.mean - delta) / se - gain.z))


@dataclass(frozen=True)
class Answer:
    size: int | None  # smallest size reached by the fixed sequence and rejected
    tested: list[int]  # sizes tested, largest first, up to and including the first non-rejection
    delta: float
    passed: list[int]  # sizes rejected (their H0: gain <= delta), largest first

    def verdict(self, size: int) -> str:
        """pass / fail / not tested, for the table."""
        if size in self.passed:
            return "pass"
        return "fail" if size in self.tested else "not tested"


def fixed_sequence(tests: pd.DataFrame, delta: float) -> Answer:
    """Step down from the largest size while the gain's lower 95% bound clears delta (at delta = 0 strictly:
    a bound of exactly 0 does not show a gain)."""
    answer, tested, passed = None, [], []
    for _, row in tests.sort_values("train_examples", ascending=False).iterrows():
        tested.append(int(row["train_examples"]))
        if not (row["lo"] > delta if delta == 0 else row["lo"] >= delta):
            break
        answer = int(row["train_examples"])
        passed.append(answer)
    return Answer(answer, tested, delta, passed)


@dataclass(frozen=True)
class Needed:
    """Examples needed for base + delta from a logistic fit of correctness on log2(size), CI by bootstrap."""

    estimate: float  # nan when the fit has no rising trend
    lo: float
    hi: float  # inf when the bootstrap often finds no rising trend
    slope_logit: float
    n_boot: int
    target: float
    smallest: int  # the sizes run: a value outside them is censored in the report, not given an interval
    largest: int


def examples_needed(data: StudyData, model: str, mask: np.ndarray, n_boot: int = N_BOOT) -> Needed | None:
    """Solve expit(a + b log2 x) = base accuracy + delta; percentile CI from a bootstrap over problems."""
    chosen = arms(data, model)
    if len(chosen) < 2:
        return None
    sizes = np.array(sorted(chosen), dtype=float)
    x = np.log2(sizes)
    sums = np.column_stack([arm_matrix(chosen[int(s)])[:, mask].sum(axis=0) for s in sizes])  # n x S
    reps = np.array([len(chosen[int(s)]) for s in sizes], dtype=float)
    base = base_vector(data, model)[mask]
    n = int(mask.sum())

    def solve(w: np.ndarray) -> tuple[float, float]:
        a, b = logistic_fit(x, w @ sums, reps * w.sum())
        target = float(w @ base / w.sum()) + data.delta
        if not (np.isfinite(b) and b > 0 and 0 < target < 1):
            return math.inf, b
        log2x = (math.log(target / (1 - target)) - a) / b
        return (float(2**log2x) if log2x < 1000 else math.inf), b

    est, slope = solve(np.ones(n))
    rng = np.random.default_rng(0)
    boots = np.array([solve(w)[0] for w in rng.multinomial(n, np.full(n, 1 / n), size=n_boot)])
    big = np.finfo(float).max  # np.quantile interpolates inf - inf to nan; a huge finite value sorts the same
    lo, hi = (
        float(q) if q < big else math.inf
        for q in np.quantile(np.minimum(boots, big), [data.alpha / 2, 1 - data.alpha / 2])
    )
    target = float(base.mean()) + data.delta
    return Needed(
        est if math.isfinite(est) else math.nan,
        float(lo),
        float(hi),
        float(slope),
        n_boot,
        target,
        int(sizes.min()),
        int(sizes.max()),
    )


@dataclass(frozen=True)
class Slope:
    """Accuracy points per doubling: OLS of per-problem scores on log2(size), CIs clustered by problem."""

    slope: float
    lo: float
    hi: float
    intercept: float
    cov: np.ndarray
    r2: float  # of the size means; nan with fewer than 3 sizes (a line fits any two points)
    n_sizes: int

    def band(self, sizes: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        design = np.column_stack([np.ones(len(sizes)), np.log2(sizes)])
        mid = design @ np.array([self.intercept, self.slope])
        se = np.sqrt(np.einsum("ij,jk,ik->i", design, self.cov, design))
        return mid, mid - z * se, mid + z * se


def slope_fit(data: StudyData, model: str, mask: np.ndarray) -> Slope | None:
    chosen = arms(data, model)
    if len(chosen) < 2:
        return None
    sizes = sorted(chosen)
    scores = np.concatenate([arm_matrix(chosen[s])[:, mask].mean(axis=0) for s in sizes])
    n = int(mask.sum())
    logx = np.repeat(np.log2(np.asarray(sizes, dtype=float)), n)
    groups = np.tile(np.arange(n), len(sizes))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # scores identical at every size: the slope's se is 0/0
        res = sm.OLS(scores, sm.add_constant(logx)).fit(cov_type="cluster", cov_kwds={"groups": groups})
        lo, hi = res.conf_int(alpha=data.alpha)[1]
    means = [float(arm_matrix(chosen[s])[:, mask].mean()) for s in sizes]
    fit = loglinear_fit(sizes, means)
    r2 = fit.r2 if fit is not None else math.nan
    return Slope(
        float(res.params[1]), float(lo), float(hi), float(res.params[0]), res.cov_params(), r2, len(sizes)
    )


def detection_limit(data: StudyData, model: str, mask: np.ndarray, delta: float = 0.0) -> float:
    """Smallest true gain the slice shows with 80% power (stats.detectable_gain), with the observed share
    of problems a single fine-tuned point breaks (base right, tuned wrong) as the loss rate."""
    base = base_vector(data, model)[mask]
    tuned = tuned_points(data)
    tuned = tuned[tuned["model"] == model]
    losses = [
        float(np.mean((base == 1) & (np.asarray(c, dtype=float)[mask] == 0))) for c in tuned["_correct"]
    ]
    loss = float(np.median(losses)) if losses else 0.0
    return detectable_gain(int(mask.sum()), delta=delta, base_loss=loss, alpha=data.alpha, power=data.power)
