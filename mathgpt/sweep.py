"""Optuna sweeps: many fine-tuning runs over data size, epochs, LoRA rank and learning rate, one study.

A trial is one `mathgpt run` in its own subprocess, so GPU and CPU memory return after every trial and a crash
(CUDA OOM, NaN loss, a bad row) fails that trial only. The run appends a line to ``epochs.jsonl`` after every
epoch; the sweep tails it, reports each epoch to Optuna (a 3-epoch trial yields its 1-, 2- and 3-epoch points)
and kills the child when the pruner says so. The base model is evaluated once per study, as the zero point.

Storage: a journal file in ``DIR/<study>/`` by default (no server; SQLite is not safe for parallel workers),
or any RDB URL, so the same command started on N machines joins one study. Every worker writes a heartbeat
into its running trial; a trial whose worker died (same host: its pid is gone; elsewhere: no heartbeat for
``GRACE_S``) is marked failed and re-queued with the same params, so re-running the command resumes the study.
Optuna's own heartbeat exists only for RDB storages, hence this small one that works for both.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.table import Table

from mathgpt import track
from mathgpt.config import ConfigError, parse_config, read_yaml, set_dotted

HEARTBEAT_S = 10.0  # how often a running trial proves its worker is alive
GRACE_S = 120.0  # silence after which a trial on another host counts as lost
POLL_S = 0.5  # how often epochs.jsonl is checked for a new line
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

console = Console(highlight=False, markup=False, soft_wrap=True)  # one line per event, even in a CI log


# ---------------------------------------------------------------------------------------------- sweep YAML


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    key: str  # dotted run-config key, e.g. data.train_size, train.epochs, lora.r, train.learning_rate
    type: Literal["categorical", "int", "log_int", "float", "log_float"]
    choices: list[int | float | str | bool] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("categorical needs a non-empty 'choices' and no low/high")
        else:
            if self.choices is not None or self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs 'low' and 'high' and no choices")
            if not self.low < self.high or (self.type.startswith("log") and self.low <= 0):
                raise ValueError("needs 0 < low < high for log types, low < high otherwise")
        return self


class SamplerSpec(_Strict):
    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband", "wilcoxon"] = "none"
    # median: trials that finish before any pruning and the epochs a trial always gets.
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    # hyperband: epochs are the resource.
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    # wilcoxon: per-problem paired test against the best trial.
    p_threshold: float = Field(0.1, gt=0, lt=1)


class SweepConfig(_Strict):
    study: str
    base_config: str  # a run config YAML, relative to the sweep file
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted keys applied to every trial
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int | None = Field(None, ge=1)  # finished trials the study aims at; grid: the grid size
    timeout_s: float = Field(gt=0)  # each worker's time budget; a trial in progress is finished first
    params: dict[str, ParamSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        if self.sampler.type == "grid":
            loose = [n for n, p in self.params.items() if p.type != "categorical"]
            if loose:
                raise ValueError(f"the grid sampler needs categorical params; not: {', '.join(loose)}")
        elif self.n_trials is None:
            raise ValueError(f"the {self.sampler.type} sampler needs 'n_trials'")
        keys = [p.key for p in self.params.values()]
        if len(set(keys)) != len(keys):
            raise ValueError("two params set the same key")
        return self

    def grid(self) -> dict[str, list[Any]]:
        return {name: list(p.choices or []) for name, p in self.params.items()}


def load_sweep(path: str | Path) -> tuple[SweepConfig, dict[str, Any], dict[str, Any]]:
    """Read and validate a sweep YAML and its base run config; returns (sweep, sweep as dict, base raw)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path}: '{where}': {msg}") from None
    base_raw = read_yaml((path.parent / sweep.base_config).resolve())
    for key, value in sweep.overrides.items():
        base_raw = set_dotted(base_raw, key, value)
    try:
        parse_config(base_raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: base_config with overrides: {err}") from None
    for name, p in sweep.params.items():
        probe = p.choices[0] if p.choices else p.low
        if p.type in ("int", "log_int"):
            probe = int(probe)  # type: ignore[arg-type]
        try:
            parse_config(set_dotted(base_raw, p.key, probe))
        except ConfigError as err:
            raise ConfigError(f"{path}: param '{name}': {err}") from None
    return sweep, raw, base_raw


# ------------------------------------------------------------------------------------------ pure helpers


def make_sampler(spec: SamplerSpec, sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    if spec.type == "grid":
        return optuna.samplers.GridSampler(sweep.grid(), seed=spec.seed)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.type == "median":
        return optuna.pruners.MedianPruner(spec.n_startup_trials, spec.n_warmup_steps)
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(spec.min_resource, "auto", spec.reduction_factor)
    if spec.type == "wilcoxon":
        with warnings.catch_warnings():  # experimental since Optuna 3.6; the sweep pins its use in tests
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ask the trial for every param; returns {dotted key: value}."""
    out: dict[str, Any] = {}
    for name, p in params.items():
        if p.type == "categorical":
            value: Any = trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
        elif p.type in ("int", "log_int"):
            value = trial.suggest_int(name, int(p.low), int(p.high), log=p.type == "log_int")  # type: ignore[arg-type]
        else:
            value = trial.suggest_float(name, p.low, p.high, log=p.type == "log_float")  # type: ignore[arg-type]
        out[p.key] = value
    return out


def trial_config(
    base_raw: dict[str, Any], values: dict[str, Any], name: str, group: str, base: bool = False
) -> dict[str, Any]:
    """The raw run config of one trial: the base, the trial's values, and what every sweep run needs.

    Trials skip the base evaluation (the study does it once); ``base=True`` is that one run.
    """
    raw = base_raw
    for key, value in values.items():
        raw = set_dotted(raw, key, value)
    fixed = {"name": name, "tracking.group": group, "eval.base": base, "eval.every_epoch": True}
    for key, value in fixed.items():
        raw = set_dotted(raw, key, value)
    return raw


def applied_overrides(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What a trial actually ran with: its searched keys plus the five the report plots against."""
    cfg = parse_config(raw)
    return {
        **values,
        "data.train_size": cfg.data.train_size,
        "train.epochs": cfg.train.epochs,
        "lora.r": cfg.lora.r,
        "lora.alpha": cfg.lora.lora_alpha,
        "train.learning_rate": cfg.train.learning_rate,
    }


def read_new_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines appended to ``path`` since byte ``offset``; a half-written line waits."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    lines = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
    return lines, offset + end


def last_line(path: Path) -> str:
    if not path.exists():
        return "no log"
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "no output"


def fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_name(study: str, number: int, params: dict[str, Any]) -> str:
    """The trial's run (and W&B run) name: study, trial number and params, e.g. ``cpu_demo-t3-size=64-r=16``."""
    text = f"{study}-t{number}-" + fmt_params(params).replace(" ", "-")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial: FrozenTrial, now: float, host: str, grace_s: float = GRACE_S) -> bool:
    """A running trial whose worker is gone: a dead pid on this host, or no heartbeat within ``grace_s``."""
    worker = trial.user_attrs.get("worker") or {}
    if worker.get("host") == host and worker.get("pid") and not pid_alive(worker["pid"]):
        return True
    start = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - max(start, trial.user_attrs.get("heartbeat", 0.0)) > grace_s


def counts_as_done(trial: FrozenTrial) -> bool:
    """Finished trials that count towards n_trials (a lost trial does not: its retry does)."""
    u = trial.user_attrs
    return trial.state.is_finished() and not u.get("lost") and not u.get("duplicate")


def grid_taken(me: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """Whether an earlier live trial already holds ``me``'s grid point.

    Two workers that ask at the same moment near the end of a grid can both be given the last point (Optuna's
    GridSampler then re-evaluates a visited one); the later trial steps aside instead of running it twice.
    """
    grid_id = me.system_attrs.get("grid_id")
    return grid_id is not None and any(
        t.number < me.number and t.system_attrs.get("grid_id") == grid_id and not t.user_attrs.get("lost")
        for t in trials
    )


# ------------------------------------------------------------------------------------ storage and study


def rdb_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the project ships psycopg2, so name it."""
    if "://" not in url:
        return url  # a journal file
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None:
        return f"postgresql+psycopg2://{rest}"
    return url


def resolve_storage(study_name: str, storage: str | None, runs_dir: str | Path) -> tuple[Any, str]:
    """An Optuna storage and the string that names it (an RDB URL, or the journal file's path)."""
    if storage and "://" in storage:
        return optuna.storages.RDBStorage(rdb_url(storage)), storage
    path = Path(storage) if storage else Path(runs_dir) / study_name / "journal.log"
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), str(path)


def open_study(study_name: str, storage: str | None = None, runs_dir: str | Path = "runs") -> optuna.Study:
    """Load an existing study for reading (the report, the bench); a missing or unreadable one is one line."""
    rdb = bool(storage and "://" in storage)
    where = storage if rdb else str(Path(storage) if storage else Path(runs_dir) / study_name / "journal.log")
    if not rdb and not Path(where).is_file():
        raise ConfigError(f"no study journal at {where} (run `mathgpt sweep` first or pass --storage)")
    if rdb and where.startswith("sqlite:///") and not Path(where.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{where}: no such database file")
    try:
        store, _ = resolve_storage(study_name, storage, runs_dir)
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"no study named '{study_name}' in {where} (it has: {names})") from None
    except Exception as err:  # noqa: BLE001 - a corrupt journal or an unreachable database: one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"cannot read {where}: {type(err).__name__}: {first}") from None


def retry_lost_trials(study: optuna.Study, host: str, grace_s: float = GRACE_S) -> list[int]:
    """Fail every running trial whose worker is gone and queue a fresh copy with the same params.

    Marking a trial FAIL succeeds in one worker only (the storage refuses to finish a finished trial), so two
    workers that see the same lost trial queue it once.
    """
    now, requeued = time.time(), []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, now, host, grace_s):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "lost", True)
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker lost mid-trial (killed or hung)")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        requeue(study, t)
        requeued.append(t.number)
    return requeued


