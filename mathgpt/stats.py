"""The statistics behind "significantly better": intervals, paired tests and the scaling fit.

Every model in a study answers the same problems, so the comparison with the base model is paired (McNemar on
the discordant problems), not two independent proportions. Thin wrappers over statsmodels and scipy, kept
here so evaluation and reports compute them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import linregress, norm, t
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

# Below this many discordant problems the chi-square approximation is poor; use the exact binomial test.
EXACT_BELOW = 25


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (z=1.96: 95%); stays inside [0, 1] even at k=0 or n.

    >>> [round(v, 3) for v in wilson_ci(20, 100)]
    [0.133, 0.289]
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n (got k={k}, n={n})")
    if n == 0:
        return (0.0, 1.0)  # no problems: the interval says nothing, and says so
    alpha = 2.0 * (1.0 - norm.cdf(z))
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return (max(0.0, float(lo)), min(1.0, float(hi)))


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two models on the same problems."""

    n: int
    base_only: int  # problems the base got right and the other model wrong (b)
    tuned_only: int  # problems the base got wrong and the other model right (c)
    gain: float  # accuracy difference, tuned minus base, as a fraction
    statistic: float
    pvalue: float
    exact: bool


def paired_table(base: Sequence[int], tuned: Sequence[int]) -> np.ndarray:
    """2x2 table [[both right, base only], [tuned only, both wrong]] of two 0/1 vectors, same problems."""
    a = np.asarray(base, dtype=bool)
    t = np.asarray(tuned, dtype=bool)
    if a.shape != t.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must have the same length (got {a.size} and {t.size})")
    return np.array([[np.sum(a & t), np.sum(a & ~t)], [np.sum(~a & t), np.sum(~a & ~t)]], dtype=int)


def mcnemar_test(base: Sequence[int], tuned: Sequence[int]) -> McNemar:
    """McNemar's test: exact binomial when fewer than EXACT_BELOW problems are discordant, else chi2 with
    continuity correction. Two-sided; the sign of the gain says which way."""
    table = paired_table(base, tuned)
    b, c = int(table[0, 1]), int(table[1, 0])
    n = int(table.sum())
    exact = b + c < EXACT_BELOW
    res = mcnemar(table, exact=exact, correction=True)
    gain = (c - b) / n if n else 0.0
    return McNemar(n, b, c, gain, float(res.statistic), float(res.pvalue), exact)


@dataclass(frozen=True)
class LogLinearFit:
    """accuracy = intercept + slope * log2(examples): slope is accuracy gained per doubling of data."""

    slope: float  # per doubling, in the units of y
    intercept: float  # at 1 example (log2 = 0)
    r2: float  # nan when y does not vary or there are only two sizes (a line fits any two points)
    n: int


def loglinear_fit(x: Sequence[float], y: Sequence[float]) -> LogLinearFit | None:
    """Least-squares fit of y on log2(x); None when fewer than two distinct positive x (no line to draw)."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    keep = (xs > 0) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if np.unique(xs).size < 2:
        return None
    if np.ptp(ys) == 0:  # a flat line: the slope is 0 and R^2 is undefined, not 0 or 1
        return LogLinearFit(0.0, float(ys[0]), math.nan, int(xs.size))
    res = linregress(np.log2(xs), ys)
    r2 = float(res.rvalue**2) if np.unique(xs).size >= 3 else math.nan
    return LogLinearFit(float(res.slope), float(res.intercept), r2, int(xs.size))


def detectable_gain(
    n: int, *, delta: float = 0.0, base_loss: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true paired gain that ``n`` problems show with a lower 95% bound above ``delta``.

    Normal approximation to the paired difference of two proportions: with gain g and ``base_loss`` l (the
    share of problems the base model gets right and the tuned one wrong), the discordant share is g + 2l
    and the difference's standard error is sqrt((g + 2l) - g^2 / n). The gain is detectable when
    g - z_{1-alpha/2} se >= delta holds with probability ``power``, i.e. g - (z_{1-alpha/2} + z_power) se >=
    delta. Returns 1.0 when no gain up to 100 points qualifies.

    >>> round(detectable_gain(150), 3)  # no losses, claim "better than the base"
    0.05
    """
    if n < 1:
        return 1.0
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)

    def margin(g: float) -> float:
        var = max((g + 2 * base_loss) - g * g, 0.0)
        return g - z * math.sqrt(var / n) - delta

    if margin(1.0 - 2 * base_loss if base_loss < 0.5 else 1.0) < 0:
        return 1.0
    lo, hi = max(delta, 0.0), 1.0 - 2 * base_loss if base_loss < 0.5 else 1.0
    for _ in range(60):  # bisection: margin rises with g over (delta, hi]
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if margin(mid) < 0 else (lo, mid)
    return hi


