"""Sweeps: the YAML, the bookkeeping that makes a study resumable, and end-to-end studies on the tiny model.

The end-to-end tests run real `mathgpt run` subprocesses (each ~10 s here, mostly importing torch), so they
are marked slow; the PostgreSQL one needs $MATHGPT_TEST_PG_URL (.ci/start_postgres.sh) and fails in CI
without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import mathgpt.sweep as sw
import mathgpt.sweep.heartbeat
import mathgpt.sweep.slices
import mathgpt.sweep.trial  # noqa: F401 - sw.trial, sw.slices, sw.heartbeat
from mathgpt.config import ConfigError
from mathgpt.record import KNOBS, ids_fingerprint
from tests import records
from tests.conftest import REPO, tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
FP20 = ids_fingerprint([str(i) for i in range(20)])

GRID = {"size": {"key": "data.train_size", "type": "categorical", "choices": [16, 32]}}


def write_sweep(tmp_path: Path, model_dir: Path | str, run: dict | None = None, **fields) -> Path:
    """A sweep YAML next to its base run config (tiny model, 8 problems, 2 epochs)."""
    run = run or tiny_run_config(Path(model_dir), train={"epochs": 2, "batch_size": 1, "min_steps": 4})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(run))
    spec = {
        "study": "t",
        "base_config": "base.yaml",
        "sampler": {"type": "grid"},
        "timeout_s": 600,
        "params": GRID,
    }
    spec.update(fields)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ------------------------------------------------------------------------------------------- sweep YAML


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"sampler": {"type": "grid", "seeds": 1}}, "unknown key 'sampler.seeds'"),
        (
            {"params": {"lr": {"key": "train.learning_rate", "type": "log_float", "low": 0, "high": 1e-3}}},
            "0 < low",
        ),
        (
            {"params": {"lr": {"key": "train.learning_rate", "type": "float", "low": 1e-4, "high": 1e-3}}},
            "categorical",
        ),
        ({"sampler": {"type": "tpe"}}, "needs 'n_trials'"),
        (
            {"params": {"r": {"key": "lora.r", "type": "categorical", "choices": [0, 4]}}},
            "param 'r': 'lora.r'",
        ),
        (
            {"params": {"r": {"key": "lora.rank", "type": "categorical", "choices": [4]}}},
            "unknown key 'lora.rank'",
        ),
        ({"overrides": {"train.epochs": -1}}, "'train.epochs'"),
        ({"base_config": "missing.yaml"}, "missing.yaml: no such file"),
        (
            {"params": {"r": {"key": "lora.r", "type": "int", "low": 2, "high": 8, "choices": [4]}}},
            "no choices",
        ),
    ],
)
def test_bad_sweep_yaml_is_one_line(tmp_path, fields, message):
    path = write_sweep(tmp_path, "/nonexistent-model", **fields)
    with pytest.raises(ConfigError) as err:
        sw.load_sweep(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_trial_config_ties_alpha_and_disables_base(tmp_path):
    sweep, _, base_raw = sw.load_sweep(write_sweep(tmp_path, "/m", overrides={"train.learning_rate": 5e-4}))
    raw = sw.trial_config(base_raw, {"data.train_size": 32, "lora.r": 8}, "t-t3", "t")
    assert raw["eval"]["base"] is False and raw["eval"]["every_epoch"] is True
    assert raw["name"] == "t-t3" and raw["tracking"]["group"] == "t"
    applied = sw.applied_overrides(raw, {"data.train_size": 32, "lora.r": 8})
    assert set(applied) == {knob.key for knob in KNOBS}  # every knob, by its config key
    assert {k: applied[k] for k in ("data.train_size", "lora.r", "lora.alpha", "train.learning_rate")} == {
        "data.train_size": 32,
        "lora.r": 8,
        "lora.alpha": 16.0,  # resolved: alpha = 2r
        "train.learning_rate": 5e-4,
    }
    assert applied["seed"] == 0 and applied["model.name"] == "/m" and applied["data.mix.fraction"] == 0.0


def test_run_name_carries_trial_and_params_as_a_plain_name():
    name = sw.run_name("demo", 3, {"size": 64, "lr": 0.00012345, "train": "mathinstruct/gsm:x"})
    assert name == "demo-t3-size=64-lr=0.000123-train=mathinstruct_gsm_x"


def test_suggest_maps_each_param_to_its_key():
    params = {
        "n": sw.ParamSpec(key="data.train_size", type="log_int", low=16, high=4096),
        "lr": sw.ParamSpec(key="train.learning_rate", type="log_float", low=1e-5, high=5e-4),
        "r": sw.ParamSpec(key="lora.r", type="categorical", choices=[4, 64]),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = sw.suggest(study.ask(), params)
        assert 16 <= values["data.train_size"] <= 4096 and isinstance(values["data.train_size"], int)
        assert 1e-5 <= values["train.learning_rate"] <= 5e-4 and values["lora.r"] in (4, 64)


def test_read_new_points_leaves_a_half_written_line(tmp_path):
    path = tmp_path / "epochs.jsonl"
    assert sw.read_new_points(path, 0) == ([], 0)
    first, second = (json.dumps(records.point([1], point=n)) for n in (1, 2))
    path.write_text(first + "\n" + second[:20])
    points, offset = sw.read_new_points(path, 0)
    assert [p.point for p in points] == [1] and offset == len(first) + 1
    with path.open("a") as f:
        f.write(second[20:] + "\n")
    assert [p.point for p in sw.read_new_points(path, offset)[0]] == [2]


# ------------------------------------------------------------------------------- lost trials and counts


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def grid_study() -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = optuna.storages.InMemoryStorage()
    sampler = optuna.samplers.GridSampler({"size": [16, 32, 64]})
    return optuna.create_study(storage=storage, direction="maximize", sampler=sampler), storage


def test_lost_trial_is_failed_and_requeued_once_with_its_grid_point():
    study, storage = grid_study()
    done = study.ask()
    done.suggest_categorical("size", [16, 32, 64])
    study.tell(done, 0.5)
    lost = study.ask()
    size = lost.suggest_categorical("size", [16, 32, 64])
    lost.set_user_attr("worker", {"host": "h", "pid": dead_pid()})
    alive = study.ask()
    alive.suggest_categorical("size", [16, 32, 64])
    alive.set_user_attr("worker", {"host": "h", "pid": os.getpid()})

    assert sw.retry_lost_trials(study, storage, host="h") == [lost.number]
    assert sw.retry_lost_trials(study, storage, host="h") == []  # already failed: not queued twice
    old = study.trials[lost.number]
    assert (
        old.state == TrialState.FAIL
        and old.user_attrs["lost"]
        and "worker lost" in old.user_attrs["fail_reason"]
    )
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == {"size": size} and retry.user_attrs == {"retry_of": lost.number, "retry_depth": 1}
    assert retry.system_attrs["grid_id"] == old.system_attrs["grid_id"]
    assert study.trials[alive.number].state == TrialState.RUNNING
    # 3 grid points: one done, one running, the lost one's retry still to run.
    size_param = {"size": {"key": "data.train_size", "type": "categorical", "choices": [16, 32, 64]}}
    sweep = sw.SweepConfig(
        study="s", base_config="b", timeout_s=1, sampler={"type": "grid"}, params=size_param
    )
    assert sw.remaining_trials(study, sweep) == 1


def test_silent_trial_on_another_host_is_stale_only_after_grace():
    study, _ = grid_study()
    t = study.ask()
    t.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    t.set_user_attr("heartbeat", time.time())
    frozen = study.trials[0]
    assert not sw.is_stale(frozen, time.time(), host="here", grace_s=60)
    assert sw.is_stale(frozen, time.time() + 61, host="here", grace_s=60)


def test_a_lost_trial_at_the_retry_limit_stays_failed_and_counts():
    study, storage = grid_study()
    lost = study.ask({"size": optuna.distributions.CategoricalDistribution([16, 32, 64])})
    lost.set_user_attr("retry_depth", sw.heartbeat.MAX_RETRY)
    lost.set_user_attr("worker", {"host": "h", "pid": dead_pid()})
    assert sw.retry_lost_trials(study, storage, host="h") == []
    assert not study.get_trials(states=(TrialState.WAITING,)) and sw.counts_as_done(study.trials[0])


def test_the_launcher_queues_each_grid_point_once(tmp_path):
    sweep = sw.SweepConfig(
        study="g", base_config="b", timeout_s=1, sampler={"type": "grid"}, seeds=[0, 1],
        params={"size": {"key": "data.train_size", "type": "categorical", "choices": [16, 32]}},
    )  # fmt: skip
    points = sw.grid_points(sweep)
    assert points == [{"size": 16, "seed": 0}, {"size": 16, "seed": 1}, {"size": 32, "seed": 0},
                      {"size": 32, "seed": 1}]  # fmt: skip
    study = optuna.create_study()
    for _ in range(2):  # a rerun of the launcher queues nothing new
        for params in points:
            study.enqueue_trial(params, skip_if_exists=True)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    study.enqueue_trial(points[0])  # what a second launcher racing the first can do
    first, second = study.ask(), study.ask()
    trials = study.get_trials(deepcopy=False)
    assert not sw.heartbeat.queued_twice(trials[first.number], trials)
    copy = [t for t in trials if t.system_attrs.get("fixed_params") == points[0]][-1]
    assert sw.heartbeat.queued_twice(copy, trials) and second.number != copy.number


def test_a_worker_that_finds_no_queued_point_left_steps_aside_and_stops(tmp_path, monkeypatch):
    # Two workers each counted one trial left; the first popped the last queued point, so the second one's ask
    # made a fresh trial that the grid sampler fills with any point, one already run.
    monkeypatch.setattr(sw.trial, "spawn_run", lambda raw, run_dir: pytest.fail("a run was started"))
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8, 12]}}
    sweep = sw.SweepConfig(study="a", base_config="b", timeout_s=60, sampler={"type": "grid"}, params=params)
    study = optuna.create_study(direction="maximize", sampler=sw.make_sampler(sweep.sampler, sweep))
    study.set_user_attr("bases", {"/m": records.point([0] * 20, point=0, dir="base")})
    for point in sw.grid_points(sweep):
        study.enqueue_trial(point)
    for _ in range(2):  # the other worker's two trials, running
        study.ask()
    objective = sw.Objective(sweep, tiny_run_config(Path("/m"), train={"epochs": 1}), tmp_path, "a", "h")
    study.optimize(objective, n_trials=3, catch=(sw.TrialFailed,))
    extra = study.trials[2:]
    assert len(extra) == 1, "the worker stopped after stepping aside"
    assert extra[0].state == TrialState.FAIL and extra[0].user_attrs["duplicate"]
    assert "no queued point left" in extra[0].user_attrs["fail_reason"] and not sw.counts_as_done(extra[0])


def test_open_study_without_a_journal_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no study journal"):
        sw.open_study("nope", runs_dir=tmp_path)


def test_bench_counts_what_per_epoch_evaluation_and_pruning_saved():
    from bench.sweep_compute import savings, trial_costs

    def trial(state: TrialState, epochs_run: int) -> optuna.trial.FrozenTrial:
        points = [
            records.point([1], point=e, epoch=e, train_tokens=100 * e, train_wall_s=e, eval_wall_s=2.0)
            for e in range(1, epochs_run + 1)
        ]
        attrs = {"points": points, "overrides": {"train.epochs": 3}, "wall_s": 9.0}
        return optuna.trial.create_trial(
            state=state, value=0.5, user_attrs=attrs, intermediate_values={1: 0.5}
        )

    lost = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"lost": True})
    rows = trial_costs([trial(TrialState.COMPLETE, 3), trial(TrialState.PRUNED, 1), lost])
    assert [(r.epochs_run, r.train_tokens, r.eval_s) for r in rows] == [(3, 300, 6.0), (1, 100, 2.0)]
    s = savings(rows)
    # Separate runs of 1, 2 and 3 epochs for both: 2 x 100 x (1 + 2 + 3) = 1200 tokens; to the end: 600.
    assert (s["separate_runs_tokens"], s["to_end_tokens"], s["actual_tokens"]) == (1200, 600, 400)
    assert s["saved_by_per_epoch_eval"] == pytest.approx(0.5) and s["saved_by_pruning"] == pytest.approx(
        200 / 1200
    )
    assert s["saved_total"] == pytest.approx(800 / 1200)


FAKE_RUN = """
import json, sys, time, yaml
sys.path.insert(0, sys.argv[3])
from tests.records import point
cfg = yaml.safe_load(open(sys.argv[1]))
acc = cfg["data"]["train_size"] / 100
with open(sys.argv[2] + "/epochs.jsonl", "a") as f:
    for e in range(1, cfg["train"]["epochs"] + 1):
        correct = [1 if i < 20 * acc else 0 for i in range(20)]
        line = point(correct, point=e, epoch=e, train_examples=10 * e, ids=[str(i) for i in range(20)],
                     train_tokens=10 * e, train_wall_s=0.1 * e, eval_wall_s=0.1, fingerprint=sys.argv[4])
        f.write(json.dumps(line) + "\\n")
        f.flush()
        time.sleep(60)
