"""One trial = one `mathgpt run` in its own subprocess, tailed point by point; and the per-model base runs.

A subprocess per trial returns GPU and CPU memory after every trial, and a crash (CUDA OOM, NaN loss, a bad
row) fails that trial only. The run appends a line to ``epochs.jsonl`` after every evaluation point; the
objective tails it, checks the point was scored on the study's slices, reports it to Optuna and kills the
child when the pruner says so. Each model the study can sample is evaluated once, un-tuned, as its zero point.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from mathgpt.checker import CHECKER_VERSION
from mathgpt.config import ConfigError, parse_config
from mathgpt.record import Point
from mathgpt.sweep import slices as pts
from mathgpt.sweep.console import console, fmt_s
from mathgpt.sweep.heartbeat import HEARTBEAT_S, MAX_RETRY, can_retry, frozen, queued_twice, requeue
from mathgpt.sweep.resume import claim_base
from mathgpt.sweep.spec import (
    SweepConfig,
    applied_overrides,
    fmt_params,
    model_slug,
    run_name,
    suggest,
    trial_config,
)

POLL_S = 0.5  # how often epochs.jsonl is checked for a new line
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
UNGRADABLE_WARN = 0.01  # above 1% ungradable answers a point's accuracy says more about the checker


class TrialFailed(RuntimeError):
    """A run that exited non-zero or was scored on other problems; the study records FAIL and goes on."""


def read_new_points(path: Path, offset: int) -> tuple[list[Point], int]:
    """Complete points appended to ``path`` (epochs.jsonl) since byte ``offset``; a half-written line waits."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    lines = [Point.model_validate_json(line) for line in chunk[:end].splitlines() if line.strip()]
    return lines, offset + end


def last_line(path: Path) -> str:
    if not path.exists():
        return "no log"
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "no output"


def die_with_parent() -> None:
    """Linux: a child gets SIGKILL when its parent dies, so a killed sweep leaves no orphan training."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """The environment of a child process: this one's (thread limits included), importing this mathgpt."""
    path = os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def spawn_run(raw: dict[str, Any], run_dir: Path) -> subprocess.Popen:
    """Write the run's config and start `mathgpt run` on it, output to run_dir/log.txt."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "trial_config.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "mathgpt", "run", str(cfg_path), "--output-dir", str(run_dir)]
    log = (run_dir / "log.txt").open("ab")
    try:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), preexec_fn=die_with_parent
        )
    finally:
        log.close()


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
        child.wait()


def metrics_scalars(run_dir: Path) -> dict[str, Any]:
    """metrics.json's top-level scalars (the dashboard shows them next to the trial)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}


# ------------------------------------------------------------------------------------------- base runs


def base_dir(out_dir: Path, model: str, models: list[str]) -> Path:
    """``DIR/<study>/base`` for a one-model study, ``DIR/<study>/base-<model>`` for each model otherwise."""
    return out_dir / ("base" if len(models) == 1 else f"base-{model_slug(model)}")


def run_bases(
    study: optuna.Study, sweep: SweepConfig, base_raw: dict[str, Any], out_dir: Path, name: str
) -> None:
    """Evaluate every model the study can sample once, un-tuned, and store the study's fixed slices; then each
    of the sweep's ``baselines`` (the same base model with a k-shot prompt or another cap) once per model.

    The first base fixes ``eval_problems`` and the fingerprints; a later model's base scored on other problems
    stops the study with one line (its trials could not be paired).
    """
    models = sweep.models(base_raw)
    for model in models:
        values = {"train.epochs": 0, "eval.at_examples": None, "model.name": model}  # at_examples: 1 epoch
        main = base_dir(out_dir, model, models).resolve()
        runs = [("base", values, main)]
        runs += [
            (b.name, values | b.values(), main.with_name(f"{main.name}-{b.name}")) for b in sweep.baselines
        ]
        for label, vals, run_dir in runs:
            if _stored(study, model, label):
                continue
            raw = trial_config(base_raw, vals, f"{name}-{label}", name, base=True)
            with claim_base(run_dir):  # a sweep started at the same moment waits, then finds the base stored
                if _stored(study, model, label):
                    console.print(f"[{name}] {label} of {model}: evaluated by another sweep on this study")
                    continue
                what = "base model" if label == "base" else f"baseline '{label}'"
                console.print(f"[{name}] {what} {model}: evaluating once for the study in {run_dir}")
                t0 = time.time()
                line = _base_point(raw, run_dir, f"the {label} run of {model}")
                if label == "base":
                    store_base(study, model, line, run_dir)
                else:
                    store_baseline(study, model, label, line, run_dir)
            console.print(
                f"[{name}] {label} {model}: accuracy {line.accuracy:.3f} on {line.n_eval} problems, "
                f"{line.n_truncated} truncated ({fmt_s(time.time() - t0)})"
            )


