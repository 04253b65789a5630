"""Tracking: offline by default, and online that cannot work degrades to offline with one line, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mathgpt.config import parse_config
from mathgpt.record import Point
from mathgpt.run import run_experiment
from mathgpt.track import (
    STEP_METRICS,
    NullTracker,
    eval_metrics,
    resolve_mode,
    start_run,
    study_run_id,
)
from tests import records
from tests.conftest import tiny_run_config
from tests.wandb_offline import read_offline_run


def test_default_mode_is_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled"
    assert resolve_mode("offline") == "offline"  # the config wins over the environment


def test_online_without_api_key_falls_back_to_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert resolve_mode("online") == "offline"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no API key" in err[0]


def test_online_with_unreachable_server_falls_back_quickly(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    t = time.perf_counter()
    assert resolve_mode("online") == "offline"
    assert time.perf_counter() - t < 30  # the probe's 3 s timeout, not W&B's own minutes of retries
    assert "unreachable" in capsys.readouterr().err


def test_disabled_is_a_null_tracker(tmp_path):
    tracker = start_run(project="p", name="n", group=None, config={}, mode="disabled", dir=tmp_path)
    assert isinstance(tracker, NullTracker)
    tracker.log({"a": 1})
    tracker.log_table("t", ["a"], [[1]])
    tracker.finish()


def test_offline_run_writes_files_to_sync_later(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = start_run(
        project="mathgpt-test", name="t", group="g", config={"lr": 1e-3}, mode="offline", dir=tmp_path
    )
    tracker.log({"eval/accuracy": 0.5})
    tracker.log_table("predictions", ["id", "correct"], [["a", True], ["b", False]])
    tracker.summary({"final": 0.5})
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def _offline_run(root: Path) -> Path:
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return run_dir


def test_eval_metrics_rates():
    line = records.point([1, 1, 1, 1, 0, 0, 0, 0], ci95=[0.2, 0.8], n_answered=6, n_no_answer=1)
    line |= {"n_ungradable": 1, "strict_accuracy": 0.25, "by_set": {"synthetic": {"accuracy": 0.5, "n": 8}}}
    m = eval_metrics(Point.model_validate(line))
    assert m["answered_rate"] == 0.75 and m["no_answer_rate"] == m["ungradable_rate"] == 0.125
    assert m["ci95_lo"] == 0.2 and m["strict_accuracy"] == 0.25 and m["synthetic/accuracy"] == 0.5
    assert m["truncated_rate"] == 0.0 and "select/accuracy" not in m  # no selection slice: no select/*
    line["select"] = records.select([1, 0])
    assert eval_metrics(Point.model_validate(line))["select/accuracy"] == 0.5


@pytest.mark.slow
def test_offline_trial_run_reads_back_with_step_metric_axes(tiny_model_dir, tmp_path):
    """A tiny run logged offline, read back from its .wandb file: every chart row carries its own x-axis."""
    raw = tiny_run_config(
        tiny_model_dir,
        train={"epochs": 2},
        eval={"base": True},
        tracking={"mode": "offline", "group": "demo-study", "project": "mathgpt-test"},
    )
    out = tmp_path / "run"
    metrics = run_experiment(parse_config(raw), out)
    run = read_offline_run(_offline_run(out), wait_s=30)
    assert run["complete"]

    assert run["config"]["lora"]["r"] == 4 and run["config"]["n_train"] == 32
    assert run["config"]["study"] == "demo-study"
    assert run["config"]["study_run_id"] == study_run_id("demo-study")
    assert run["metrics"]["train/*"] == "train/step" and run["metrics"]["eval/*"] == "eval/examples_seen"
    assert set(STEP_METRICS) <= set(run["metrics"])

    train_rows = [r for r in run["history"] if "train/loss" in r]
    eval_rows = [r for r in run["history"] if "eval/accuracy" in r]
    assert train_rows and all("train/step" in r and "train/examples_seen" in r for r in train_rows)
    steps = [r["train/step"] for r in train_rows]
    assert steps == sorted(steps) and steps[0] > 0
    # 32 examples, batch 2, logging every 2 steps: step s has seen 2*s examples (within one epoch's length)
    assert all(r["train/examples_seen"] == 2 * r["train/step"] for r in train_rows)

    lines = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert (
        [(r["eval/epoch"], r["eval/examples_seen"]) for r in eval_rows]
        == [(ln["epoch"], ln["train_examples"]) for ln in lines]
        == [(0, 0), (1, 32), (2, 64)]
    )
    for row, ln in zip(eval_rows, lines, strict=True):
        assert row["eval/accuracy"] == ln["accuracy"]
        assert [row["eval/ci95_lo"], row["eval/ci95_hi"]] == ln["ci95"]
    assert run["summary"]["eval/accuracy"]["last"] == metrics["finetuned"]["accuracy"]
    assert run["summary"]["n_train"] == 32
