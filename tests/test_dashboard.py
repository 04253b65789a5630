"""`mathgpt dashboard`: optuna-dashboard on loopback over a study's journal, read back over HTTP and a browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from mathgpt.cli import main
from mathgpt.dashboard import make_dashboard, start_in_thread
from tests.conftest import REPO

ACCURACIES = [0.25, 0.5, 0.625]


def make_study(runs: Path, name: str = "demo") -> Path:
    """A journal study laid out as a sweep leaves it: three finished trials with the attrs a person reads."""
    path = runs / name / "journal.log"
    path.parent.mkdir(parents=True)
    store = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize")
    for i, acc in enumerate(ACCURACIES):
        trial = study.ask({"data.train_size": optuna.distributions.IntDistribution(16, 256, log=True)})
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("ci95", [acc - 0.1, acc + 0.1])
        trial.set_user_attr("trial_dir", str(runs / name / f"trial_{i}"))
        study.tell(trial, acc)
    return path


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_dashboard_serves_the_study_over_http(tmp_path):
    make_study(tmp_path)
    server, url = make_dashboard("demo", runs_dir=tmp_path, port=0)
    start_in_thread(server)
    try:
        root = url.split("/dashboard")[0]
        assert url.startswith("http://127.0.0.1:")
        studies = get_json(f"{root}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["demo"]
        detail = get_json(f"{root}/api/studies/{studies[0]['study_id']}")
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["values"][0] for t in trials] == ACCURACIES
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
        assert [a["accuracy"] for a in attrs] == [str(x) for x in ACCURACIES]  # the API sends strings
        assert all(a["trial_dir"].endswith(f"trial_{i}") for i, a in enumerate(attrs))
        with urllib.request.urlopen(url, timeout=10) as resp:  # the page itself (JS app) is served
            assert resp.status == 200 and b"<script" in resp.read()
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_study_and_missing_journal_are_one_line(tmp_path, capsys):
    make_study(tmp_path)
    assert main(["dashboard", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study" in err[0]
    assert main(["dashboard", "demo", "--runs-dir", str(tmp_path / "elsewhere")]) == 2
    assert "no study journal" in capsys.readouterr().err


def _start_cli(tmp_path: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mathgpt",
            "dashboard",
            "demo",
            "--runs-dir",
            str(tmp_path),
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job inherits SIGINT ignored (e.g. `bash .ci/run &`), and Python then installs
        # no KeyboardInterrupt handler; Ctrl-C is what this tests, so the child gets the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, line + proc.stderr.read()
    return proc, re.search(r"http://\S+", line).group(0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_prints_url_and_stops_cleanly_on_ctrl_c(tmp_path):
    make_study(tmp_path)
    proc, url = _start_cli(tmp_path, _free_port())
    try:
        assert (
            get_json(url.split("/dashboard")[0] + "/api/studies")["study_summaries"][0]["study_name"]
            == "demo"
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0
    assert err.strip().splitlines() == ["dashboard stopped"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/setup.sh)")
def test_headless_chromium_lists_the_trials(tmp_path):
    """The JS app renders the trials: the DOM after rendering lists each trial and its attrs; a PNG is taken."""
    make_study(tmp_path)
    proc, url = _start_cli(tmp_path, _free_port())
    # virtual time lets the app's fetches and rendering finish before the dump (~3 s here, measured under load)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=30000",
    ]
    png = tmp_path / "dashboard.png"
    try:
        dom = subprocess.run(
            ["chromium", *flags, "--dump-dom", url + "/trials"], capture_output=True, text=True, timeout=120
        ).stdout
        shot = ["chromium", *flags, "--window-size=1400,900", f"--screenshot={png}", url + "/trials"]
        subprocess.run(shot, capture_output=True, timeout=120)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    text = re.sub(
        r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", dom, flags=re.S)))
    )
    assert "demo (id=0)" in text
    for i in range(len(ACCURACIES)):
        assert f"Trial {i} Complete" in text, text[:500]
    assert (
        f"Value {ACCURACIES[0]}" in text and "accuracy 0.25" in text and "trial_0" in text
    )  # trial 0 opened
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_unexpected_failure_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    """docs/CONTRACTS.md: any failure other than bad input is one line on stderr and exit code 1."""
    import mathgpt.dashboard

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(mathgpt.dashboard, "serve", boom)
    monkeypatch.delenv("MATHGPT_TRACEBACK", raising=False)
    assert main(["dashboard", "demo", "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: disk on fire" in err[0]
    monkeypatch.setenv("MATHGPT_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["dashboard", "demo", "--runs-dir", str(tmp_path)])


def test_dashboard_on_an_rdb_url(tmp_path):
    """An RDB storage is passed as its URL (SQLite here; PostgreSQL takes the same path)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="rdb", storage=url, direction="maximize")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    server, page = make_dashboard("rdb", storage=url, port=0)
    start_in_thread(server)
    try:
        root = page.split("/dashboard")[0]
        (summary,) = get_json(f"{root}/api/studies")["study_summaries"]
        detail = get_json(f"{root}/api/studies/{summary['study_id']}")
        assert summary["study_name"] == "rdb" and len(detail["trials"]) == 2
        assert detail["trials"][0]["values"] == [1.0]
    finally:
        server.shutdown()
        server.server_close()