def _stored(study: optuna.Study, model: str, label: str) -> bool:
    attrs = study.user_attrs
    if label == "base":
        return model in (attrs.get("bases") or {})
    return label in ((attrs.get("baselines") or {}).get(model) or {})


def _base_point(raw: dict[str, Any], run_dir: Path, what: str) -> Point:
    """Run one base evaluation in its subprocess; its point 0, or one line on why there is none."""
    child = spawn_run(raw, run_dir)
    try:
        code = child.wait()
    finally:
        stop(child)
    lines = [ln for ln in read_new_points(run_dir / "epochs.jsonl", 0)[0] if ln.point == 0]
    if code != 0 or not lines:  # without its zero point a study means nothing: stop with one line
        log = run_dir / "log.txt"
        raise ConfigError(f"{what} failed (exit {code}): {last_line(log)} (full log: {log})")
    return lines[-1]


def store_base(study: optuna.Study, model: str, line: Point, run_dir: Path) -> None:
    attrs = study.user_attrs
    if "eval_problems" not in attrs:
        problems = pts.eval_problems(run_dir, line)
        fixed = {
            "eval_problems": problems,
            "eval_fingerprint": line.fingerprint,
            "select_fingerprint": pts.select_fingerprint(line),
            "general_ids": pts.general_ids(line),
            "checker_version": line.checker_version,
        }
        for key, value in fixed.items():
            study.set_user_attr(key, value)
    point = _study_point(study, line, f"base run of {model}")
    bases = dict(study.user_attrs.get("bases") or {})
    bases[model] = point.stored() | {"dir": str(run_dir)}
    study.set_user_attr("bases", bases)


def store_baseline(study: optuna.Study, model: str, label: str, line: Point, run_dir: Path) -> None:
    """A baseline's point in ``baselines[model][label]``, checked against the study's slices like a base."""
    point = _study_point(study, line, f"baseline '{label}' of {model}")
    baselines = dict(study.user_attrs.get("baselines") or {})
    baselines[model] = dict(baselines.get(model) or {}) | {label: point.stored() | {"dir": str(run_dir)}}
    study.set_user_attr("baselines", baselines)


def _study_point(study: optuna.Study, line: Point, what: str) -> Point:
    attrs = study.user_attrs
    eval_ids = [p["id"] for p in attrs["eval_problems"]]
    try:
        pts.check_point(line, attrs.get("eval_fingerprint"), attrs.get("select_fingerprint"))
        return pts.to_study_order(line, eval_ids)
    except pts.SliceMismatch as err:
        raise ConfigError(f"{what}: {err}") from None


# ------------------------------------------------------------------------------------------- objective


def exit_reason(code: int, log: Path) -> str:
    """One line on how a run child ended: the signal that killed it (the OOM killer sends SIGKILL), else its
    exit code and its log's last line."""
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit {code}: {last_line(log)}"


