"""The report on in-memory studies whose attributes follow docs/CONTRACTS.md exactly, with known answers.

160 report problems: 100 synthetic:test (2-5 steps) and 60 math500 (levels 1-5, two subjects); the base gets
every fifth right (32/160). A fine-tuned point at a size breaks `b` base-right problems and fixes `c`
base-wrong ones (which ones depends on the seed), so its gain is exactly (c - b) / 160.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import optuna
import pandas as pd
import pytest
import statsmodels.api as sm
from optuna.distributions import CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from bench.interval_coverage import needed_slices
from mathgpt.cli import main
from mathgpt.report import analysis as an
from mathgpt.report import effects as ef
from mathgpt.report import write_report
from mathgpt.report.load import MATRIX_COLUMNS, PairingError, load_study
from tests import records

optuna.logging.set_verbosity(optuna.logging.WARNING)
N_SYN, N_MATH = 100, 60
N = N_SYN + N_MATH
PROBLEMS = [
    {
        "id": f"synthetic:test:{i}",
        "eval_set": "synthetic:test",
        "level": None,
        "subject": None,
        "steps": i % 4 + 2,
    }
    for i in range(N_SYN)
] + [
    {
        "id": f"math500:{i}",
        "eval_set": "math500",
        "level": i % 5 + 1,
        "subject": ["Algebra", "Geometry"][i % 2],
        "steps": None,
    }
    for i in range(N_MATH)
]
BASE = [int(i % 5 == 0) for i in range(N)]
FP = "fp-report-1"
# (fixed, broken) per size for the default setting: 32 -> +2.5, 64 -> +11.25, 128 -> +17.5 points.
LAW = {32: (6, 2), 64: (20, 2), 128: (30, 2)}


def vector(fixed: int, broken: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    right = [i for i in range(N) if BASE[i]]
    wrong = [i for i in range(N) if not BASE[i]]
    out = list(BASE)
    for i in rng.permutation(right)[:broken]:
        out[i] = 0
    for i in rng.permutation(wrong)[:fixed]:
        out[i] = 1
    return out


def point(size: int, correct: list[int], select: float | None, general: dict | None = None, **knobs) -> dict:
    k = sum(correct)
    return records.point(
        correct,
        knobs,
        train_examples=size,
        optimizer_steps=size // 8,
        train_tokens=100 * size,
        loss=1.0 / math.log2(size) if size > 1 else None,
        n_answered=N - 10,
        n_truncated=10,
        n_no_answer=10,
        strict_accuracy=k / N,
        answered=[1] * (N - 10) + [0] * 10,
        fingerprint=FP,
        select=None if select is None else records.select([1] * 50 + [0] * 50, accuracy=select),
        general=general or {},
    )


def base_point(model: str = "tiny", general: dict | None = None) -> dict:
    return point(0, BASE, None, general) | {
        "point": 0,
        "epoch": 0.0,
        "train_examples": 0,
        "loss": None,
        "dir": f"/runs/s/base-{model}",
    }


def add(
    study: optuna.Study,
    size: int,
    seed: int,
    lr: float,
    correct: list[int],
    select: float | None,
    model: str = "tiny",
    general: dict | None = None,
    fp: str = FP,
    trial_dir: str | None = None,
    checker: str = "3",
    machine: dict | None = None,
    dropout: float = 0.0,
) -> None:
    knobs = {"seed": seed, "model": model, "train_size": size, "lora_r": 8, "lora_alpha": 16.0}
    knobs["lora_dropout"] = dropout
    pt = point(size, correct, select, general, **knobs, learning_rate=lr)
    pt |= {"fingerprint": fp, "checker_version": checker}
    if machine is not None:
        pt["machine"] = machine
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=select if select is not None else pt["accuracy"],
            user_attrs={
                "points": [pt],
                "trial_dir": trial_dir or f"/runs/s/trial_{len(study.trials)}",
                "train_tokens": 100 * size,
                "wall_s": 2.0,
                "checker_version": "3",
            },
        )
    )


def make_study(
    models: tuple[str, ...] = ("tiny",),
    seeds: tuple[int, ...] = (0, 1),
    select: bool = True,
    delta: float = 0.03,
) -> optuna.Study:
    study = optuna.create_study(study_name="demo", direction="maximize")
    study.set_user_attr("bases", {m: base_point(m) for m in models})
    study.set_user_attr("eval_problems", PROBLEMS)
    study.set_user_attr("eval_fingerprint", FP)
    study.set_user_attr("select_fingerprint", "fp-select" if select else None)
    study.set_user_attr("sweep_config", {"report": {"delta": delta, "alpha": 0.05, "power": 0.8}})
    for m_i, model in enumerate(models):
        for size, (fixed, broken) in LAW.items():
            for seed in seeds:
                # lr 2e-3 is chosen on the selection slice; lr 1e-3 (worse there) is better on the report slice.
                add(
                    study,
                    size,
                    seed,
                    2e-3,
                    vector(fixed // (m_i + 1), broken, seed),
                    0.5 if select else None,
                    model,
                )
                add(
                    study,
                    size,
                    seed,
                    1e-3,
                    vector(fixed + 5, broken, seed + 10),
                    0.4 if select else None,
                    model,
                )
    return study


def test_matrix_follows_the_contract() -> None:
    data = load_study(make_study())
    m = data.matrix
    assert list(m.columns) == MATRIX_COLUMNS
    assert len(m) == N * (1 + 3 * 2 * 2)
    base = m[m["trial"].isna()]
    assert len(base) == N and (base["train_examples"] == 0).all() and base["correct"].tolist() == BASE
    assert set(m["seed"].dropna()) == {0, 1}
    assert m.loc[m["eval_set"] == "math500", "level"].notna().all()


def test_mismatched_fingerprint_is_refused_naming_both() -> None:
    study = make_study()
    add(study, 64, 2, 2e-3, vector(3, 1, 5), 0.5, fp="fp-other")
    with pytest.raises(PairingError, match=r"fp-other.*fp-report-1"):
        load_study(study)


def test_points_graded_by_another_checker_version_are_refused() -> None:
    study = make_study()
    add(study, 64, 2, 2e-3, vector(3, 1, 5), 0.5, checker="2")
    with pytest.raises(PairingError, match=r"checker 2.*checker 3.*mathgpt regrade"):
        load_study(study)


def test_wrong_length_slice_is_refused() -> None:
    study = make_study()
    add(study, 64, 2, 2e-3, vector(3, 1, 5)[:-1], 0.5)
    with pytest.raises(PairingError, match="159 results for the study's 160"):
        load_study(study)


def test_answer_is_the_known_size_with_paired_ci() -> None:
    data = load_study(make_study())
    mask = an.benchmarks(data)["all sets (pooled)"]
    tests = an.size_tests(data, "tiny", mask)
    # lr 2e-3 is chosen everywhere (selection slice), so gains are exactly (fixed - broken) / N.
    assert tests["gain"].tolist() == pytest.approx([(f - b) / N for f, b in LAW.values()])
    assert (tests["seeds"] == 2).all()
    ans = an.fixed_sequence(tests, data.delta)
    assert ans.size == 64 and ans.tested == [128, 64, 32]


def test_adding_hyperparameter_points_cannot_raise_the_answer() -> None:
    study = make_study()
    everything = np.ones(N, bool)
    before = an.size_tests(load_study(study), "tiny", everything)
    # 24 more points at the same sizes, worse on the selection slice (some better on the report slice).
    for size in LAW:
        for lr in (5e-4, 3e-4, 1e-4, 5e-3):
            for seed in (0, 1):
                add(study, size, seed, lr, vector(1 if lr < 5e-3 else 40, 6, seed + 20), 0.3)
    after = an.size_tests(load_study(study), "tiny", everything)
    cols = ["train_examples", "gain", "lo", "hi", "p_above_delta"]
    pd.testing.assert_frame_equal(before[cols], after[cols])  # one test per size, unchanged
    assert an.fixed_sequence(before, 0.03).size == an.fixed_sequence(after, 0.03).size == 64
    # A better-on-selection setting does change the choice (the rule is not frozen to the first trials).
    add(study, 32, 0, 7e-3, vector(40, 2, 3), 0.9)
    add(study, 32, 1, 7e-3, vector(40, 2, 4), 0.9)
    assert an.fixed_sequence(an.size_tests(load_study(study), "tiny", everything), 0.03).size == 32


def test_without_selection_slice_the_report_slice_chooses_and_says_so(tmp_path) -> None:
    chosen = an.choose(load_study(make_study(select=False)))
    assert (chosen["selected_on"] == "report").all()
    out = write_report(make_study(select=False), tmp_path)
    assert "biased upward" in (out / "report.md").read_text()


def test_problems_csv_reproduces_the_reported_numbers(tmp_path) -> None:
    out = write_report(make_study(), tmp_path)
    m = pd.read_csv(out / "problems.csv")
    trials = pd.read_csv(out / "trials.csv")
    answer = pd.read_csv(out / "answer.csv")
    tuned = trials[trials["trial"].notna()]
    assert (tuned["chosen"] == (tuned["learning_rate"] == 2e-3)).all()  # chosen on the selection slice
    base = m[m["trial"].isna()].set_index("problem_id")["correct"]
    for _, row in trials[trials["trial"].notna()].iterrows():
        t = m[m["trial"] == row["trial"]].set_index("problem_id")["correct"].loc[base.index]
        table = pd.crosstab(base, t).reindex(index=[1, 0], columns=[1, 0], fill_value=0).to_numpy()
        exact = table[0, 1] + table[1, 0] < 25
        assert mcnemar(table, exact=exact, correction=True).pvalue == pytest.approx(row["mcnemar_p"])
        lo, hi = proportion_confint(int(t.sum()), len(t), alpha=0.05, method="wilson")
        assert (row["n_correct"], row["ci_lo"], row["ci_hi"]) == pytest.approx(
            (t.sum(), lo, hi), abs=1e-5
        )  # wilson_ci uses z = 1.96
    for _, row in answer.iterrows():
        trial_ids = [int(x) for x in str(row["trials"]).split()]
        sub = m[m["trial"].isin(trial_ids)]
        if row["benchmark"] != "all sets (pooled)":
            sub = sub[sub["eval_set"] == row["benchmark"]]
        score = sub.groupby("problem_id")["correct"].mean()
        runs = sub.groupby("problem_id")["correct"].size().iloc[0]
        assert row["interval"] == "newcombe" and runs == 2  # two seeds: covers the models trained
        want = _newcombe_by_hand(base.loc[score.index].to_numpy(), score.to_numpy(), runs)
        assert (row["gain"], row["lo"], row["hi"]) == pytest.approx(want)


def _newcombe_by_hand(x: np.ndarray, s: np.ndarray, runs: int) -> tuple[float, float, float]:
    """Newcombe's method 10 from problems.csv: Wilson margins (statsmodels; seed means at Kish's effective n,
    within [n, n x runs]) squared and added with the continuity-corrected correlation of the scores."""
    n = len(s)

    def margin(v: np.ndarray, k: int) -> tuple[float, float, float]:
        p = v.mean()
        ss = ((v - p) ** 2).sum()
        n_eff = n if ss == 0 else min(n * k, max(n, n * n * p * (1 - p) / ss))
        lo, hi = proportion_confint(p * n_eff, n_eff, alpha=0.05, method="wilson")
        return p, lo, hi

    p1, l1, u1 = margin(s, runs)
    p2, l2, u2 = margin(x, 1)
    cross = n * (s * x).sum() - s.sum() * x.sum()
    den = (n * (s * s).sum() - s.sum() ** 2) * (n * (x * x).sum() - x.sum() ** 2)
    phi = (
        0.0
        if den <= 0
        else (cross - n / 2) / math.sqrt(den)
        if cross > n / 2
        else min(cross, 0) / math.sqrt(den)
    )
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2, lo, hi


def test_report_first_screen_in_plain_words(tmp_path) -> None:
    out = write_report(make_study(), tmp_path, storage_url="runs/demo/journal.log")
    md = (out / "report.md").read_text()
    first = md.split("\n\n")[1]
    assert first.startswith(
        "> **64 examples (2 seeds): +14.2 points [+5.5, +21.9] on math500 (base 20.0%, n = 60); with 2 "
        "trainings per size the interval covers only the models trained, not retraining (that needs 3 seeds)"
    )
    assert "32: inconclusive at this slice, not shown better than the base (observed +0.8 points" in first
    assert "64 examples (2 seeds): +9.5 points [+4.0, +14.7] on synthetic:test" in first
    assert "beat" not in first  # 32's lower bound is below 0 on both benchmarks: nothing says it beats
    # the estimate is below 32 but its interval reaches into the sizes run: the interval is kept
    assert "the logistic fit puts +3 points below the smallest size run (< 32 examples [< 32, 47])" in first
    assert "the logistic fit puts +3 points at about 33 examples [< 32, " in first
    assert "answered rate" not in first  # 150/160 answered before and after
    assert "mathgpt dashboard demo --storage runs/demo/journal.log" in md
    assert "Published" not in md and "published" not in md
    for name in (
        "scaling.png",
        "rates.png",
        "learning.png",
        "knobs.png",
        "breakdown.png",
        "problems.csv",
        "report.html",
    ):
        assert (out / name).is_file(), name
    assert not (out / "tradeoff.png").exists()  # no general results in this study
    html = (out / "report.html").read_text()
    assert '<table class="dataframe">' in html and "<td>" in html and "data:image/png;base64," in html


def test_a_size_whose_bound_fails_is_inconclusive_never_beats_the_base(tmp_path) -> None:
    """Delta 10 points: on synthetic:test 128 clears +10, 64 clears only 0 (second sequence), 32 neither."""
    out = write_report(make_study(delta=0.10), tmp_path)
    first = (out / "report.md").read_text().split("\n\n")[1]
    syn = first[first.index("on synthetic:test") :]
    assert syn.startswith("on synthetic:test")
    assert "; 64 beats the base (tested at 0) but +10 points is inconclusive at this slice (power 0." in syn
    assert "; 32: inconclusive at this slice, not shown better than the base" in syn
    assert "32 beat" not in first and "32 and" not in first
    answer = pd.read_csv(out / "answer.csv")
    row = answer[(answer["benchmark"] == "synthetic:test")].set_index("train_examples")
    assert row["passed"].tolist() == [False, False, True] and row["beats_base"].tolist() == [
        False,
        True,
        True,
    ]
    assert row.loc[64, "lo"] < 0.10 and row.loc[64, "lo"] > 0 and row.loc[32, "lo"] <= 0
    assert 0 < row.loc[64, "power_delta"] < 0.5  # observed gain 9.5 < 10: less than a coin flip
    md = re.sub(r" +", " ", (out / "report.md").read_text())  # tabulate pads the columns
    assert "| tiny | synthetic:test | 64 |" in md and "fail: inconclusive (power 0." in md
    assert "| fail | seed 0" in md  # 32's "gain > 0" verdict in the table


def test_three_seeds_give_the_retraining_interval(tmp_path) -> None:
    out = write_report(make_study(seeds=(0, 1, 2)), tmp_path)
    answer = pd.read_csv(out / "answer.csv")
    assert (answer["interval"] == "retraining").all()
    md = (out / "report.md").read_text()
    assert "covers only the models trained" not in md.split("\n\n")[1]
    assert "retraining (seeds random)" in md


def test_zero_discordance_subset_rows_are_not_degenerate(tmp_path) -> None:
    study = make_study(seeds=(0,))
    for seed in (0, 1):
        add(study, 16, seed, 2e-3, list(BASE), 0.6)  # identical to the base: no discordant problem anywhere
    data = load_study(study)
    rows = ef.breakdown(data, "tiny")
    same = rows[rows["train_examples"] == 16]
    assert len(same) > 5 and (same["gain"] == 0).all()
    assert (same["gain_lo"] < 0).all() and (same["gain_hi"] > 0).all()  # Newcombe: never [0, 0]
    md = (write_report(study, tmp_path) / "report.md").read_text()
    assert "subset (exploratory)" in md and "+0.0 [+0.0, +0.0]" not in md


def test_examples_needed_outside_the_sizes_run_is_censored() -> None:
    from mathgpt.report.tables import needed_text

    def nd(est: float, lo: float, hi: float) -> an.Needed:
        return an.Needed(est, lo, hi, 0.5, 0.3, 32, 128)

    assert needed_text(nd(20.0, 8.7, 30.0)) == "< 32"  # the whole interval below the sizes run
    assert needed_text(nd(300.0, 150.0, math.inf)) == "> 128"
    assert needed_text(nd(20.0, 8.7, 40.0)) == "< 32 [< 32, 40]"  # outside, but the interval reaches in
    assert needed_text(nd(300.0, 100.0, math.inf)) == "> 128 [100, > 128]"
    assert needed_text(nd(35.0, 8.7, 76.0)) == "35 [< 32, 76]"
    assert needed_text(nd(64.0, 40.0, 900.0)) == "64 [40, > 128]"
    assert needed_text(nd(math.nan, math.nan, math.inf)) == ""


def test_examples_needed_covariance_is_statsmodels_two_way_cluster_sandwich() -> None:
    """needed_log2's sandwich against statsmodels' GLM: clustered by problem, and two-way (problem and
    training) as V_problem + G/(G - 2) (V_training - V_cell), here without clipping; the Fieller ends solve
    (c - a - b L)^2 = t^2 Var(c - a - b L)."""
    from scipy.stats import t as student_t

    _, slices = needed_slices(np.random.default_rng(5), 1, (32, 64, 128, 256), 200, 3, 0.05, 60)
    x, mats, base = slices[0]
    n, g = base.size, 12  # 4 sizes x 3 seeds
    y = np.concatenate([m.ravel() for m in mats])
    logx = np.repeat(x, 3 * n)
    problem = np.tile(np.arange(n), g)
    training = np.repeat(np.arange(g), n)
    glm = sm.GLM(y, sm.add_constant(logx), family=sm.families.Binomial())

    def cov(groups: np.ndarray) -> np.ndarray:
        return glm.fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}).cov_params()

    a, b = glm.fit().params
    v_p, v_t = an._needed_covariance(x, mats, base, a, b)
    assert v_p[:2, :2] == pytest.approx(cov(problem), rel=1e-6)
    assert v_p[2, 2] == pytest.approx(base.var() / n)
    cell = glm.fit(cov_type="HC0").cov_params()
    extra = (cov(training) - cell) * g / (g - 2)
    assert np.linalg.eigvalsh(extra).min() > 0  # this draw needs no clipping
    assert v_t[:2, :2] == pytest.approx(extra, rel=1e-6)
    assert v_t[2].tolist() == [0.0, 0.0, 0.0]  # the base has no training part
    est, lo, hi, slope = an.needed_log2(x, mats, base, 0.03)
    t = base.mean() + 0.03
    c, q = math.log(t / (1 - t)), 1 / (t * (1 - t))
    v = v_p + v_t
    grad = np.array([-1.0, -est, q])
    vp, vt = grad @ v_p @ grad, grad @ v_t @ grad
    df = (vp + vt) ** 2 / (vp**2 / (n - 1) + vt**2 / (g - 2))
    z = student_t.ppf(0.975, df)
    assert slope == pytest.approx(b) and est == pytest.approx((c - a) / b)
    for end in (lo, hi):
        gr = np.array([-1.0, -end, q])
        assert (c - a - b * end) ** 2 == pytest.approx(z * z * gr @ v @ gr, rel=1e-6)
    assert lo < est < hi


@pytest.mark.parametrize(
    "sizes,n,seeds,base_acc,truth",
    [
        ((32, 64, 128), 150, 3, 0.05, 60),  # the demo's shape
        ((32, 64, 128, 256), 200, 2, 0.10, 90),  # the reference study's sizes, 2 seeds
        ((32, 64, 128), 150, 3, 0.02, 16),  # the truth below the sizes run
        ((32, 64, 128, 256), 300, 4, 0.20, 600),  # and above it
    ],
)
def test_examples_needed_interval_covers_a_seed_effect(sizes, n, seeds, base_acc, truth) -> None:
    """The interval is chosen by this simulation (analysis.needed_log2; the bootstraps compared are in
    bench/interval_coverage.py --needed): with a seed effect of SD 0.4 logit the two-way clustered Fieller
    interval covers the true examples-needed inside the sizes run at >= 93% (nominal 95%; 0.948-0.958 in 1000
    replicates); outside it the report's censored statement ("< 32", "> 128", or the interval with that end
    censored) holds at >= 93% (an extrapolated end itself need not: the curve is not evidence there). The
    same sandwich clustered by problem only (the seed effect left out) covers less, as the bootstrap over
    problems did. Outside the sizes run the point estimate alone would make the wrong "< 32" / "> max" claim
    in many slices; the interval's statement holds."""
    log2_truth, slices = needed_slices(np.random.default_rng(33), 400, sizes, n, seeds, base_acc, truth)
    lo_size, hi_size = math.log2(sizes[0]), math.log2(sizes[-1])
    hits = said = 0
    for x, mats, base in slices:
        est, lo, hi, slope = an.needed_log2(x, mats, base, 0.03)
        assert slope > 0 or math.isnan(est)
        hits += lo <= log2_truth <= hi
        # what needed_text states: ends outside the sizes run widen to "< smallest" / "> largest"
        said += (-math.inf if lo < lo_size else lo) <= log2_truth <= (math.inf if hi > hi_size else hi)
    assert said >= hits
    if lo_size <= log2_truth <= hi_size:
        assert said == hits  # inside, censoring an end never changes the claim about the truth
        assert hits / len(slices) >= 0.93, hits
    else:  # outside, the report states only "< smallest" / "> largest" for that end: that must hold
        assert said / len(slices) >= 0.93, said


