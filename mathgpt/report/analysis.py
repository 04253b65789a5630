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
from scipy.stats import t as student_t

from mathgpt.report.load import SETTING, StudyData
from mathgpt.stats import Gain, detectable_gain, logistic_fit, loglinear_fit, mcnemar_test, paired_gain


def setting_key(row: pd.Series) -> tuple:
    return tuple(None if pd.isna(row[c]) else float(row[c]) for c in SETTING)


def tuned_points(data: StudyData) -> pd.DataFrame:
    p = data.points
    keep = p["trial"].notna() & p["_correct"].map(lambda c: isinstance(c, list | tuple))
    out = p[keep].copy()
    out["setting"] = [setting_key(r) for _, r in out.iterrows()]
    return out


def base_rows(data: StudyData, model: str) -> pd.DataFrame:
    """The one base row of a model in ``data.points``: the baseline its gains are measured against."""
    return data.points[data.points["trial"].isna() & (data.points["model"] == model)]


def base_vector(data: StudyData, model: str) -> np.ndarray:
    """The per-problem verdicts of the baseline this model's gains are measured against (``report.baseline``)."""
    return np.asarray(base_rows(data, model).iloc[0]["_correct"], dtype=float)


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
    row = base_rows(data, model).iloc[0]
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
                "base_answered": _answered_rate(base_rows(data, model), mask),  # the chosen baseline's
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
    """Examples needed for base + delta from a logistic fit of correctness on log2(size), with the Fieller
    interval of needed_log2 (see there for why that interval)."""

    estimate: float  # nan when the fit has no rising trend
    lo: float  # 0 when the interval has no lower end
    hi: float  # inf when the slope is not clearly positive (the interval is unbounded)
    slope_logit: float
    target: float
    smallest: int  # the sizes run: a value outside them is censored in the report, not given an interval
    largest: int