@dataclass
class _TrialRun:
    """What one trial has so far: its points, for the attributes written when it ends however it ends."""

    trial: optuna.Trial
    label: str
    t0: float = field(default_factory=time.time)
    points: list[Point] = field(default_factory=list)

    def record(self, state: str) -> None:
        trial, points = self.trial, self.points
        trial.set_user_attr("points", [p.stored() for p in points])
        trial.set_user_attr("train_tokens", points[-1].train_tokens if points else 0)
        trial.set_user_attr("wall_s", round(time.time() - self.t0, 2))
        if points:  # shown as-is by optuna-dashboard: the report-slice accuracy of the last point
            last = points[-1]
            trial.set_user_attr("accuracy", last.accuracy)
            trial.set_user_attr("ci95", last.ci95)
            trial.set_user_attr("train_examples", last.train_examples)
            trial.set_user_attr("checker_version", last.checker_version)
        console.print(f"{self.label} {state} in {fmt_s(time.time() - self.t0)}")

    def fail(self, reason: str) -> TrialFailed:
        self.trial.set_user_attr("fail_reason", reason)
        self.record(f"FAILED ({reason})")
        return TrialFailed(reason)


class Objective:
    """The thin adapter: suggest, start the same run a single experiment uses, report every point.

    A run child killed by a signal (the OOM killer's SIGKILL) fails its trial and queues a retry with the same
    params, at most ``max_retry`` deep (``retry_depth`` on the retry); the study's checker version must be the
    one this worker grades with, or every trial is refused until ``mathgpt regrade`` re-scores the study.
    """

    def __init__(
        self,
        sweep: SweepConfig,
        base_raw: dict[str, Any],
        out_dir: Path,
        name: str,
        host: str,
        max_retry: int = MAX_RETRY,
    ):
        self.sweep, self.base_raw, self.out_dir, self.name, self.host = sweep, base_raw, out_dir, name, host
        self.max_retry = max_retry
        self.wilcoxon = sweep.pruner.type == "wilcoxon"

    def __call__(self, trial: optuna.Trial) -> float:
        run = _TrialRun(trial, f"trial {trial.number} [{fmt_params(trial.params)}]")
        trial.set_user_attr("worker", {"host": self.host, "pid": os.getpid()})
        trial.set_user_attr("heartbeat", run.t0)
        values = suggest(trial, self.sweep.all_params())
        values |= self.sweep.design_overrides(trial.params)  # a "list" design entry's own keys
        trials = trial.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        # The launcher queued every grid/list point, so an unqueued trial means another worker took the last one
        # between this worker's count and its ask, and the sampler handed it a point already run (CI saw size 12
        # run twice with --workers 2): it steps aside and this worker stops.
        unqueued = self.sweep.sampler.type in ("grid", "list") and "fixed_params" not in me.system_attrs
        if unqueued or queued_twice(me, trials):
            reason = (
                "no queued point left (another worker took the last one)"
                if unqueued
                else "grid point queued twice (two launchers at once); the first runs it"
            )
            trial.set_user_attr("duplicate", True)
            trial.set_user_attr("fail_reason", reason)
            if unqueued:
                trial.study.stop()
            raise TrialFailed(reason)
        raw = trial_config(self.base_raw, values, run_name(self.name, trial.number, trial.params), self.name)
        run_dir = (self.out_dir / f"trial_{trial.number}").resolve()
        trial.set_user_attr("trial_dir", str(run_dir))
        run.label = f"trial {trial.number} [{fmt_params(trial.params)}]"
        try:
            trial.set_user_attr("overrides", applied_overrides(raw, values))
        except ConfigError as err:
            trial.set_user_attr("fail_reason", f"bad config: {err}")
            raise TrialFailed(str(err)) from None
        cfg = parse_config(raw)
        attrs = trial.study.user_attrs
        if cfg.model.name not in (attrs.get("bases") or {}):
            raise run.fail(f"no base run for model {cfg.model.name}")
        self._check_checker(run, CHECKER_VERSION, attrs.get("checker_version"))
        console.print(f"{run.label} started in {run_dir}")
        try:
            child = spawn_run(raw, run_dir)
        except OSError as err:  # its folder cannot be made or written: this trial fails, the study goes on
            raise run.fail(f"cannot start the run in {run_dir}: {err.strerror or err}") from None
        try:
            code = self._follow(run, child, run_dir / "epochs.jsonl", cfg.eval.at_examples, cfg.train.epochs)
        except KeyboardInterrupt:  # Ctrl-C: this trial did not finish, so the next run redoes it
            trial.set_user_attr("lost", True)
            trial.set_user_attr("fail_reason", "interrupted")
            self._retry(trial)
            raise
        finally:
            stop(child)
        if code != 0 or not run.points:
            reason = (
                exit_reason(code, run_dir / "log.txt") if code != 0 else "the run wrote no evaluation point"
            )
            if code < 0 and self._retry(trial):
                reason += f"; queued again (retry {int(trial.user_attrs.get('retry_depth', 0)) + 1})"
            raise run.fail(reason)
        trial.set_user_attr("run_dir_metrics", metrics_scalars(run_dir))
        value = pts.objective_value(run.points[-1])
        run.record(f"done, value {value:.3f}")
        return value

    def _retry(self, trial: optuna.Trial) -> bool:
        """Queue ``trial``'s params again unless it is ``max_retry`` retries deep; returns whether queued."""
        if not can_retry(trial, self.max_retry):
            return False
        trial.set_user_attr("requeued", True)
        requeue(trial.study, frozen(trial.study, trial.number))
        return True

    def _check_checker(self, run: _TrialRun, version: str, study_version: str | None) -> None:
        if study_version and version != study_version:
            raise run.fail(
                f"graded by checker {version}, the study's points by checker {study_version}: run "
                f"`mathgpt regrade {self.out_dir}` first"
            )

    def _follow(
        self, run: _TrialRun, child: subprocess.Popen, epochs: Path, at: list[int] | None, n_epochs: int
    ) -> int:
        """Tail the child's points until it exits; report each, stop the child when pruned or refused."""
        trial, attrs = run.trial, run.trial.study.user_attrs
        eval_ids = [p["id"] for p in attrs.get("eval_problems") or []]
        expected = len(at) if at else n_epochs
        offset, beat, warned = 0, run.t0, False
        while True:
            code = child.poll()
            new, offset = read_new_points(epochs, offset)
            for line in (ln for ln in new if ln.point > 0):
                try:
                    pts.check_point(line, attrs.get("eval_fingerprint"), attrs.get("select_fingerprint"))
                    self._check_checker(run, line.checker_version, attrs.get("checker_version"))
                    point = pts.to_study_order(line, eval_ids)
                except pts.SliceMismatch as err:
                    stop(child)
                    raise run.fail(str(err)) from None
                except TrialFailed:
                    stop(child)
                    raise
                run.points.append(point)
                value, k = pts.objective_value(point), len(run.points)
                step = point.train_examples if at else int(round(point.epoch))
                if self.wilcoxon:  # one step per problem and point, so the test pairs the same problems
                    correct = pts.pruning_vector(point)
                    for i, c in enumerate(correct):
                        trial.report(float(c), step=(k - 1) * len(correct) + i)
                else:
                    trial.report(value, step=step)
                rate = pts.ungradable_rate(point)
                if rate is not None and rate > UNGRADABLE_WARN and not warned:
                    warned = True
                    console.print(f"{run.label} warning: {rate:.1%} of answers ungradable at point {k}")
                eta = (time.time() - run.t0) / k * max(expected - k, 0)
                console.print(
                    f"{run.label} point {k}/{expected} ({'examples' if at else 'epoch'} {step}) "
                    f"value {value:.3f} report acc {point.accuracy:.3f} eta {fmt_s(eta)}"
                )
                if k < expected and trial.should_prune():
                    stop(child)
                    run.record(f"pruned at point {k}")
                    raise optuna.TrialPruned(f"pruned at point {k}")
            if code is not None:
                return code
            if time.time() - beat > HEARTBEAT_S:
                beat = time.time()
                trial.set_user_attr("heartbeat", beat)
            time.sleep(POLL_S)