def test_examples_needed_problem_clustering_alone_misses_the_seed_effect() -> None:
    """The training part of needed_log2's sandwich is what brings coverage up: clustered by problem only (the
    seed effect left out, like the bootstrap over problems the report used before) the demo shape covers
    < 93% where the two-way interval holds >= 93%."""
    log2_truth, slices = needed_slices(np.random.default_rng(7), 400, (32, 64, 128), 150, 3, 0.05, 60)
    two_way = problems_only = 0
    for x, mats, base in slices:
        _, lo, hi, _ = an.needed_log2(x, mats, base, 0.03)
        two_way += lo <= log2_truth <= hi
        _, lo, hi, _ = an.needed_log2(x, mats, base, 0.03, by_training=False)
        problems_only += lo <= log2_truth <= hi
    assert two_way / len(slices) >= 0.93 and problems_only / len(slices) < 0.93, (two_way, problems_only)


def test_methods_list_the_machines_and_warn_when_a_study_mixes_them(tmp_path) -> None:
    epyc = {
        "cpu": "AMD EPYC",
        "cpu_flags": ["avx512_bf16"],
        "gpu": None,
        "torch_threads": 2,
        "torch": "2.13.0",
    }
    xeon = epyc | {"cpu": "Intel Xeon", "cpu_flags": ["avx512_bf16", "amx_bf16"]}
    study = make_study(seeds=(0,))
    study.set_user_attr("bases", {"tiny": base_point() | {"machine": epyc}})
    md = (write_report(study, tmp_path / "one") / "report.md").read_text()
    assert "AMD EPYC (avx512_bf16; 2 torch threads)" in md
    assert "6 point(s) did not record their machine" in md  # the trials' points carry none
    add(study, 64, 5, 2e-3, vector(3, 1, 5), 0.5, machine=xeon)
    md = (write_report(study, tmp_path / "two") / "report.md").read_text()
    assert "**Warning: this study mixes 2 machines" in md and "Intel Xeon (avx512_bf16, amx_bf16" in md