def _needed_covariance(
    x: np.ndarray, mats: list[np.ndarray], base: np.ndarray, a: float, b: float, by_training: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of (a, b, base accuracy) at the fit: the part clustered by problem, and the training part
    (zero without ``by_training`` or with fewer than 3 trainings); see needed_log2."""
    n = base.size
    reps = np.array([m.shape[0] for m in mats])
    design = np.column_stack([np.ones_like(x), x])
    p = 1 / (1 + np.exp(-(design @ np.array([a, b]))))
    rows = np.repeat(design, reps, axis=0)  # one per training
    resid = np.vstack(mats) - np.repeat(p, reps)[:, None]  # trainings x problems
    by_problem = np.column_stack([resid.T @ rows, base - base.mean()])  # estimating functions, n x 3
    bread = np.zeros((3, 3))
    bread[:2, :2] = np.linalg.inv((design.T * (reps * n * p * (1 - p))) @ design)
    bread[2, 2] = 1 / n
    g = len(rows)
    meat = np.zeros((3, 3))
    if by_training and g > 2:  # the base is one fixed model: it has no training part
        per_training = rows * resid.sum(axis=1)[:, None]
        cells = np.einsum("ti,tk,tl->kl", resid**2, rows, rows)  # counted in both clusterings
        ev, vec = np.linalg.eigh((per_training.T @ per_training - cells) * g / (g - 2))
        meat[:2, :2] = (vec * np.maximum(ev, 0.0)) @ vec.T
    return bread @ by_problem.T @ by_problem @ bread, bread @ meat @ bread


def needed_log2(
    x: np.ndarray,
    mats: list[np.ndarray],
    base: np.ndarray,
    delta: float,
    alpha: float = 0.05,
    by_training: bool = True,
) -> tuple[float, float, float, float]:
    """log2(examples) where expit(a + b log2 size) reaches base accuracy + delta, its Fieller interval, and b.

    ``x``: log2 of each size; ``mats[j]``: that size's 0/1 correctness, one row per training (seed), one
    column per problem; ``base``: the base model's 0/1 correctness on the same problems. The covariance of (a,
    b, base accuracy) is a sandwich clustered two ways (Cameron, Gelbach & Miller 2011): by problem (a
    problem's runs at every size and its base run are correlated) and by training (a seed shifts every problem
    of one training); the training part carries the small-cluster factor G / (G - 2) and is clipped to
    positive semi-definite. The quantile is Student's t with Satterthwaite's degrees of freedom from the
    problem part (n - 1) and the training part (G - 2). Returns (nan, nan, nan, b) without a rising trend or
    when base + delta is not a probability, and (estimate, -inf, inf, b) when the slope is not clearly
    positive (Fieller's set is then not an interval). ``by_training=False`` clusters by problem only: the
    candidate the coverage simulation shows falling short when seeds differ.

    Chosen by simulated coverage (truth known: correctness logistic in log2 size per problem and training,
    problem SD 1.0 logit, a seed effect of SD 0.4 logit per training) against a percentile bootstrap over
    problems (the report's previous interval), a two-way bootstrap over problems and each size's seeds, and
    this sandwich clustered by problem only. In the test suite:
    tests/test_report.py::test_examples_needed_interval_covers_a_seed_effect (>= 0.93 on 400 slices per
    shape); the full table is in bench/interval_coverage.py (``PYTHONPATH=$PWD python
    bench/interval_coverage.py --needed``, 2026-12-02 on AMD EPYC, 1000 replicates, nominal 0.95):

        coverage                      problems boot  two-way boot  problem-clustered  this
        32-128, 150 problems, 3 seeds     0.904          0.948          0.908         0.943
        32-256, 300 problems, 4 seeds     0.875          0.940          0.891         0.943
        32-256, 200 problems, 2 seeds     0.902          0.944          0.918         0.956

    with median widths 4.3, 1.7, 2.4 doublings for this interval (two-way bootstrap 4.6, 1.6, 2.3). With the
    truth outside the sizes run (16 or 600 examples) the report's censored claim held in 0.984 and 0.957 of
    slices. Both two-way methods cover; this one needs no resampling (deterministic, 0.45 ms a slice of 300
    problems x 4 sizes x 4 seeds).
    """
    n = base.size
    reps = np.array([m.shape[0] for m in mats])
    a, b = logistic_fit(x, np.array([m.sum() for m in mats]), reps * n)
    target = float(base.mean()) + delta
    if not (np.isfinite(b) and b > 0 and 0 < target < 1):
        return math.nan, math.nan, math.nan, float(b)
    c, q = math.log(target / (1 - target)), 1 / (target * (1 - target))  # logit(target), its derivative
    v_problem, v_training = _needed_covariance(x, mats, base, a, b, by_training)
    g = sum(m.shape[0] for m in mats)
    est = (c - a) / b
    grad = np.array([-1.0, -est, q])  # of c - a - b L in (a, b, base accuracy), at the estimate
    vp, vt = grad @ v_problem @ grad, grad @ v_training @ grad
    df = (vp + vt) ** 2 / (vp**2 / max(n - 1, 1) + vt**2 / (g - 2)) if vt > 0 else max(n - 1, 1)
    z = float(student_t.ppf(1 - alpha / 2, df))
    v = v_problem + v_training
    # Fieller: the L with (c - a - b L)^2 <= z^2 Var(c - a - b L), a quadratic qa L^2 + qb L + qc <= 0
    qa = b * b - z * z * v[1, 1]
    qb = -2 * b * (c - a) - 2 * z * z * (v[0, 1] - q * v[1, 2])
    qc = (c - a) ** 2 - z * z * (v[0, 0] + q * q * v[2, 2] - 2 * q * v[0, 2])
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc <= 0:
        return float(est), -math.inf, math.inf, float(b)
    root = math.sqrt(disc)
    return float(est), (-qb - root) / (2 * qa), (-qb + root) / (2 * qa), float(b)


def _examples(log2x: float) -> float:
    """2 ** log2x without overflow: 0 and inf for the open ends."""
    if math.isnan(log2x):
        return math.nan
    return math.inf if log2x > 1000 else 0.0 if log2x < -1000 else float(2.0**log2x)


def examples_needed(data: StudyData, model: str, mask: np.ndarray) -> Needed | None:
    """Solve expit(a + b log2 x) = base accuracy + delta over the chosen points; interval by needed_log2."""
    chosen = arms(data, model)
    if len(chosen) < 2:
        return None
    sizes = sorted(chosen)
    mats = [arm_matrix(chosen[s])[:, mask] for s in sizes]
    base = base_vector(data, model)[mask]
    est, lo, hi, slope = needed_log2(
        np.log2(np.array(sizes, dtype=float)), mats, base, data.delta, data.alpha
    )
    return Needed(
        _examples(est),
        _examples(lo),
        math.inf if math.isnan(hi) else _examples(hi),
        slope,
        float(base.mean()) + data.delta,
        int(sizes[0]),
        int(sizes[-1]),
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