"""


@pytest.mark.parametrize("pruner", ["median", "wilcoxon"])
def test_pruner_stops_the_child_after_a_bad_epoch(tmp_path, monkeypatch, pruner):
    """A stand-in child (accuracy = train_size / 100, 60 s per epoch) against a finished trial at 0.9."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)

    def fake_start(raw: dict, run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True)
        (run_dir / "cfg.yaml").write_text(yaml.safe_dump(raw))
        cmd = [sys.executable, str(script), str(run_dir / "cfg.yaml"), str(run_dir), str(ROOT), FP20]
        return subprocess.Popen(cmd)

    monkeypatch.setattr(sw.trial, "spawn_run", fake_start)
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [10]}}
    spec = {"type": pruner, "n_startup_trials": 1}
    sweep = sw.SweepConfig(
        study="p", base_config="b", timeout_s=60, pruner=spec, sampler={"type": "grid"}, params=params
    )
    study = optuna.create_study(direction="maximize", pruner=sw.make_pruner(sweep.pruner))
    ids = [str(i) for i in range(20)]
    study.set_user_attr("eval_problems", [{"id": i} for i in ids])
    study.set_user_attr("eval_fingerprint", FP20)
    study.set_user_attr("bases", {"/m": records.point([0] * 20, point=0, dir="base")})
    steps = range(20) if pruner == "wilcoxon" else range(1, 4)
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values=dict.fromkeys(steps, 0.9)))
    base_raw = tiny_run_config(Path("/m"), train={"epochs": 3})

    t0 = time.time()
    study.enqueue_trial({"size": 10, "seed": 0})  # as the launcher queues every grid point
    study.optimize(sw.Objective(sweep, base_raw, tmp_path, "p", "h"), n_trials=1)
    pruned = study.trials[-1]
    assert pruned.state == TrialState.PRUNED and time.time() - t0 < 30  # killed in its first epoch's 60 s
    assert [p["point"] for p in pruned.user_attrs["points"]] == [1] and pruned.user_attrs[
        "train_tokens"
    ] == 10