def test_one_answer_line_per_model(tmp_path) -> None:
    out = write_report(make_study(models=("alpha", "beta")), tmp_path)
    md = (out / "report.md").read_text()
    quoted = [line for line in md.splitlines() if line.startswith("> **")]
    assert [q.split(":")[0] for q in quoted] == ["> **alpha", "> **beta"]


def test_gain_vs_forgetting_figure_when_points_carry_general(tmp_path) -> None:
    study = optuna.create_study(study_name="gen", direction="maximize")
    ref = {
        "piqa": {
            "accuracy": 0.6,
            "accuracy_norm": 0.6,
            "n": 50,
            "correct": [1] * 30 + [0] * 20,
            "correct_norm": [1] * 30 + [0] * 20,
            "fingerprint": "g",
        }
    }
    study.set_user_attr("bases", {"tiny": base_point(general=ref)})
    study.set_user_attr("eval_problems", PROBLEMS)
    lost = {"piqa": ref["piqa"] | {"accuracy": 0.5, "correct": [1] * 25 + [0] * 25}}
    for size in (32, 64):
        add(study, size, 0, 1e-3, vector(10, 2, 0), 0.5, general=lost)
    gen = ef.general_change(load_study(study))
    assert gen["general_change"].tolist() == pytest.approx([-0.1, -0.1])
    assert gen["general_down"].tolist() == [5, 5] and not gen["equivalent"].any()
    out = write_report(study, tmp_path)
    assert (out / "tradeoff.png").is_file()
    trials = pd.read_csv(out / "trials.csv")
    assert trials["general_piqa"].tolist() == pytest.approx([0.6, 0.5, 0.5])
    md = (out / "report.md").read_text()
    assert "inconclusive: not shown within ±3 points" in md and "+0/-5 of 50" in md
    assert "no forgetting:" not in md
    study.set_user_attr("sweep_config", {"report": {"general_margin": 0.25}})  # a margin this loose holds
    md = (write_report(study, tmp_path / "loose") / "report.md").read_text()
    assert "no forgetting: within ±25 points" in md


