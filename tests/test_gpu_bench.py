"""bench/gpu_bench.py --tiny: every phase of the GPU benchmark runs on CPU with a tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_bench_tiny_runs_every_phase(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = {x["phase"]: x for x in json.loads((tmp_path / "gpu_bench.json").read_text())}
    assert not [k for k, v in r.items() if "error" in v], r
    for name in ("baseline_hf", "project", "project_no_gc", "project_token_budget"):
        assert r[name]["steps_timed"] == 3 and r[name]["tokens_timed"] > 0, r[name]
    assert r["baseline_hf"]["gradient_checkpointing"] and not r["project_no_gc"]["gradient_checkpointing"]
    assert r["project_token_budget"]["rows_per_step"] != 8
    # Liger is CUDA-only: recorded as skipped on CPU, never silently counted as measured.
    assert "skipped" in r["project_liger"] and r["project_all"]["liger"] is False
    static, drop = r["static_b64"], r["drop_b64"]
    assert static["lengths_as_forced"] and drop["lengths_as_forced"] and r["drop_b24"]["lengths_as_forced"]
    assert static["useful_tokens"] == drop["useful_tokens"]
    assert drop["useful_fraction"] == 1.0 > static["useful_fraction"]
    assert r["fixed_eager"]["tokens_per_s"] > 0 and r["fixed_compiled"]["tokens_per_s"] > 0
    assert set(r["summary"]["train_x_baseline_hf"]) >= {"project", "project_no_gc", "project_token_budget"}