WRITER_RUN = """
import json, sys
sys.path.insert(0, sys.argv[3])
from mathgpt.evaluate import EvalResult
from mathgpt.scored import Scored, point_line
from tests.records import KNOBS

def recs(prefix, n, ok):
    return [{"id": f"{prefix}{i}", "eval_set": "synthetic:test", "correct": ok, "answered": True,
             "status": "correct" if ok else "wrong", "strict_correct": ok, "truncated": False} for i in range(n)]

report, select = recs("", 20, True), recs("s", 12, False)  # right on the report slice, wrong on selection
scored = Scored(report, select, EvalResult(report + select, 0.0, (0.0, 1.0), 0, 0.0, 0.1, {}))
info = {"train_examples": 10, "optimizer_steps": 1, "train_tokens": 10, "loss": 1.0}
fps = {"eval": sys.argv[4], "select": "fp-sel"}
line = point_line(1, scored, info, n_train=10, fingerprints=fps, train_wall_s=0.1, knobs=KNOBS)
with open(sys.argv[2] + "/epochs.jsonl", "a") as f:
    f.write(json.dumps(line.dump()) + "\\n")
"""


def test_wilcoxon_prunes_on_the_selection_slice_never_the_report_slice(tmp_path, monkeypatch):
    """The line comes from the real writer; its report slice is all right, its selection slice all wrong."""
    script = tmp_path / "writer_run.py"
    script.write_text(WRITER_RUN)

    def fake_start(raw: dict, run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True)
        cmd = [sys.executable, str(script), "-", str(run_dir), str(ROOT), FP20]
        return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})

    monkeypatch.setattr(sw.trial, "spawn_run", fake_start)
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [10]}}
    sweep = sw.SweepConfig(
        study="w", base_config="b", timeout_s=60, pruner={"type": "wilcoxon"}, sampler={"type": "grid"},
        params=params,
    )  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=sw.make_pruner(sweep.pruner))
    study.set_user_attr("eval_problems", [{"id": str(i)} for i in range(20)])
    study.set_user_attr("eval_fingerprint", FP20)
    study.set_user_attr("bases", {"/m": records.point([0] * 20, point=0, dir="base")})
    best = dict.fromkeys(range(12), 1.0)
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values=best))
    base_raw = tiny_run_config(Path("/m"), train={"epochs": 2})
    study.enqueue_trial({"size": 10, "seed": 0})  # as the launcher queues every grid point
    study.optimize(sw.Objective(sweep, base_raw, tmp_path, "w", "h"), n_trials=1)
    trial = study.trials[-1]
    assert trial.intermediate_values == dict.fromkeys(range(12), 0.0), "pruned on the report slice"
    assert trial.state == TrialState.PRUNED