def test_knob_effects_are_paired_differences() -> None:
    eff = ef.knob_effects(load_study(make_study()))
    lr = eff[eff["knob"] == "learning_rate"].set_index("train_examples")
    # lr 2e-3 vs 1e-3: (fixed - 5) - fixed problems, same broken count -> -5/N at every size.
    assert lr["diff"].tolist() == pytest.approx([-5 / N] * 3)
    assert set(eff["knob"]) == {"learning_rate"}  # rank, batch, mix, epoch do not vary: no panel


def test_a_knob_from_the_table_reaches_the_matrix_and_the_knob_effects() -> None:
    """LoRA dropout: one row in record.KNOBS; a point carries it, the report pairs it like any other knob."""
    study = make_study(seeds=(0,))
    for size, (fixed, broken) in LAW.items():
        add(study, size, 0, 2e-3, vector(fixed + 10, broken, 0), 0.5, dropout=0.1)
    data = load_study(study)
    assert sorted(data.matrix["lora_dropout"].dropna().unique()) == [0.0, 0.1]
    eff = ef.knob_effects(data)
    drop = eff[eff["knob"] == "lora_dropout"].set_index("train_examples")
    assert drop["value"].tolist() == [0.1] * 3 and drop["pairs"].tolist() == [1] * 3


