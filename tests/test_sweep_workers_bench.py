"""bench/sweep_workers.py writes sweeps that the project's own loader accepts (no trial is run here)."""

from __future__ import annotations

from bench.sweep_workers import write_smollm2_study, write_study
from mathgpt.sweep.spec import load_sweep


def test_both_bench_studies_load_as_four_point_grids(tmp_path, tiny_model_dir):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "smol").mkdir()
    tiny, _, _ = load_sweep(write_study(tmp_path / "tiny", tiny_model_dir, 4, 32))
    smol, _, base = load_sweep(write_smollm2_study(tmp_path / "smol", 4, 32))
    for sweep in (tiny, smol):
        assert sweep.params["lr"].choices == [0.001, 0.002, 0.003, 0.004]
        assert sweep.sampler.type == "grid"
    assert base["model"]["name"] == "embedded:smollm2-135m-instruct"
    assert base["data"]["train_size"] == 32 and base["train"]["batch_size"] == 4  # overrides applied
