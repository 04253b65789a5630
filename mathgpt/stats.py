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
from scipy.stats import linregress, norm, t
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: every (trial, epoch) point is its own test against the same base model."""
    if len(pvalues) == 0:
        return []
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


@dataclass(frozen=True)
class LogLinearFit:
    """accuracy = intercept + slope * log2(examples): slope is accuracy gained per doubling of data."""

    slope: float  # per doubling, in the units of y
    intercept: float  # at 1 example (log2 = 0)
    r2: float  # nan when y does not vary or there are only two sizes (a line fits any two points)
    n: int

    def predict(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.log2(np.asarray(x, dtype=float))


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


def accuracy_ci(scores: Sequence[float] | np.ndarray, alpha: float = 0.05) -> MeanCI:
    """Accuracy of per-problem scores with a 95% interval: Wilson when every score is 0 or 1 (one run), else
    the t interval of the mean (scores averaged over seeds), clipped to [0, 1]. A t interval on 0/1 scores
    would collapse to zero width at 0% or 100%."""
    s = np.asarray(scores, dtype=float)
    if s.size and np.isin(s, (0.0, 1.0)).all():
        z = float(norm.ppf(1 - alpha / 2))
        lo, hi = wilson_ci(int(s.sum()), int(s.size), z=z)
        return MeanCI(float(s.mean()), lo, hi, math.nan, int(s.size))
    ci = mean_ci(s, alpha)
    return MeanCI(ci.mean, max(0.0, ci.lo), min(1.0, ci.hi), ci.se, ci.n)