def test_examples_needed_recovers_a_logistic_law() -> None:
    study = optuna.create_study(study_name="law", direction="maximize")
    study.set_user_attr("bases", {"tiny": base_point()})
    study.set_user_attr("eval_problems", PROBLEMS)
    study.set_user_attr("sweep_config", {"report": {"delta": 0.1}})
    # accuracy = expit(-3 + 0.5 log2 x): 32 -> 0.378, 64 -> 0.5, 128 -> 0.622, 256 -> 0.731
    for size in (32, 64, 128, 256):
        p = 1 / (1 + math.exp(-(-3 + 0.5 * math.log2(size))))
        k = round(p * N)
        add(study, size, 0, 1e-3, [1] * k + [0] * (N - k), 0.5)
    data = load_study(study)
    nd = an.examples_needed(data, "tiny", np.ones(N, bool))
    target = 0.2 + 0.1  # base 32/160 + delta
    want = 2 ** ((math.log(target / (1 - target)) + 3) / 0.5)
    assert nd is not None and nd.estimate == pytest.approx(want, rel=0.1)
    assert nd.lo < nd.estimate < nd.hi
    sl = an.slope_fit(data, "tiny", np.ones(N, bool))
    assert sl is not None and sl.lo < sl.slope < sl.hi and 0.0 < sl.r2 <= 1.0