def test_a_run_killed_by_sigkill_is_retried_a_bounded_number_of_times(tmp_path, monkeypatch):
    """The OOM killer's SIGKILL, every time: two retries, each one deeper, then the grid point stays failed."""

    def fake_start(raw: dict, run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True)
        (run_dir / "log.txt").write_text("training  40%|####      | 4/10 [00:02<00:03]\r")
        return subprocess.Popen(
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        )

    monkeypatch.setattr(sw.trial, "spawn_run", fake_start)
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [10]}}
    sweep = sw.SweepConfig(study="k", base_config="b", timeout_s=60, sampler={"type": "grid"}, params=params)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("bases", {"/m": records.point([0] * 20, point=0, dir="base")})
    study.enqueue_trial({"size": 10, "seed": 0})
    objective = sw.Objective(sweep, tiny_run_config(Path("/m"), train={"epochs": 1}), tmp_path, "k", "h")
    study.optimize(objective, n_trials=3, catch=(sw.TrialFailed,))
    trials = study.trials
    assert [t.user_attrs.get("retry_depth", 0) for t in trials] == [0, 1, 2]
    assert [t.user_attrs.get("retry_of") for t in trials] == [None, 0, 1]
    assert all(t.state == TrialState.FAIL and t.params == {"size": 10, "seed": 0} for t in trials)
    reasons = [t.user_attrs["fail_reason"] for t in trials]
    assert reasons[:2] == [f"killed by SIGKILL (out of memory?); queued again (retry {n})" for n in (1, 2)]
    assert reasons[2] == "killed by SIGKILL (out of memory?)"  # at the limit: not queued again
    assert [sw.counts_as_done(t) for t in trials] == [False, False, True]
    assert not study.get_trials(states=(TrialState.WAITING,))


