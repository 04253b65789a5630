"""Every shipped sweep and run config validates: a typo in one is a failing test, not a failed night run."""

from __future__ import annotations

import pytest

from mathgpt.config import load_config
from mathgpt.sweep.spec import load_sweep
from tests.conftest import REPO

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
N_SWEEPS, N_EXPERIMENTS = 6, 5


def test_the_shipped_configs_are_all_found():
    assert (len(SWEEPS), len(EXPERIMENTS)) == (N_SWEEPS, N_EXPERIMENTS)  # a new file: raise the count


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_validates_with_its_base_config(path):
    sweep, _, base = load_sweep(path)
    assert sweep.study and base["model"]["name"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_validates(path):
    assert load_config(path).name
