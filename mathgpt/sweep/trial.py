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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from mathgpt.config import ConfigError, parse_config
from mathgpt.record import Point
from mathgpt.sweep import slices as pts
from mathgpt.sweep.heartbeat import HEARTBEAT_S, frozen, grid_taken, requeue
from mathgpt.sweep.spec import (
    SweepConfig,
    applied_overrides,
    fmt_params,
    model_slug,
    run_name,
    suggest,
    trial_config,
)
from mathgpt.sweep.tracking import console, fmt_s

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


def start_run(raw: dict[str, Any], run_dir: Path) -> subprocess.Popen:
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
    """Evaluate every model the study can sample once, un-tuned, and store the study's fixed slices.

    The first base fixes ``eval_problems`` and the fingerprints; a later model's base scored on other problems
    stops the study with one line (its trials could not be paired).
    """
    models = sweep.models(base_raw)
    for model in models:
        if model in (study.user_attrs.get("bases") or {}):
            continue
        values = {"train.epochs": 0, "eval.at_examples": None, "model.name": model}  # at_examples: 1 epoch
        raw = trial_config(base_raw, values, f"{name}-base", name, base=True)
        run_dir = base_dir(out_dir, model, models).resolve()
        console.print(f"[{name}] base model {model}: evaluating once for the study in {run_dir}")
        t0 = time.time()
        child = start_run(raw, run_dir)
        try:
            code = child.wait()
        finally:
            stop(child)
        lines = [ln for ln in read_new_points(run_dir / "epochs.jsonl", 0)[0] if ln.point == 0]
        if code != 0 or not lines:  # without its zero point a study means nothing: stop with one line
            log = run_dir / "log.txt"
            raise ConfigError(
                f"the base run of {model} failed (exit {code}): {last_line(log)} (full log: {log})"
            )
        line = lines[-1]
        store_base(study, model, line, run_dir)
        took = fmt_s(time.time() - t0)
        console.print(
            f"[{name}] base {model}: accuracy {line.accuracy:.3f} on {line.n_eval} problems ({took})"
        )


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
        attrs = study.user_attrs
    eval_ids = [p["id"] for p in attrs["eval_problems"]]
    try:
        pts.check_point(line, attrs.get("eval_fingerprint"), attrs.get("select_fingerprint"))
        point = pts.to_study_order(line, eval_ids)
    except pts.SliceMismatch as err:
        raise ConfigError(f"base run of {model}: {err}") from None
    bases = dict(attrs.get("bases") or {})
    bases[model] = point.stored() | {"dir": str(run_dir)}
    study.set_user_attr("bases", bases)


# ------------------------------------------------------------------------------------------- objective