def requeue(study: optuna.Study, t: FrozenTrial) -> None:
    """Queue a fresh trial with ``t``'s params; the next free worker runs it before sampling anything new."""
    retry = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=t.params,
        distributions=t.distributions,
        user_attrs={"retry_of": t.number},
        system_attrs=t.system_attrs,  # keeps the grid sampler's grid_id
    )
    study.add_trial(retry)


def remaining_trials(study: optuna.Study, sweep: SweepConfig) -> int:
    """How many more trials this worker should start, given what is finished and running anywhere."""
    target = sweep.n_trials or 0
    if sweep.sampler.type == "grid":
        size = math.prod(len(v) for v in sweep.grid().values())
        target = min(target, size) if target else size
    trials = study.get_trials(deepcopy=False)
    done = sum(counts_as_done(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return max(0, target - done - running)


# ------------------------------------------------------------------------------------------ subprocesses


def _die_with_parent() -> None:
    """Linux: the run child gets SIGKILL when its worker dies, so a killed sweep leaves no orphan training."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def start_run(raw: dict[str, Any], run_dir: Path) -> subprocess.Popen:
    """Write the run's config and start `mathgpt run` on it, output to run_dir/log.txt."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "trial_config.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "mathgpt", "run", str(cfg_path), "--output-dir", str(run_dir)]
    # The child imports the same mathgpt as this process, whatever the working directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    log = (run_dir / "log.txt").open("ab")
    try:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
        )
    finally:
        log.close()


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
        child.wait()


class TrialFailed(RuntimeError):
    """A run that exited non-zero; the study records it as FAIL and goes on."""


def run_base(study: optuna.Study, base_raw: dict[str, Any], out_dir: Path, name: str) -> None:
    """Evaluate the un-tuned model once per study and store it as the zero-fine-tuning point."""
    if "base" in study.user_attrs:
        return
    raw = trial_config(base_raw, {"train.epochs": 0}, f"{name}-base", name, base=True)
    run_dir = out_dir / "base"
    console.print(f"[{name}] base model: evaluating once for the study in {run_dir}")
    t0 = time.time()
    child = start_run(raw, run_dir)
    try:
        code = child.wait()
    finally:
        stop(child)
    lines = [ln for ln in read_new_lines(run_dir / "epochs.jsonl", 0)[0] if ln["epoch"] == 0]
    if code != 0 or not lines:  # without its zero point a study means nothing: stop with one line
        log = run_dir / "log.txt"
        raise ConfigError(f"the base model run failed (exit {code}): {last_line(log)} (full log: {log})")
    base = lines[-1]
    if "base" in study._storage.get_study_user_attrs(study._study_id):
        return  # another worker stored it first; greedy decoding gives it the same numbers
    study.set_user_attr("eval_ids", base["ids"])
    study.set_user_attr(
        "base",
        {k: base[k] for k in ("accuracy", "ci95", "n_eval", "correct")} | {"dir": str(run_dir.resolve())},
    )
    took = fmt_s(time.time() - t0)
    console.print(f"[{name}] base accuracy {base['accuracy']:.3f} on {base['n_eval']} problems ({took})")


# ------------------------------------------------------------------------------------------- objective


def make_objective(sweep: SweepConfig, base_raw: dict[str, Any], out_dir: Path, name: str, host: str):
    """The thin adapter: suggest, start the same run a single experiment uses, report every epoch."""
    wilcoxon = sweep.pruner.type == "wilcoxon"

    def objective(trial: optuna.Trial) -> float:
        t0 = time.time()
        trial.set_user_attr("worker", {"host": host, "pid": os.getpid()})
        trial.set_user_attr("heartbeat", t0)
        values = suggest(trial, sweep.params)
        if grid_taken(
            trial.study._storage.get_trial(trial._trial_id), trial.study.get_trials(deepcopy=False)
        ):
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
        epochs_total = trial.user_attrs["overrides"]["train.epochs"]
        epochs: list[dict[str, Any]] = []

        def record(state: str) -> None:
            trial.set_user_attr("epochs", [{k: v for k, v in e.items() if k != "ids"} for e in epochs])
            trial.set_user_attr("train_tokens", epochs[-1]["train_tokens"] if epochs else 0)
            trial.set_user_attr("wall_s", round(time.time() - t0, 2))
            console.print(f"{label} {state} in {fmt_s(time.time() - t0)}")

        console.print(f"{label} started in {run_dir}")
        child = start_run(raw, run_dir)
        offset, beat = 0, t0
        try:
            while True:
                code = child.poll()
                new, offset = read_new_lines(run_dir / "epochs.jsonl", offset)
                for line in (ln for ln in new if ln["epoch"] > 0):
                    epochs.append(line)
                    ep, acc = line["epoch"], line["accuracy"]
                    if wilcoxon:  # one step per problem and epoch, so the test pairs the same problems
                        for i, c in enumerate(line["correct"]):
                            trial.report(float(c), step=(ep - 1) * line["n_eval"] + i)
                    else:
                        trial.report(acc, step=ep)
                    per_epoch = (time.time() - t0) / ep
                    eta = per_epoch * (epochs_total - ep)
                    console.print(f"{label} epoch {ep}/{epochs_total} acc {acc:.3f} eta {fmt_s(eta)}")
                    if ep < epochs_total and trial.should_prune():
                        stop(child)
                        record(f"pruned at epoch {ep}")
                        raise optuna.TrialPruned(f"pruned at epoch {ep}")
                if code is not None:
                    break
                if time.time() - beat > HEARTBEAT_S:
                    beat = time.time()
                    trial.set_user_attr("heartbeat", beat)
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # Ctrl-C: this trial did not finish, so the next run redoes it
            trial.set_user_attr("lost", True)
            trial.set_user_attr("fail_reason", "interrupted")
            requeue(trial.study, trial.study._storage.get_trial(trial._trial_id))
            raise
        finally:
            stop(child)
        if code != 0 or not epochs:
            reason = last_line(run_dir / "log.txt") if code != 0 else "the run wrote no epoch"
            trial.set_user_attr("fail_reason", f"exit {code}: {reason}")
            record(f"FAILED (exit {code}: {reason})")
            raise TrialFailed(reason)
        record(f"done, acc {epochs[-1]['accuracy']:.3f}")
        return float(epochs[-1]["accuracy"])

    return objective


# --------------------------------------------------------------------------------------------- the edges


def summary_table(study: optuna.Study) -> Table:
    base = study.user_attrs.get("base")
    title = f"study {study.study_name}" + (f", base accuracy {base['accuracy']:.3f}" if base else "")
    table = Table(title=title)
    for col in ("trial", "params", "accuracy by epoch", "state", "wall"):
        table.add_column(col)
    for t in study.get_trials(deepcopy=False):
        accs = " ".join(f"{e['accuracy']:.3f}" for e in t.user_attrs.get("epochs", []))
        reason = t.user_attrs.get("fail_reason")
        state = t.state.name + (f" ({reason[:60]})" if reason else "")
        table.add_row(str(t.number), fmt_params(t.params), accs, state, fmt_s(t.user_attrs.get("wall_s", 0)))
    return table


def log_study_table(study: optuna.Study, project: str, mode: str | None, out_dir: Path) -> None:
    """One W&B run per study holding a table of all trials (each trial logged its own run already)."""
    keys = ("data.train_size", "train.epochs", "lora.r", "lora.alpha", "train.learning_rate")
    cols = ["trial", "state", *keys, "accuracy", "train_tokens", "wall_s"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        o, u = t.user_attrs.get("overrides", {}), t.user_attrs
        rows.append(
            [
                t.number,
                t.state.name,
                *(o.get(k) for k in keys),
                t.value,
                u.get("train_tokens"),
                u.get("wall_s"),
            ]
        )
    config = {"sweep": study.user_attrs.get("sweep_config"), "base": study.user_attrs.get("base")}
    name = f"{study.study_name}-study"
    run = track.start_run(
        project=project,
        name=name,
        group=study.study_name,
        config=config,
        mode=mode,
        dir=out_dir,
        job_type="sweep",
    )
    run.log_table("trials", cols, rows)
    run.finish()


def run_sweep(
    sweep_path: str | Path,
    storage: str | None = None,
    n_trials: int | None = None,
    study_name: str | None = None,
    output_dir: str | Path = "runs",
    report: bool = True,
) -> optuna.Study:
    """Create or join a study and run trials until it has its trials, its grid is covered, or time is up.

    Example: ``run_sweep("sweeps/cpu_demo.yaml")`` runs the CPU demo into ``runs/cpu_demo/``; the same call on
    another machine with ``storage="postgresql://..."`` joins the same study.
    """
    sweep, sweep_raw, base_raw = load_sweep(sweep_path)
    if n_trials is not None:
        sweep = sweep.model_copy(update={"n_trials": n_trials})
    name = study_name or sweep.study
    out_dir = (Path(output_dir) / name).resolve()
    store, url = resolve_storage(name, storage, output_dir)
    console.print(f"[{name}] storage: {url}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happened
    study = optuna.create_study(
        study_name=name,
        storage=store,
        direction="maximize",
        sampler=make_sampler(sweep.sampler, sweep),
        pruner=make_pruner(sweep.pruner),
        load_if_exists=True,
    )
    for key, value in (("sweep_config", sweep_raw), ("output_dir", str(out_dir))):
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    host = socket.gethostname()
    lost = retry_lost_trials(study, host)
    if lost:
        console.print(f"[{name}] re-queued trials lost by a dead worker: {lost}")
    run_base(study, base_raw, out_dir, name)

    started, walls = time.time(), []

    def after_trial(st: optuna.Study, t: FrozenTrial) -> None:
        retry_lost_trials(st, host)
        left = remaining_trials(st, sweep)
        walls.append(t.user_attrs.get("wall_s", 0.0))
        eta = min(left * sum(walls) / len(walls), max(0.0, sweep.timeout_s - (time.time() - started)))
        done = sum(counts_as_done(x) for x in st.get_trials(deepcopy=False))
        console.print(f"[{name}] {done} trial(s) finished, {left} to start, eta {fmt_s(eta)} for this worker")
        if left == 0:
            st.stop()

    todo = remaining_trials(study, sweep)  # includes re-queued trials
    console.print(f"[{name}] {todo} trial(s) to run in this worker")
    if todo:
        study.optimize(
            make_objective(sweep, base_raw, out_dir, name, host),
            n_trials=todo,
            timeout=sweep.timeout_s,
            catch=(TrialFailed,),
            callbacks=[after_trial],
        )
    console.print(summary_table(study))
    cfg = parse_config(base_raw)
    log_study_table(study, cfg.tracking.project, cfg.tracking.mode, out_dir)
    if report:
        from mathgpt.report import write_report  # matplotlib and statsmodels load only when a report is due

        where = write_report(name, storage=rdb_url(url), out_dir=None, runs_dir=output_dir)
        console.print(f"report written to {where}")
    return study