# ----------------------------------------------------------------------------------- end to end (slow)


def sweep_cmd(sweep_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mathgpt",
        "sweep",
        str(sweep_path),
        "--output-dir",
        str(out),
        "--no-report",
        *extra,
    ]


def run_cli(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_grid_study_records_every_epoch_and_the_base_point(tmp_path, tiny_model_dir):
    study = sw.run_sweep(write_sweep(tmp_path, tiny_model_dir), output_dir=tmp_path / "runs", report=False)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["size"] for t in trials) == [16, 32]
    (model,) = study.user_attrs["bases"]
    base = study.user_attrs["bases"][model]
    assert base["n_eval"] == 8 and len(base["correct"]) == 8 and "ids" not in base
    problems = study.user_attrs["eval_problems"]
    assert len(problems) == 8 and all(p["eval_set"] == "synthetic:test" for p in problems)
    assert study.user_attrs["eval_fingerprint"] == base["fingerprint"]
    assert Path(base["dir"], "epochs.jsonl").is_file() and Path(base["dir"]).name == "base"
    for t in trials:
        epochs = t.user_attrs["points"]
        assert [e["epoch"] for e in epochs] == [1, 2] and all("ids" not in e for e in epochs)
        assert all(e["fingerprint"] == base["fingerprint"] for e in epochs)
        assert t.user_attrs["overrides"]["seed"] == t.params["seed"] == 0
        assert t.intermediate_values == {1: epochs[0]["accuracy"], 2: epochs[1]["accuracy"]}
        assert t.value == epochs[1]["accuracy"]
        assert t.user_attrs["overrides"]["data.train_size"] == t.params["size"]
        assert t.user_attrs["train_tokens"] == epochs[1]["train_tokens"] > epochs[0]["train_tokens"] > 0
        assert Path(t.user_attrs["trial_dir"], "adapter").is_dir()
    assert study.user_attrs["output_dir"] == str((tmp_path / "runs" / "t").resolve())


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, tiny_model_dir):
    # A pool too small for the size fails in the run, not at load_sweep (which refuses unknown names up front).
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8, 100_000]}}
    run = tiny_run_config(tiny_model_dir, train={"epochs": 1, "batch_size": 1, "min_steps": 4})
    path = write_sweep(tmp_path, tiny_model_dir, run=run, params=params)
    study = sw.run_sweep(path, output_dir=tmp_path / "runs", report=False)

    by_size = {t.params["size"]: t for t in study.get_trials()}
    bad, good = by_size[100_000], by_size[8]
    assert bad.state == TrialState.FAIL and "100000" in bad.user_attrs["fail_reason"]
    assert good.state == TrialState.COMPLETE and good.value is not None


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_resumes_the_study(tmp_path, tiny_model_dir):
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8, 12, 16]}}
    path = write_sweep(tmp_path, tiny_model_dir, params=params)
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        sweep_cmd(path, out), cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 240
    try:
        while True:  # wait for one finished trial and the next one training in its child process
            assert time.time() < deadline and worker.poll() is None, (
                "the sweep ended before it could be killed"
            )
            if (out / "t" / "journal.log").is_file():
                trials = sw.open_study("t", runs_dir=out).get_trials()
                done = [t for t in trials if t.state == TrialState.COMPLETE]
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if done and running and (out / "t" / f"trial_{running[0].number}" / "config.yaml").is_file():
                    break
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    before = {t.number: (t.value, t.user_attrs["points"]) for t in done}
    killed = running[0]

    result = run_cli(sweep_cmd(path, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"re-queued trials lost by a dead worker: [{killed.number}]" in result.stdout

    study = sw.open_study("t", runs_dir=out)
    trials = study.get_trials()
    for number, (value, epochs) in before.items():
        assert trials[number].value == value and trials[number].user_attrs["points"] == epochs
    assert trials[killed.number].state == TrialState.FAIL and trials[killed.number].user_attrs["lost"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["size"] for t in complete) == [8, 12, 16]


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(tmp_path, tiny_model_dir):
    url = os.environ.get("MATHGPT_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail('CI must provide MATHGPT_TEST_PG_URL (eval "$(.ci/start_postgres.sh)")')
        pytest.skip("MATHGPT_TEST_PG_URL not set (run .ci/start_postgres.sh)")
    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8, 12, 16, 20]}}
    run = tiny_run_config(tiny_model_dir, train={"epochs": 1, "batch_size": 1, "min_steps": 4})
    path = write_sweep(tmp_path, tiny_model_dir, run=run, params=params)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            sweep_cmd(path, tmp_path / f"w{i}", "--storage", url, "--study", name),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=300)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-2000:] for log in logs)
        study = sw.open_study(name, storage=url)
        trials = study.get_trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.params["size"] for t in complete) == [8, 12, 16, 20]
        # Two launchers starting together can both queue the grid (enqueue_trial's documented race): a copy that a
        # worker picks steps aside as a duplicate, and a copy nobody picked stays WAITING, without params.
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        assert all(t.system_attrs["fixed_params"]["size"] in (8, 12, 16, 20) for t in waiting)
        ran = [t for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get("duplicate")]
        assert sorted(t.params["size"] for t in ran) == [8, 12, 16, 20]  # no grid point ran twice
    finally:
        optuna.delete_study(study_name=name, storage=sw.rdb_url(url))


