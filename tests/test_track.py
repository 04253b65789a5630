"""Tracking: offline by default, and online that cannot work degrades to offline with one line, fast."""

from __future__ import annotations

import time

from mathgpt.track import NullTracker, resolve_mode, start_run


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
    assert time.perf_counter() - t < 5
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