@dataclass(frozen=True)
class MeanCI:
    """Mean of paired per-problem differences with a two-sided t interval (problems are the random unit)."""

    mean: float
    lo: float
    hi: float
    se: float
    n: int

    def p_above(self, delta: float) -> float:
        """One-sided p for H0: true mean <= delta (small when the gain clearly exceeds delta)."""
        if self.n < 2:
            return 1.0
        if self.se == 0:
            return 0.0 if self.mean > delta else 1.0
        return float(t.sf((self.mean - delta) / self.se, self.n - 1))


def mean_ci(diffs: Sequence[float] | np.ndarray, alpha: float = 0.05) -> MeanCI:
    """t interval of the mean of per-problem paired differences (equals statsmodels' DescrStatsW.tconfint_mean).

    With one seed each difference is -1, 0 or +1 and the mean is McNemar's (c - b) / n; with several seeds a
    problem's difference is its mean over seeds, so seed noise widens the interval through the problems.
    """
    d = np.asarray(diffs, dtype=float)
    n = int(d.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, math.nan, 0)
    m = float(d.mean())
    if n < 2:
        return MeanCI(m, -math.inf, math.inf, math.inf, n)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(t.ppf(1 - alpha / 2, n - 1)) * se
    return MeanCI(m, m - half, m + half, se, n)


