"""Statistics checked against hand arithmetic and against scipy computed directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import binomtest, chi2, norm, ttest_1samp
from scipy.stats import t as student_t
from statsmodels.stats.weightstats import DescrStatsW

from mathgpt.stats import (
    accuracy_ci,
    detectable_gain,
    equivalence_test,
    logistic_fit,
    loglinear_fit,
    mcnemar_test,
    mean_ci,
    newcombe_gain,
    paired_gain,
    paired_table,
    retraining_gain,
    wilson_ci,
)


def _wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(20, 100), (0, 50), (50, 50), (7, 13), (1, 1)])
def test_wilson_matches_formula(k: int, n: int) -> None:
    lo, hi = wilson_ci(k, n)
    want = _wilson_by_hand(k, n, 1.96)
    assert lo == pytest.approx(max(0.0, want[0]), abs=1e-4)
    assert hi == pytest.approx(min(1.0, want[1]), abs=1e-4)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_z_changes_width() -> None:
    narrow, wide = wilson_ci(30, 100, z=1.0), wilson_ci(30, 100, z=2.576)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_ci(5, 3)


def test_paired_table_counts() -> None:
    table = paired_table([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])
    assert table.tolist() == [[2, 1], [2, 0]]
    with pytest.raises(ValueError, match="same length"):
        paired_table([1, 0], [1])


def test_mcnemar_exact_is_binomial_on_discordant() -> None:
    base = [0] * 12 + [1] * 3 + [1] * 20
    tuned = [1] * 12 + [0] * 3 + [1] * 20  # c=12, b=3: 15 discordant, exact
    res = mcnemar_test(base, tuned)
    assert (res.base_only, res.tuned_only, res.exact) == (3, 12, True)
    assert res.pvalue == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert res.gain == pytest.approx(9 / 35)


def test_mcnemar_chi2_with_correction_when_many_discordant() -> None:
    base = [0] * 30 + [1] * 10 + [0] * 60
    tuned = [1] * 30 + [0] * 10 + [0] * 60  # c=30, b=10: 40 discordant, chi2
    res = mcnemar_test(base, tuned)
    stat = (abs(30 - 10) - 1) ** 2 / 40
    assert not res.exact
    assert res.statistic == pytest.approx(stat)
    assert res.pvalue == pytest.approx(chi2.sf(stat, 1))


def test_mcnemar_no_discordant_is_p_one() -> None:
    res = mcnemar_test([1, 0, 1], [1, 0, 1])
    assert res.pvalue == pytest.approx(1.0) and res.gain == 0.0


def test_loglinear_fit_recovers_slope() -> None:
    x = np.array([32, 64, 128, 256, 512])
    y = 0.1 + 0.05 * np.log2(x)
    fit = loglinear_fit(x, y)
    assert fit is not None
    assert fit.slope == pytest.approx(0.05) and fit.intercept == pytest.approx(0.1)
    assert fit.r2 == pytest.approx(1.0) and fit.n == 5


def test_loglinear_fit_r2_below_one_with_noise() -> None:
    fit = loglinear_fit([32, 64, 128, 256], [0.30, 0.38, 0.36, 0.45])
    assert fit is not None and 0.0 < fit.r2 < 1.0
    assert loglinear_fit([64, 64], [0.3, 0.4]) is None
    assert loglinear_fit([0, 64], [0.3, 0.4]) is None
    flat = loglinear_fit([16, 32, 64], [0.0, 0.0, 0.0])
    assert flat is not None and flat.slope == 0.0 and math.isnan(flat.r2)


def test_loglinear_fit_two_sizes_reports_no_r2() -> None:
    fit = loglinear_fit([32, 64, 32, 64], [0.1, 0.3, 0.2, 0.2])
    assert fit is not None and fit.slope == pytest.approx(0.1) and math.isnan(fit.r2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_ci_matches_statsmodels_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=150, p=[0.05, 0.05, 0.6, 0.1, 0.2])
    ci = mean_ci(d)
    lo, hi = DescrStatsW(d).tconfint_mean(alpha=0.05)
    assert (ci.mean, ci.lo, ci.hi) == pytest.approx((d.mean(), lo, hi))
    for delta in (0.0, 0.03):
        want = ttest_1samp(d, delta, alternative="greater").pvalue
        assert ci.p_above(delta) == pytest.approx(want)
    # one seed: the mean paired difference is McNemar's (c - b) / n
    base, tuned = rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    mc = mcnemar_test(base, tuned)
    assert mean_ci(tuned - base).mean == pytest.approx(mc.gain)


def test_mean_ci_degenerate() -> None:
    assert math.isnan(mean_ci([]).mean)
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.lo == -math.inf and one.p_above(0.0) == 1.0
    flat = mean_ci([0.1] * 10)
    assert flat.lo == flat.hi == pytest.approx(0.1) and flat.p_above(0.03) == 0.0


def test_logistic_fit_matches_statsmodels_glm() -> None:
    x = np.log2([32, 64, 128, 256])
    k = np.array([20, 35, 61, 90])
    m = np.array([160, 160, 320, 160])
    res = sm.GLM(np.column_stack([k, m - k]), sm.add_constant(x), family=sm.families.Binomial()).fit()
    assert logistic_fit(x, k, m) == pytest.approx(res.params, rel=1e-6)
    assert np.isnan(logistic_fit(x, m, m)).all()  # all right: separated, no finite fit


def test_detectable_gain_by_simulation() -> None:
    """At the returned gain, about 80% of simulated slices have a lower 95% bound above delta."""
    n, loss, delta = 150, 0.02, 0.0
    g = detectable_gain(n, delta=delta, base_loss=loss)
    assert 0.04 < g < 0.12 and detectable_gain(600, base_loss=loss) < g
    rng = np.random.default_rng(0)
    draws = rng.choice([1, -1, 0], size=(2000, n), p=[g + loss, loss, 1 - g - 2 * loss])
    m = draws.mean(axis=1)
    se = draws.std(axis=1, ddof=1) / math.sqrt(n)
    assert np.mean(m - 1.96 * se > delta) == pytest.approx(0.8, abs=0.04)


def test_accuracy_ci_is_wilson_for_one_run_and_for_seed_means() -> None:
    from statsmodels.stats.proportion import proportion_confint

    one = accuracy_ci([1] * 12)
    assert (one.lo, one.hi) == pytest.approx(proportion_confint(12, 12, method="wilson"), abs=1e-9)
    assert one.lo < 1.0  # a t interval would be [1, 1]
    means = np.array([0.0, 0.5, 1.0, 0.5, 0.0, 1.0, 1.0, 0.5])  # two seeds
    p = means.mean()
    n_eff = 8 * 8 * p * (1 - p) / np.sum((means - p) ** 2)  # Kish: p(1 - p) / var(mean), here 10.3
    assert 8 < n_eff < 16
    ci = accuracy_ci(means, runs=2)
    assert (ci.lo, ci.hi) == pytest.approx(_wilson_by_hand(p * n_eff, n_eff, norm.ppf(0.975)))
    # seeds that disagree on every problem: capped at n x runs, never zero width
    even = accuracy_ci([0.5] * 8, runs=2)
    assert (even.lo, even.hi) == pytest.approx(_wilson_by_hand(8, 16, norm.ppf(0.975)))
    # monotone in the accuracy: 1/36 and 1.5/36 (a seed mean) must not cross (the old clipped t did)
    low, higher = accuracy_ci([1] + [0] * 35, runs=2), accuracy_ci([0.5, 1.0] + [0.0] * 34, runs=2)
    assert low.lo < higher.lo and low.hi < higher.hi


def _table(a: int, b: int, c: int, d: int) -> tuple[list[int], list[int]]:
    """Base and tuned 0/1 vectors for a paired table: a both right, b fixed (tuned only), c broken, d none."""
    base = [1] * a + [0] * b + [1] * c + [0] * d
    tuned = [1] * a + [1] * b + [0] * c + [0] * d
    return base, tuned


def test_newcombe_matches_the_published_example() -> None:
    """Cavo et al. (2012) in Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017),
    ch. 8: Newcombe square-and-add, estimate -0.0621, 95% CI -0.1186 to -0.0046."""
    g = newcombe_gain(*_table(59, 6, 16, 80))
    assert g.mean == pytest.approx(-0.0621, abs=5e-5)
    assert (g.lo, g.hi) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert (g.fixed, g.broken, g.method) == (6, 16, "newcombe")


def test_newcombe_by_hand_with_positive_correlation() -> None:
    a, b, c, d = 20, 9, 2, 119  # ad - bc = 2362 > n/2: phi is continuity-corrected
    n = a + b + c + d
    z = norm.ppf(0.975)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson_by_hand(a + b, n, z)
    l2, u2 = _wilson_by_hand(a + c, n, z)
    phi = (a * d - b * c - n / 2) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    g = newcombe_gain(*_table(a, b, c, d))
    assert (g.mean, g.lo, g.hi) == pytest.approx((7 / n, lo, hi))
    # p_above inverts the interval: at the 95% lower bound the one-sided p is 0.025
    assert g.p_above(g.lo) == pytest.approx(0.025, abs=1e-6)
    assert g.p_above(g.hi) == pytest.approx(0.975, abs=1e-6)
    assert g.p_above(g.mean) == 0.5


@pytest.mark.parametrize("right", [0, 37])
def test_zero_discordance_gives_a_non_degenerate_interval(right: int) -> None:
    base = [1] * right + [0] * (37 - right)
    g = newcombe_gain(base, base)
    lo, hi = _wilson_by_hand(right, 37, norm.ppf(0.975))
    width = hi - right / 37 if right == 0 else right / 37 - lo  # phi = 0: the two margins, squared and added
    assert g.mean == 0.0 and g.lo == pytest.approx(-width) and g.hi == pytest.approx(width)
    assert g.hi - g.lo > 0.1  # the old t interval over problems was [0, 0]
    assert mean_ci(np.zeros(37)).lo == mean_ci(np.zeros(37)).hi == 0.0


def test_newcombe_on_seed_means_equals_the_one_seed_case_for_identical_seeds() -> None:
    base, tuned = _table(5, 12, 3, 130)
    one = newcombe_gain(base, tuned)
    two = paired_gain(base, np.vstack([tuned, tuned]))
    assert (two.mean, two.lo, two.hi, two.method) == (one.mean, one.lo, one.hi, "newcombe")
    half = newcombe_gain(base, np.asarray(tuned) * 0.5)
    assert half.fixed == 6 and half.lo < half.mean < half.hi


def test_retraining_interval_is_the_crossed_anova_by_hand() -> None:
    rng = np.random.default_rng(3)
    base = (rng.random(40) < 0.2).astype(float)
    y = (rng.random((4, 40)) < np.array([[0.2], [0.5], [0.3], [0.45]])).astype(float)
    d = y - base
    s_, n = d.shape
    g_ = d.mean()
    ms_p = s_ * sum((d[:, i].mean() - g_) ** 2 for i in range(n)) / (n - 1)
    ms_s = n * sum((d[s].mean() - g_) ** 2 for s in range(s_)) / (s_ - 1)
    ms_e = sum((d[s, i] - d[:, i].mean() - d[s].mean() + g_) ** 2 for s in range(s_) for i in range(n)) / (
        (n - 1) * (s_ - 1)
    )
    assert ms_s > ms_e  # a real seed effect in this draw
    var = (ms_p + ms_s - ms_e) / (n * s_)
    df = (ms_p + ms_s - ms_e) ** 2 / (ms_p**2 / (n - 1) + ms_s**2 / (s_ - 1) + ms_e**2 / ((n - 1) * (s_ - 1)))
    half = student_t.ppf(0.975, df) * math.sqrt(var)
    g = retraining_gain(base, y)
    assert (g.mean, g.lo, g.hi, g.df) == pytest.approx((g_, g_ - half, g_ + half, df))
    assert g.p_above(g.lo) == pytest.approx(0.025)
    # no seed effect (identical seeds): exactly the problems-only t interval
    same = retraining_gain(base, np.vstack([y[0]] * 3))
    flat = mean_ci(y[0] - base)
    assert (same.lo, same.hi) == pytest.approx((flat.lo, flat.hi))
    with pytest.raises(ValueError, match="at least 3 seeds"):
        retraining_gain(base, y[:2])


def _truth(mu: float, tau: float, sigma: float, shift: float) -> float:
    """Population gain E[expit(a + g)] - E[expit(a - shift)], a ~ N(mu, tau^2), g ~ N(0, sigma^2)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()

    def mean_expit(m: float, s: float) -> float:
        return float(w @ (1 / (1 + np.exp(-(m + s * x)))))

    return mean_expit(mu, math.hypot(tau, sigma)) - mean_expit(mu - shift, tau)


