"""Statistics checked against hand arithmetic and against scipy computed directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import binomtest, chi2, ttest_1samp
from statsmodels.stats.weightstats import DescrStatsW

from mathgpt.stats import (
    detectable_gain,
    holm,
    logistic_fit,
    loglinear_fit,
    mcnemar_test,
    mean_ci,
    paired_table,
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


def test_holm_against_hand() -> None:
    # sorted 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone), returned in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([]) == []


def test_loglinear_fit_recovers_slope() -> None:
    x = np.array([32, 64, 128, 256, 512])
    y = 0.1 + 0.05 * np.log2(x)
    fit = loglinear_fit(x, y)
    assert fit is not None
    assert fit.slope == pytest.approx(0.05) and fit.intercept == pytest.approx(0.1)
    assert fit.r2 == pytest.approx(1.0) and fit.n == 5
    assert fit.predict([1024]) == pytest.approx([0.6])


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


def test_accuracy_ci_wilson_for_one_run_t_for_seed_means() -> None:
    from statsmodels.stats.proportion import proportion_confint

    from mathgpt.stats import accuracy_ci

    one = accuracy_ci([1] * 12 + [0] * 0)
    assert (one.lo, one.hi) == pytest.approx(proportion_confint(12, 12, method="wilson"), abs=1e-9)
    assert one.lo < 1.0  # a t interval would be [1, 1]
    means = np.array([0.0, 0.5, 1.0, 0.5, 0.0, 1.0, 1.0, 0.5])
    ci = accuracy_ci(means)
    lo, hi = DescrStatsW(means).tconfint_mean()
    assert (ci.lo, ci.hi) == pytest.approx((max(0.0, lo), min(1.0, hi)))