def make_objective(
    sweep: SweepConfig, base_raw: dict[str, Any], out_dir: Path, name: str, host: str
) -> Callable[[optuna.Trial], float]:
    """The thin adapter: suggest, start the same run a single experiment uses, report every point."""
    wilcoxon = sweep.pruner.type == "wilcoxon"

    def objective(trial: optuna.Trial) -> float:
        t0 = time.time()
        study = trial.study
        trial.set_user_attr("worker", {"host": host, "pid": os.getpid()})
        trial.set_user_attr("heartbeat", t0)
        values = suggest(trial, sweep.all_params())
        if grid_taken(frozen(study, trial.number), study.get_trials(deepcopy=False)):
            trial.set_user_attr("duplicate", True)
            trial.set_user_attr("fail_reason", "grid point already taken by another worker")
            raise TrialFailed("duplicate grid point")
        raw = trial_config(base_raw, values, run_name(name, trial.number, trial.params), name)
        run_dir = (out_dir / f"trial_{trial.number}").resolve()
        trial.set_user_attr("trial_dir", str(run_dir))
        label = f"trial {trial.number} [{fmt_params(trial.params)}]"
        try:
            trial.set_user_attr("overrides", applied_overrides(raw, values))
        except ConfigError as err:
            trial.set_user_attr("fail_reason", f"bad config: {err}")
            raise TrialFailed(str(err)) from None
        cfg = parse_config(raw)
        at = cfg.eval.at_examples
        expected = len(at) if at else cfg.train.epochs
        attrs = study.user_attrs
        eval_ids = [p["id"] for p in attrs.get("eval_problems") or []]
        points: list[Point] = []
        warned: set[str] = set()

        def record(state: str) -> None:
            trial.set_user_attr("points", [p.stored() for p in points])
            trial.set_user_attr("train_tokens", points[-1].train_tokens if points else 0)
            trial.set_user_attr("wall_s", round(time.time() - t0, 2))
            if points:  # shown as-is by optuna-dashboard: the report-slice accuracy of the last point
                last = points[-1]
                trial.set_user_attr("accuracy", last.accuracy)
                trial.set_user_attr("ci95", last.ci95)
                trial.set_user_attr("train_examples", last.train_examples)
                trial.set_user_attr("checker_version", last.checker_version)
            console.print(f"{label} {state} in {fmt_s(time.time() - t0)}")

        def fail(reason: str) -> TrialFailed:
            trial.set_user_attr("fail_reason", reason)
            record(f"FAILED ({reason})")
            return TrialFailed(reason)

        if cfg.model.name not in (attrs.get("bases") or {}):
            raise fail(f"no base run for model {cfg.model.name}")
        console.print(f"{label} started in {run_dir}")
        child = start_run(raw, run_dir)
        offset, beat = 0, t0
        try:
            while True:
                code = child.poll()
                new, offset = read_new_points(run_dir / "epochs.jsonl", offset)
                for line in (ln for ln in new if ln.point > 0):
                    try:
                        pts.check_point(line, attrs.get("eval_fingerprint"), attrs.get("select_fingerprint"))
                        point = pts.to_study_order(line, eval_ids)
                    except pts.SliceMismatch as err:
                        stop(child)
                        raise fail(str(err)) from None
                    points.append(point)
                    value, k = pts.objective_value(point), len(points)
                    step = point.train_examples if at else int(round(point.epoch))
                    if wilcoxon:  # one step per problem and point, so the test pairs the same problems
                        correct = pts.pruning_vector(point)
                        for i, c in enumerate(correct):
                            trial.report(float(c), step=(k - 1) * len(correct) + i)
                    else:
                        trial.report(value, step=step)
                    rate = pts.ungradable_rate(point)
                    if rate is not None and rate > UNGRADABLE_WARN and "ungradable" not in warned:
                        warned.add("ungradable")
                        console.print(f"{label} warning: {rate:.1%} of answers ungradable at point {k}")
                    eta = (time.time() - t0) / k * max(expected - k, 0)
                    console.print(
                        f"{label} point {k}/{expected} ({'examples' if at else 'epoch'} {step}) "
                        f"value {value:.3f} report acc {point.accuracy:.3f} eta {fmt_s(eta)}"
                    )
                    if k < expected and trial.should_prune():
                        stop(child)
                        record(f"pruned at point {k}")
                        raise optuna.TrialPruned(f"pruned at point {k}")
                if code is not None:
                    break
                if time.time() - beat > HEARTBEAT_S:
                    beat = time.time()
                    trial.set_user_attr("heartbeat", beat)
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # Ctrl-C: this trial did not finish, so the next run redoes it
            trial.set_user_attr("lost", True)
            trial.set_user_attr("fail_reason", "interrupted")
            requeue(study, frozen(study, trial.number))
            raise
        finally:
            stop(child)
        if code != 0 or not points:
            reason = last_line(run_dir / "log.txt") if code != 0 else "the run wrote no evaluation point"
            raise fail(f"exit {code}: {reason}")
        trial.set_user_attr("run_dir_metrics", metrics_scalars(run_dir))
        value = pts.objective_value(points[-1])
        record(f"done, value {value:.3f}")
        return value

    return objective
