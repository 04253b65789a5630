"""Secrets never written: a tracked trial run and a study run with W&B and HF tokens in the environment."""

from __future__ import annotations

import os

import pytest

from mathgpt.config import parse_config
from mathgpt.run import run_experiment
from mathgpt.track_study import log_study
from tests.conftest import tiny_run_config
from tests.test_track_study import make_study, matrix_for
from tests.wandb_offline import read_offline_run

# Fake values shaped like the real ones (a W&B key is 40 hex characters, a HF token hf_ + 34 letters).
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
HF_TOKEN = "hf_" + "SecretTokenThatMustNeverBeWritten0"


@pytest.mark.slow
def test_tokens_in_the_environment_are_never_written(tiny_model_dir, tmp_path, monkeypatch, capfd):
    home = tmp_path / "home"  # wandb's settings, cache and artifact staging land here: scanned too
    for var, sub in (("HOME", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", HF_TOKEN)
    monkeypatch.setenv("WANDB_MODE", "offline")

    runs = tmp_path / "runs" / "demo"
    raw = tiny_run_config(tiny_model_dir, eval={"base": True}, tracking={"mode": "offline", "group": "demo"})
    run_experiment(parse_config(raw), runs / "trial_0")
    report = tmp_path / "analysis" / "demo"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# demo\n")
    study = make_study(runs)
    log_study(
        study,
        project="mathgpt-test",
        mode="offline",
        out_dir=runs,
        report_dir=report,
        matrix=matrix_for(study),
    )
    for run_dir in runs.rglob("offline-run-*"):  # wandb's service may still be writing: wait for each run
        assert read_offline_run(run_dir, wait_s=30)["complete"]

    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "debug-internal.log" for p in files)
    out, err = capfd.readouterr()
    for secret in (WANDB_KEY, HF_TOKEN):
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"secret written to {leaks}"
        assert secret not in out and secret not in err
    assert os.environ["WANDB_API_KEY"] == WANDB_KEY  # the test really ran with the secrets set