@pytest.mark.slow
def test_two_local_workers_split_the_grid_and_the_cores(tmp_path, tiny_model_dir):
    from mathgpt.sweep.workers import threads_per_worker

    params = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8, 12, 16]}}
    run = tiny_run_config(tiny_model_dir, train={"epochs": 1, "batch_size": 1, "min_steps": 4})
    path = write_sweep(tmp_path, tiny_model_dir, run=run, params=params)
    out = tmp_path / "runs"
    result = run_cli(sweep_cmd(path, out, "--workers", "2"), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    threads = threads_per_worker(2)
    assert f"2 local workers on {out.resolve() / 't' / 'journal.log'}, {threads} torch thread(s) each" in (
        result.stdout
    )
    assert result.stdout.count("trial(s) to run in this worker") == 2  # both workers ran
    study = sw.open_study("t", runs_dir=out)
    ran = [t for t in study.get_trials() if not t.user_attrs.get("duplicate")]
    assert sorted(t.params["size"] for t in ran) == [8, 12, 16]  # no grid point ran twice
    assert all(t.state == TrialState.COMPLETE for t in ran)
    pids = {t.user_attrs["worker"]["pid"] for t in ran}
    assert len(pids) == 2  # the trials were shared out (3 points, 2 workers, ~20 s a trial)
    assert len(study.user_attrs["bases"]) == 1  # the launcher ran the base once, before the workers


def test_the_summary_leaves_out_grid_copies_nobody_picked():
    # Two launchers started together can both queue a grid point; the copy never picked stays WAITING.
    from mathgpt.sweep.console import summary_table

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    trial.suggest_float("x", 0, 2)
    study.tell(trial, 0.5)
    study.enqueue_trial({"x": 1.0})
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING]
    assert summary_table(study).row_count == 1