def _lower_bounds(seeds: int, sigma: float, mu: float, reps: int = 3000, n: int = 150) -> dict[str, float]:
    """Coverage of each candidate's one-sided 97.5% lower bound for the seed-averaged gain.

    The demo's shape: 150 problems, a base near 1% (logit a - 3), fine-tuned points near 5-12%, problems of
    very different difficulty (tau 1.5) and a seed effect g shared by every problem of one training.
    """
    tau, shift = 1.5, 3.0
    rng = np.random.default_rng(17)
    a = rng.normal(mu, tau, (reps, n))
    base = (rng.random((reps, n)) < 1 / (1 + np.exp(-(a - shift)))).astype(float)
    g = rng.normal(0.0, sigma, (reps, seeds))
    y = (rng.random((reps, seeds, n)) < 1 / (1 + np.exp(-(a[:, None, :] + g[:, :, None])))).astype(float)
    d = y - base[:, None, :]
    m = d.mean(axis=(1, 2))
    pm, sm_ = d.mean(axis=1), d.mean(axis=2)
    ms_p = seeds * pm.var(axis=1, ddof=1)
    ms_s = n * sm_.var(axis=1, ddof=1)
    df_e = (n - 1) * (seeds - 1)
    ms_e = ((d - pm[:, None, :] - sm_[:, :, None] + m[:, None, None]) ** 2).sum(axis=(1, 2)) / df_e
    problems_only = m - student_t.ppf(0.975, n - 1) * np.sqrt(ms_p / (n * seeds))
    seed_part = np.maximum(ms_s - ms_e, 0.0)
    var = (ms_p + seed_part) / (n * seeds)
    den = ms_p**2 / (n - 1) + np.where(seed_part > 0, ms_s**2 / (seeds - 1) + ms_e**2 / df_e, 0.0)
    crossed = m - student_t.ppf(0.975, (ms_p + seed_part) ** 2 / den) * np.sqrt(var)
    truth = _truth(mu, tau, sigma, shift)
    # the vectorised crossed interval is the library's: check a few replicates against retraining_gain
    for r in range(3 if seeds >= 3 else 0):
        assert retraining_gain(base[r], y[r]).lo == pytest.approx(crossed[r])
    return {
        "problems only": float(np.mean(problems_only <= truth)),
        "crossed": float(np.mean(crossed <= truth)),
    }