def logistic_fit(x: np.ndarray, successes: np.ndarray, trials: np.ndarray, iters: int = 50) -> np.ndarray:
    """Maximum-likelihood (intercept, slope) of a binomial logistic regression on one covariate, by Newton.

    Aggregated counts keep it fast enough to refit a few hundred times in a bootstrap; the tests check it
    against statsmodels' GLM. Returns nan coefficients when the fit separates (all right or all wrong).
    """
    x = np.asarray(x, dtype=float)
    k = np.asarray(successes, dtype=float)
    m = np.asarray(trials, dtype=float)
    if m.sum() <= 0 or k.sum() <= 0 or k.sum() >= m.sum():
        return np.array([math.nan, math.nan])
    beta = np.array([math.log(k.sum() / (m.sum() - k.sum())), 0.0])
    design = np.column_stack([np.ones_like(x), x])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(design @ beta)))
        grad = design.T @ (k - m * p)
        hess = (design * (m * p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return np.array([math.nan, math.nan])
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta if np.all(np.isfinite(beta)) and abs(beta[1]) < 50 else np.array([math.nan, math.nan])


def accuracy_ci(scores: Sequence[float] | np.ndarray, alpha: float = 0.05, runs: int = 1) -> MeanCI:
    """Accuracy of per-problem scores with a Wilson interval, also for scores averaged over ``runs`` seeds.

    One run: the Wilson interval of k of n. Seed means: Wilson at the effective sample size
    p(1 - p) / var(mean) (Kish's design effect), between n and n x runs, so one method serves both, the
    bounds stay inside [0, 1] and never have zero width (the clipped t interval it replaces did both wrong).
    """
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return MeanCI(math.nan, 0.0, 1.0, math.nan, 0)
    lo, hi = _wilson(float(s.mean()), _effective_n(s, runs), float(norm.ppf(1 - alpha / 2)))
    return MeanCI(float(s.mean()), lo, hi, math.nan, int(s.size))


def _effective_n(scores: np.ndarray, runs: int) -> float:
    """n p(1 - p) / sum of squared deviations: n for 0/1 scores, up to n x runs when seeds disagree evenly."""
    n, p = scores.size, float(scores.mean())
    ss = float(np.sum((scores - p) ** 2))
    if ss <= 0:  # every score equal: all 0 or all 1 is n Bernoulli draws, a shared fraction n x runs of them
        return float(n * runs) if 0 < p < 1 else float(n)
    return min(float(n * runs), max(float(n), n * n * p * (1 - p) / ss))


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score bounds of a proportion p at (possibly effective, non-integer) sample size n; statsmodels
    takes the count p n and n as floats."""
    lo, hi = proportion_confint(p * n, n, alpha=2 * norm.sf(z), method="wilson")
    return max(0.0, float(lo)), min(1.0, float(hi))


# --- paired gains -------------------------------------------------------------------------------------------

# A retraining interval needs the seed variance, which two trainings estimate with one degree of freedom: in
# tests/test_stats.py's simulation (150 problems, seed SD 0.5 on the logit) the crossed interval's median lower
# half-width was 14.3 points at 2 seeds against 6.2 at 3 (problems-only: 3.8 and 3.3), too wide to say anything.
MIN_SEEDS_RETRAIN = 3


@dataclass(frozen=True)
class Gain:
    """Paired gain (tuned minus base accuracy, as a fraction) on the same problems with a two-sided interval.

    ``method`` says what the interval covers: "newcombe" the models trained (problems random), "retraining"
    also new training seeds (problems and seeds random).
    """

    mean: float
    lo: float
    hi: float
    n: int
    fixed: float  # base wrong, tuned right (a fraction of a problem when seeds are averaged)
    broken: float  # base right, tuned wrong
    method: str
    z: float  # the interval's normal quantile (1.96 for 95%)
    se: float = math.nan  # retraining only: standard error of the seed-averaged gain
    df: float = math.nan  # retraining only: Satterthwaite degrees of freedom
    margins: tuple[float, float, float, float, float] = (
        0.0,
        1.0,
        0.0,
        1.0,
        0.0,
    )  # newcombe: p1, n1, p2, n2, phi

    def p_above(self, delta: float) -> float:
        """One-sided p for H0: gain <= delta, the level at which the interval's lower bound reaches delta."""
        if self.n == 0:
            return 1.0
        if self.method == "retraining":
            return (
                float(t.sf((self.mean - delta) / self.se, self.df))
                if self.se > 0
                else float(self.mean <= delta)
            )
        return _newcombe_p(self.margins, delta)


def _newcombe_bounds(margins: tuple[float, float, float, float, float], z: float) -> tuple[float, float]:
    """Newcombe's square-and-add: each margin's Wilson bounds combined with their correlation phi."""
    p1, n1, p2, n2, phi = margins  # tuned, base
    l1, u1 = _wilson(p1, n1, z)
    l2, u2 = _wilson(p2, n2, z)
    diff = p1 - p2
    lo = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    hi = diff + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, lo), min(1.0, hi)


def _newcombe_p(margins: tuple[float, float, float, float, float], delta: float) -> float:
    """Invert the interval: the one-sided level alpha/2 at which its lower (or upper) bound equals delta."""
    diff = margins[0] - margins[2]
    if abs(diff - delta) < 1e-12:
        return 0.5
    side = 0 if diff > delta else 1  # lower bound falls to delta as z grows, or the upper bound rises to it
    gap = lambda z: _newcombe_bounds(margins, z)[side] - delta  # noqa: E731
    if gap(12.0) * gap(1e-9) > 0:
        p = 0.0  # delta lies beyond the interval at any reasonable level
    else:
        p = float(norm.sf(brentq(gap, 1e-9, 12.0, xtol=1e-10)))
    return p if side == 0 else 1.0 - p


def _phi(s: np.ndarray, x: np.ndarray) -> float:
    """Newcombe's continuity-corrected correlation, written for scores: n sum(sx) - sum(s) sum(x) (= ad - bc
    for a 0/1 table) reduced by n / 2 when above it (the paper's AD - BC - N/2), 0 when between 0 and n / 2
    or when a margin does not vary, over the Pearson denominator (= sqrt(efgh) for a 0/1 table)."""
    n = s.size
    cross = n * float(s @ x) - float(s.sum()) * float(x.sum())
    den = (n * float(s @ s) - float(s.sum()) ** 2) * (n * float(x @ x) - float(x.sum()) ** 2)
    if den <= 0:
        return 0.0
    if cross > n / 2:
        return (cross - n / 2) / math.sqrt(den)
    return cross / math.sqrt(den) if cross < 0 else 0.0


def newcombe_gain(
    base: Sequence[float] | np.ndarray, tuned: Sequence[float] | np.ndarray, alpha: float = 0.05
) -> Gain:
    """Paired gain of ``tuned`` over ``base`` on the same problems with Newcombe's interval (1998, method 10).

    Each argument is 0/1 per problem, or runs x problems (seeds; averaged per problem). For 0/1 vectors this
    is method 10 exactly; for seed means each margin's Wilson interval is taken at its effective sample size
    (accuracy_ci) and phi is the scores' correlation. It never has zero width: with no discordant problem it
    is the two Wilson margins squared and added. It covers the models trained: problems are the random unit.

    >>> g = newcombe_gain([0] * 37, [0] * 37)
    >>> round(g.lo, 3), round(g.hi, 3)
    (-0.094, 0.094)
    """
    xm, sm = np.atleast_2d(np.asarray(base, dtype=float)), np.atleast_2d(np.asarray(tuned, dtype=float))
    if xm.shape[1] != sm.shape[1] or xm.ndim != 2 or sm.ndim != 2:
        raise ValueError(f"paired vectors must have the same length (got {xm.shape[-1]} and {sm.shape[-1]})")
    z = float(norm.ppf(1 - alpha / 2))
    n = xm.shape[1]
    if n == 0:
        return Gain(math.nan, -1.0, 1.0, 0, 0.0, 0.0, "newcombe", z)
    x, s = xm.mean(axis=0), sm.mean(axis=0)
    margins = (
        float(s.mean()),
        _effective_n(s, sm.shape[0]),
        float(x.mean()),
        _effective_n(x, xm.shape[0]),
        _phi(s, x),
    )
    lo, hi = _newcombe_bounds(margins, z)
    fixed, broken = float(np.sum(s * (1 - x))), float(np.sum((1 - s) * x))
    return Gain(float(np.mean(s - x)), lo, hi, n, fixed, broken, "newcombe", z, margins=margins)


def retraining_gain(base: Sequence[float] | np.ndarray, tuned: np.ndarray, alpha: float = 0.05) -> Gain:
    """Seed-averaged paired gain with an interval that treats problems *and* training seeds as random.

    ``tuned`` is seeds x problems (0/1). The differences D[s, i] = tuned - base follow a crossed two-way
    random-effects model D = mu + problem_i + seed_s + e_si; the mean's variance is
    (MS_problem + MS_seed - MS_error) / (n S) (expected mean squares), with the seed component truncated at
    zero so the interval is never narrower than the problems-only one, and a t quantile with Satterthwaite
    degrees of freedom. Chosen over a two-way (problems x seeds) bootstrap by the coverage simulation in
    tests/test_stats.py (bench/interval_coverage.py compares both).
    """
    x = np.asarray(base, dtype=float)
    y = np.asarray(tuned, dtype=float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(
            f"retraining_gain needs seeds x problems scores for {x.size} problems (got {y.shape})"
        )
    n_seeds, n = y.shape
    if n_seeds < MIN_SEEDS_RETRAIN or n < 2:
        raise ValueError(f"a retraining interval needs at least {MIN_SEEDS_RETRAIN} seeds and 2 problems")
    d = y - x
    ms_p, ms_s, ms_e, df_e = _mean_squares(d)
    seed_part = max(ms_s - ms_e, 0.0)
    var = (ms_p + seed_part) / (n * n_seeds)
    parts = [(ms_p, n - 1)] + ([(ms_s, n_seeds - 1), (ms_e, df_e)] if seed_part > 0 else [])
    den = sum(ms**2 / df for ms, df in parts)
    df = (ms_p + seed_part) ** 2 / den if den > 0 else float(n - 1)
    se = math.sqrt(var)
    half = float(t.ppf(1 - alpha / 2, df)) * se
    m = float(d.mean())
    s = y.mean(axis=0)
    fixed, broken = float(np.sum(s * (1 - x))), float(np.sum((1 - s) * x))
    z = float(norm.ppf(1 - alpha / 2))
    return Gain(m, max(-1.0, m - half), min(1.0, m + half), n, fixed, broken, "retraining", z, se, df)


def _mean_squares(d: np.ndarray) -> tuple[float, float, float, int]:
    """Two-way ANOVA mean squares of a seeds x problems matrix (one observation per cell)."""
    n_seeds, n = d.shape
    problem_means, seed_means, grand = d.mean(axis=0), d.mean(axis=1), d.mean()
    ms_p = n_seeds * float(np.sum((problem_means - grand) ** 2)) / (n - 1)
    ms_s = n * float(np.sum((seed_means - grand) ** 2)) / (n_seeds - 1)
    resid = d - problem_means[None, :] - seed_means[:, None] + grand
    df_e = (n - 1) * (n_seeds - 1)
    return ms_p, ms_s, float(np.sum(resid**2)) / df_e, df_e


def paired_gain(base: Sequence[float] | np.ndarray, tuned: np.ndarray, alpha: float = 0.05) -> Gain:
    """The report's gain for one arm (seeds x problems): the retraining interval from MIN_SEEDS_RETRAIN
    trainings up, else Newcombe's on the seed means (which covers only the models trained)."""
    y = np.atleast_2d(np.asarray(tuned, dtype=float))
    if y.shape[0] >= MIN_SEEDS_RETRAIN:
        return retraining_gain(base, y, alpha)
    return newcombe_gain(base, y, alpha)


@dataclass(frozen=True)
class Equivalence:
    """TOST for a paired difference of proportions: equivalent when both one-sided tests at alpha reject,
    i.e. the (1 - 2 alpha) Newcombe interval lies inside (-margin, +margin)."""

    gain: Gain  # with the (1 - 2 alpha) interval
    margin: float
    p: float  # the larger of the two one-sided p values
    alpha: float

    @property
    def equivalent(self) -> bool:
        return self.p < self.alpha


def equivalence_test(
    base: Sequence[float] | np.ndarray,
    tuned: Sequence[float] | np.ndarray,
    margin: float = 0.03,
    alpha: float = 0.05,
) -> Equivalence:
    """Two one-sided tests of |gain| < margin on paired 0/1 results (Newcombe's interval inverted)."""
    if margin <= 0:
        raise ValueError(f"equivalence margin must be positive (got {margin})")
    g = newcombe_gain(base, tuned, 2 * alpha)
    if g.n == 0:
        return Equivalence(g, margin, 1.0, alpha)
    p = max(g.p_above(-margin), 1.0 - g.p_above(margin))
    return Equivalence(g, margin, p, alpha)
