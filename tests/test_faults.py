"""Fault injection (issue 20): kills, torn journal tails, read-only folders, racing sweeps, changed configs.

Each test breaks a study the way a crashing machine or a careless user would and then asserts that nothing
finished is lost: every finished trial and base point is still readable by the report and the next sweep.
Most use the stand-in run child of tests/test_sweep_study.py (well under a second per run); the SIGKILL ones
run the real `mathgpt run` on the tiny model of tests/conftest.py. Marked ``faults``; plain ``pytest`` runs
them (CI does).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import mathgpt.sweep as sw
from mathgpt.storage import open_study, resolve_storage
from tests.test_sweep_study import fake_runs, write_study  # noqa: F401 - fake_runs is a fixture

pytestmark = pytest.mark.faults


def journal_lines(path: Path) -> list[dict]:
    """Every record of a journal; raises on a torn or fused line anywhere but a torn last one."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def finished(study: optuna.Study) -> set[tuple]:
    return {
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
    }


# ------------------------------------------------------------------------------------ torn journal tail


@pytest.mark.usefixtures("fake_runs")
@pytest.mark.parametrize("cut", [1, 25, 200])
def test_resume_on_a_torn_journal_tail_keeps_the_study_readable(tmp_path, monkeypatch, cut):
    """Issue 20 #2: a journal whose last record was cut mid-append (the writer killed) is repaired, not fused."""
    path = write_study(tmp_path, [0, 1])
    runs = tmp_path / "runs"
    study = sw.run_sweep(path, output_dir=runs, report=False)
    done_before = finished(study)
    assert len(done_before) == 4
    journal = runs / "s" / "journal.log"
    data = journal.read_bytes()
    journal.write_bytes(data[:-cut])  # a crash mid-append: the last record is cut short
    survived = finished(open_study("s", runs_dir=runs))  # the reader skips the torn record
    monkeypatch.setattr(sw.heartbeat, "pid_alive", lambda pid: False)  # the writer was killed
    resumed = sw.run_sweep(path, output_dir=runs, report=False)
    assert finished(resumed) == done_before  # the torn trial ran again; nothing finished is lost
    assert survived <= finished(resumed)
    journal_lines(journal)  # every line parses: the append did not fuse with the torn bytes
    again = open_study("s", runs_dir=runs)
    assert finished(again) == done_before and len(again.user_attrs["bases"]) == 2


def test_an_append_after_a_torn_tail_starts_on_a_clean_line(tmp_path):
    """The repair itself: a partial record is dropped; a complete one that lost only its newline is kept."""
    store, where = resolve_storage("s", None, tmp_path)
    study = optuna.create_study(study_name="s", storage=store)
    study.set_user_attr("a", 1)
    journal = Path(where)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 10, "study_id": 0, "user')  # a writer killed mid-record
    store, _ = resolve_storage("s", None, tmp_path)
    optuna.load_study(study_name="s", storage=store).set_user_attr("b", 2)
    journal_lines(journal)
    journal.write_bytes(journal.read_bytes()[:-1])  # only the newline of a complete record is lost
    store, _ = resolve_storage("s", None, tmp_path)
    optuna.load_study(study_name="s", storage=store).set_user_attr("c", 3)
    attrs = open_study("s", runs_dir=tmp_path).user_attrs
    assert attrs == {"a": 1, "b": 2, "c": 3}
    journal_lines(journal)


def test_a_writer_killed_mid_append_is_repaired_by_the_next_one(tmp_path):
    """A real process dies by SIGKILL half-way through writing a record; the next sweep write repairs it."""
    store, where = resolve_storage("s", None, tmp_path)
    optuna.create_study(study_name="s", storage=store).set_user_attr("a", 1)
    script = (
        "import os, signal, sys\n"
        "f = open(sys.argv[1], 'ab', buffering=0)\n"
        'f.write(b\'{"op_code": 9, "study_id": 0, "user_attr": {"half\')\n'
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script, where], check=False)
    assert child.returncode == -signal.SIGKILL
    store, _ = resolve_storage("s", None, tmp_path)
    optuna.load_study(study_name="s", storage=store).set_user_attr("b", 2)
    assert open_study("s", runs_dir=tmp_path).user_attrs == {"a": 1, "b": 2}
    journal_lines(Path(where))


# --------------------------------------------------------------------------- a changed config on resume


@pytest.mark.usefixtures("fake_runs")
def test_resuming_with_a_changed_config_is_refused_before_any_trial(tmp_path, capsys):
    """Issue 20 #10: a new eval_size was silently ignored; a new grid left a FAIL trial without params."""
    import yaml

    from mathgpt.cli import main

    path = write_study(tmp_path, [0])
    runs = tmp_path / "runs"
    argv = ["sweep", str(path), "--output-dir", str(runs), "--no-report"]
    assert main(argv) == 0
    journal = runs / "s" / "journal.log"
    done, size = finished(open_study("s", runs_dir=runs)), journal.stat().st_size
    base = tmp_path / "base.yaml"
    original_base, original_sweep = base.read_text(), path.read_text()

    raw = yaml.safe_load(original_base)
    raw["data"]["eval_size"] = 6
    base.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "changed" in err and "data.eval_size: 10 -> 6" in err and "\n" not in err, err
    base.write_text(original_base)

    spec = yaml.safe_load(original_sweep)
    spec["params"]["model"]["choices"].append("/fake/c")
    path.write_text(yaml.safe_dump(spec))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "params.model.choices" in err and "\n" not in err, err
    assert journal.stat().st_size == size  # nothing was written: no trial, no attr

    spec = yaml.safe_load(original_sweep)
    spec["timeout_s"] = 60  # how long and how many more are not what is run: allowed
    path.write_text(yaml.safe_dump(spec))
    assert main([*argv, "--n-trials", "2"]) == 0
    assert finished(open_study("s", runs_dir=runs)) == done


# ------------------------------------------------------------------------------------- two sweeps at once


@pytest.mark.usefixtures("fake_runs")
def test_two_sweeps_started_together_evaluate_the_base_once(tmp_path, monkeypatch):
    """Issue 20 #11: both evaluated the base into one folder: two point-0 lines, every problem twice."""
    import threading
    import time

    slow_start = sw.trial.start_run

    def slow_base(raw: dict, run_dir: Path) -> subprocess.Popen:
        if raw["eval"]["base"]:
            time.sleep(1.5)  # a base evaluation takes a while: the second sweep arrives meanwhile
        return slow_start(raw, run_dir)

    monkeypatch.setattr(sw.trial, "start_run", slow_base)
    path = write_study(tmp_path, [0, 1], params={"lr": {"key": "train.learning_rate", "type": "categorical",
                                                        "choices": [1e-3]}})  # fmt: skip
    runs = tmp_path / "runs"
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            sw.run_sweep(path, output_dir=runs, report=False)
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    base = runs / "s" / "base"
    points = [json.loads(ln) for ln in (base / "epochs.jsonl").read_text().splitlines()]
    assert [p["point"] for p in points] == [0]
    ids = [json.loads(ln)["id"] for ln in (base / "predictions.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 10
    study = open_study("s", runs_dir=runs)
    assert len(finished(study)) == 2 and list(study.user_attrs["bases"]) == ["/fake/a"]