def test_two_sizes_give_no_r2(tmp_path) -> None:
    study = make_study(seeds=(0,))
    study2 = optuna.create_study(study_name="two", direction="maximize")
    for k in ("bases", "eval_problems", "sweep_config"):
        study2.set_user_attr(k, study.user_attrs[k])
    for t in study.trials:
        if t.user_attrs["points"][0]["knobs"]["train_size"] != 128:
            study2.add_trial(t)
    sl = an.slope_fit(load_study(study2), "tiny", np.ones(N, bool))
    assert sl is not None and sl.n_sizes == 2 and math.isnan(sl.r2)
    md = (write_report(study2, tmp_path) / "report.md").read_text()
    assert "n/a (2 sizes)" in md


def test_importances_only_with_enough_trials(tmp_path) -> None:
    small = write_report(make_study(), tmp_path / "small")
    assert "Parameter importances skipped: 12 complete trials (need 20)" in (small / "report.md").read_text()
    assert not (small / "importances.png").exists()
    study = optuna.create_study(study_name="big", direction="maximize")
    study.set_user_attr("bases", {"tiny": base_point()})
    study.set_user_attr("eval_problems", PROBLEMS)
    dists = {
        "train.learning_rate": CategoricalDistribution([1e-3, 2e-3]),
        "lora.r": CategoricalDistribution([8, 16]),
    }
    rng = np.random.default_rng(0)
    for i in range(24):
        params = {"train.learning_rate": [1e-3, 2e-3][i % 2], "lora.r": [8, 16][(i // 2) % 2]}
        value = 0.3 + 0.2 * (i % 2) + 0.01 * rng.random()
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, params=params, distributions=dists)
        )
    found, why = ef.importances(study)
    assert found is not None and set(found) == {"train.learning_rate", "lora.r"}, why
    assert found["train.learning_rate"] > found["lora.r"]


def test_cli_report_on_a_journal_study(tmp_path, capsys) -> None:
    root = tmp_path / "runs" / "demo"
    root.mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    study = optuna.create_study(study_name="demo", storage=storage, direction="maximize")
    for key, value in make_study(seeds=(0,)).user_attrs.items():
        study.set_user_attr(key, value)
    for t in make_study(seeds=(0,)).trials:
        study.add_trial(t)
    out = tmp_path / "out"
    assert main(["report", "demo", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "mathgpt dashboard demo" in (out / "report.md").read_text()
    add(study, 64, 3, 2e-3, vector(3, 1, 5), 0.5, fp="fp-other")
    capsys.readouterr()
    assert main(["report", "demo", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp-other" in err[0] and "fp-report-1" in err[0]


def test_partial_and_empty_studies_still_report(tmp_path) -> None:
    empty = write_report(optuna.create_study(study_name="empty"), tmp_path / "e")
    assert "No base run is stored in this study yet" in (empty / "report.md").read_text()
    study = optuna.create_study(study_name="partial")
    study.set_user_attr("bases", {"tiny": base_point()})
    study.set_user_attr("eval_problems", PROBLEMS)
    study.add_trial(create_trial(state=TrialState.RUNNING, params={}, distributions={}))
    study.add_trial(
        create_trial(state=TrialState.FAIL, params={}, distributions={}, user_attrs={"fail_reason": "OOM"})
    )
    md = (write_report(study, tmp_path / "p") / "report.md").read_text()
    assert "Partial report: 1 trial(s) still running" in md and "trial 1: OOM" in md
    assert "no fine-tuned point with per-problem results yet" in md


def _preds(path, model: str, correct: list[int]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "model": model,
            "point": 0 if model == "base" else 1,
            "slice": "report",
            "id": p["id"],
            "eval_set": p["eval_set"],
            "question": f"What is {i} + 1?",
            "gold": str(i + 1),
            "output": f"{model} <script>{i}</script>",
            "extracted": str(i + c),
            "correct": bool(c),
        }
        for i, (p, c) in enumerate(zip(PROBLEMS, correct, strict=True))
    ]
    rows.append({"model": model, "slice": "select", "id": PROBLEMS[0]["id"], "correct": True})
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')


def test_side_by_side_reads_the_runs_predictions(tmp_path) -> None:
    study = optuna.create_study(study_name="sbs", direction="maximize")
    study.set_user_attr("bases", {"tiny": base_point() | {"dir": str(tmp_path / "base")}})
    study.set_user_attr("eval_problems", PROBLEMS)
    tuned = vector(30, 2, 0)
    _preds(tmp_path / "base", "base", BASE)
    _preds(tmp_path / "trial_0", "finetuned", tuned)
    add(study, 128, 0, 1e-3, tuned, 0.5, trial_dir=str(tmp_path / "trial_0"))
    out = write_report(study, tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Side by side: tiny, trial 0 (128 examples, seed 0) against the base" in md
    assert (
        "Base wrong, fine-tuned right: 3 example(s)." in md
        and "Base right, fine-tuned wrong: 2 example(s)." in md
    )
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_report_package_never_imports_the_sweep() -> None:
    import ast
    from pathlib import Path

    import mathgpt.report

    for path in Path(mathgpt.report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(n.startswith("mathgpt.sweep") for n in names), path


def test_format_learning_is_flagged(tmp_path) -> None:
    study = optuna.create_study(study_name="fmt", direction="maximize")
    study.set_user_attr("bases", {"tiny": base_point() | {"answered": [1] * 40 + [0] * 120}})
    study.set_user_attr("eval_problems", PROBLEMS)
    for seed in (0, 1):
        add(study, 64, seed, 1e-3, vector(30, 2, seed), 0.5)  # answered 150 of 160
    md = (write_report(study, tmp_path) / "report.md").read_text()
    assert (
        "the answered rate moves 40.0% → 100.0%, so part of the change may be format rather than math" in md
    )
