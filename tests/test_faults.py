"""Fault injection (issue 20): kills, torn journal tails, read-only folders, racing sweeps, changed configs.

Each test breaks a study the way a crashing machine or a careless user would and then asserts that nothing
finished is lost: every finished trial and base point is still readable by the report and the next sweep.
Most use the stand-in run child of tests/test_sweep_study.py (well under a second per run); the SIGKILL ones
run the real `mathgpt run` on the tiny model of tests/conftest.py. Marked ``faults``; plain ``pytest`` runs
them (CI does).
"""

from __future__ import annotations

import json
import os
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

    slow_start = sw.trial.spawn_run

    def slow_base(raw: dict, run_dir: Path) -> subprocess.Popen:
        if raw["eval"]["base"]:
            time.sleep(1.5)  # a base evaluation takes a while: the second sweep arrives meanwhile
        return slow_start(raw, run_dir)

    monkeypatch.setattr(sw.trial, "spawn_run", slow_base)
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


# ------------------------------------------------------------------------------- SIGKILL of the sweep

DRIVER = """
import subprocess, sys
import yaml
import mathgpt.sweep as sw
from mathgpt.cli import main

script = open(sys.argv[1]).read()

def fake_start(raw, run_dir):  # the stand-in run child of tests/test_sweep_study.py, one second slower
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "cfg.yaml").write_text(yaml.safe_dump(raw))
    code = "import time; time.sleep(1.0)\\n" + script
    return subprocess.Popen([sys.executable, "-c", code, str(run_dir / "cfg.yaml"), str(run_dir)],
                            preexec_fn=sw.trial.die_with_parent)

sw.trial.spawn_run = fake_start
sys.exit(main(sys.argv[2:]))
"""


def point_zero_lines(base: Path) -> int:
    path = base / "epochs.jsonl"
    return sum(json.loads(ln)["point"] == 0 for ln in path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.usefixtures("fake_runs")
@pytest.mark.parametrize("when", ["during the second base run", "during the second trial"])
def test_sigkill_of_the_sweep_parent_then_rerun_loses_nothing(tmp_path, when):
    import time

    from tests.conftest import REPO
    from tests.test_sweep_study import FAKE_RUN

    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    (tmp_path / "driver.py").write_text(DRIVER)
    path = write_study(tmp_path, [0])
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "fake_run.py"), "sweep", str(path),
           "--output-dir", str(runs), "--no-report"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mark = runs / "s" / ("base-b" if "base" in when else "trial_1") / "cfg.yaml"
    deadline = time.time() + 60
    while not mark.exists():
        assert parent.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    before = open_study("s", runs_dir=runs)
    kept = {t.number: (t.params, t.value) for t in before.trials if t.state == TrialState.COMPLETE}
    bases = dict(before.user_attrs.get("bases") or {})

    resumed = sw.run_sweep(path, output_dir=runs, report=False)
    trials = {t.number: t for t in resumed.trials}
    for number, (params, value) in kept.items():  # what had finished is kept as it was, not redone
        assert trials[number].state == TrialState.COMPLETE and trials[number].value == value
        assert trials[number].params == params
    assert {b: resumed.user_attrs["bases"][b] for b in bases} == bases
    complete = [t for t in resumed.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model"] for t in complete) == ["/fake/a", "/fake/b"]  # each point once
    assert [point_zero_lines(runs / "s" / b) for b in ("base-a", "base-b")] == [1, 1]
    assert not [t for t in resumed.trials if t.state == TrialState.RUNNING]
    journal_lines(runs / "s" / "journal.log")


@pytest.mark.usefixtures("fake_runs")
def test_sigkill_of_a_run_child_fails_only_its_trial(tmp_path, monkeypatch):
    """The kernel's OOM killer takes one trial's run: the others and the bases stay, the study stays readable."""
    started = sw.trial.spawn_run

    def killed_second_trial(raw: dict, run_dir: Path) -> subprocess.Popen:
        child = started(raw, run_dir)
        if run_dir.name == "trial_1":
            child.send_signal(signal.SIGKILL)
        return child

    monkeypatch.setattr(sw.trial, "spawn_run", killed_second_trial)
    path = write_study(tmp_path, [0, 1])
    runs = tmp_path / "runs"
    study = sw.run_sweep(path, output_dir=runs, report=False)
    states = {t.number: t.state for t in study.trials}
    assert states[1] != TrialState.COMPLETE and study.trials[1].user_attrs.get("fail_reason")
    done = finished(study)
    assert len(done) >= 3 and len(study.user_attrs["bases"]) == 2
    monkeypatch.setattr(sw.trial, "spawn_run", started)
    resumed = sw.run_sweep(path, output_dir=runs, report=False)
    assert done <= finished(resumed)
    journal_lines(runs / "s" / "journal.log")


@pytest.mark.usefixtures("fake_runs")
def test_an_unwritable_trial_dir_fails_only_that_trial(tmp_path):
    """A trial folder that cannot be created (a file in its place; root ignores read-only modes)."""
    path = write_study(tmp_path, [0, 1])
    runs = tmp_path / "runs"
    (runs / "s").mkdir(parents=True)
    (runs / "s" / "trial_1").write_text("in the way")
    study = sw.run_sweep(path, output_dir=runs, report=False)
    trial = study.trials[1]
    assert trial.state == TrialState.FAIL and "trial_1" in trial.user_attrs["fail_reason"]
    assert len(finished(study)) == 3
    assert (runs / "s" / "trial_1").read_text() == "in the way"


def test_sigkill_of_a_real_run_child_mid_training_keeps_the_rest(tmp_path, tiny_model_dir, monkeypatch):
    """The same on the tiny model: `mathgpt run` is killed once it has written its config and is training."""
    import threading
    import time

    from tests.test_sweep import write_sweep

    started = sw.trial.spawn_run

    def kill_once_training(raw: dict, run_dir: Path) -> subprocess.Popen:
        child = started(raw, run_dir)
        if run_dir.name == "trial_0":

            def killer() -> None:
                deadline = time.time() + 120
                while not (run_dir / "config.yaml").exists() and child.poll() is None:
                    assert time.time() < deadline
                    time.sleep(0.05)
                child.send_signal(signal.SIGKILL)

            threading.Thread(target=killer, daemon=True).start()
        return child

    monkeypatch.setattr(sw.trial, "spawn_run", kill_once_training)
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8]}}
    path = write_sweep(tmp_path, tiny_model_dir, params=params, seeds=[0, 1])
    runs = tmp_path / "runs"
    study = sw.run_sweep(path, output_dir=runs, report=False)
    killed = study.trials[0]
    assert killed.state != TrialState.COMPLETE and killed.user_attrs.get("fail_reason")
    done = finished(study)
    assert len(done) >= 1 and "bases" in study.user_attrs
    assert point_zero_lines(runs / "t" / "base") == 1
    journal_lines(runs / "t" / "journal.log")
    assert done <= finished(open_study("t", runs_dir=runs))
