"""The compute arithmetic behind bench/sweep_compute.py's one-run data-size curve."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bench.sweep_compute import data_curve_share, savings, trial_costs
from mathgpt.config import ConfigError
from tests import records


def test_one_run_curve_trains_the_largest_prefix_once():
    rows = [10] * 256
    s = data_curve_share(rows, [32, 64, 128, 256])
    assert (s["one_run_examples"], s["separate_examples"]) == (256, 480)
    assert s["share"] == pytest.approx(256 / 480)
    longer_first = [20] * 32 + [10] * 224  # rows every separate run repeats weigh more: the share falls
    assert data_curve_share(longer_first, [32, 64, 128, 256])["share"] == pytest.approx(2880 / 6080)
    with pytest.raises(ConfigError):
        data_curve_share(rows[:100], [32, 128])


def test_at_examples_trial_is_costed_against_separate_runs_per_size():
    points = [
        records.point([1], point=0, epoch=0.0, train_examples=0, train_tokens=0, train_wall_s=0, eval_wall_s=1.0),
        *[
            records.point([1], point=i + 1, epoch=k / 256, train_examples=k, train_tokens=100 * k,
                          train_wall_s=k / 10, eval_wall_s=1.0)
            for i, k in enumerate([32, 64, 128, 256])
        ],
    ]  # fmt: skip
    attrs = {"points": points, "overrides": {"eval.at_examples": [32, 64, 128, 256], "data.train_size": 256}}
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=attrs)
    (row,) = trial_costs([trial])
    assert row.train_tokens == 25600 and row.eval_s == 4.0 and row.epochs_run == 1
    s = savings([row])
    assert s["separate_runs_tokens"] == 100 * 480 and s["actual_tokens"] == 25600
    assert s["saved_total"] == pytest.approx(1 - 256 / 480)


def test_a_curve_from_the_sweeps_own_at_examples_is_costed_from_its_points():
    """The sweep's fixed eval.at_examples is not in a trial's overrides: the points inside the epoch say it."""
    points = [
        records.point([1], point=i + 1, epoch=k / 128, train_examples=k, train_tokens=100 * k,
                      train_wall_s=k / 10, eval_wall_s=1.0)
        for i, k in enumerate([32, 64, 128])
    ]  # fmt: skip
    attrs = {"points": points, "overrides": {"data.train_size": 128, "train.epochs": 1}}
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=attrs)
    s = savings(trial_costs([trial]))
    assert s["separate_runs_tokens"] == 100 * (32 + 64 + 128) and s["actual_tokens"] == 100 * 128