@pytest.mark.parametrize("seeds", [3, 4])
@pytest.mark.parametrize("mu", [-4.0, -3.0])  # true gains of about 4 and 9 points, the demo's range
def test_retraining_interval_covers_a_seed_effect(seeds: int, mu: float) -> None:
    """The interval is chosen by this simulation: with a seed effect of SD 0.5 on the logit scale the
    crossed-effects lower bound holds at >= 96% (nominal 97.5%); the problems-only t interval (the report's
    previous one) does not. A two-way (problems x seeds) bootstrap also held here but fell to 94.5% at a
    base near 30% with 3 seeds (bench/interval_coverage.py), so it was not chosen."""
    cov = _lower_bounds(seeds, 0.5, mu)
    assert cov["crossed"] >= 0.96, cov
    assert cov["problems only"] < 0.96, cov
    without = _lower_bounds(seeds, 0.0, mu, reps=1000)  # no seed effect: still valid
    assert without["crossed"] >= 0.96, without


def test_two_seeds_cannot_cover_retraining_with_the_problems_only_interval() -> None:
    """Why the report says "covers only the models trained" below 3 seeds: with 2 seeds and a seed effect
    the problems-only interval's lower bound misses far more often than 2.5%."""
    for mu in (-4.0, -3.0):
        cov = _lower_bounds(2, 0.5, mu)
        assert cov["problems only"] < 0.94, cov


def test_equivalence_test_by_hand() -> None:
    """TOST with margin 3 points on 600 general items: 12 flip up, 10 flip down (gain +0.33 points)."""
    base, tuned = _table(300, 12, 10, 278)
    n, z = 600, norm.ppf(0.95)
    p1, p2 = 312 / n, 310 / n
    l1, u1 = _wilson_by_hand(312, n, z)
    l2, u2 = _wilson_by_hand(310, n, z)
    phi = (300 * 278 - 12 * 10 - n / 2) / math.sqrt(312 * 288 * 310 * 290)
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    eq = equivalence_test(base, tuned, margin=0.03)
    assert (eq.gain.lo, eq.gain.hi) == pytest.approx((lo, hi))  # the 90% interval
    assert -0.03 < lo and hi < 0.03 and eq.equivalent and eq.p < 0.05
    # p is the larger one-sided p: at its level the nearer bound of the interval touches the margin
    hand = newcombe_gain(base, tuned, 2 * eq.p)
    assert min(hand.lo + 0.03, 0.03 - hand.hi) == pytest.approx(0.0, abs=1e-7)
    assert (eq.gain.fixed, eq.gain.broken) == (12, 10)
    # the same net change with many more flips is not shown equivalent: +-3 points cannot be ruled out
    wide = equivalence_test(*_table(240, 60, 58, 242), margin=0.03)  # 10% flip each way
    assert wide.gain.mean == pytest.approx(eq.gain.mean) and not wide.equivalent and wide.p > 0.05
    with pytest.raises(ValueError, match="margin must be positive"):
        equivalence_test(base, tuned, margin=0.0)
