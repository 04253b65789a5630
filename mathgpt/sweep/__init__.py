"""Optuna sweeps: many fine-tuning runs over data size, seeds, models, LoRA rank and learning rate, one study.

``run_sweep`` creates or joins a study, evaluates each model once un-tuned (its zero point), and runs trials
until the study has its trials, its grid is covered, or time is up. Storage: a journal file in
``DIR/<study>/`` by default (no server; SQLite is not safe for parallel workers), or any RDB URL, so the same
command started on N machines joins one study; ``workers=N`` starts N local workers on it instead.
What the study stores is the contract in docs/CONTRACTS.md ("Optuna study").

Modules: ``spec`` (the sweep YAML), ``mathgpt.storage`` (where studies live), ``heartbeat`` (lost trials),
``slices`` (the study's fixed slices and how points are checked against them), ``resume`` (the same config on
resume, one base claim), ``trial`` (the run subprocess and the objective), ``workers`` (local workers),
``console`` (what a sweep prints; its W&B run is ``mathgpt.track_study``).
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from mathgpt.checker import CHECKER_VERSION
from mathgpt.config import ConfigError, parse_config
from mathgpt.redact import redact
from mathgpt.stats import detectable_gain
from mathgpt.storage import check_study_name, open_study, rdb_url, resolve_storage
from mathgpt.sweep.console import console, fmt_s, summary_table
from mathgpt.sweep.heartbeat import (
    counts_as_done,
    is_stale,
    pid_alive,
    remaining_trials,
    requeue,
    retry_lost_trials,
)
from mathgpt.sweep.resume import check_same_config
from mathgpt.sweep.spec import (
    ParamSpec,
    PrunerSpec,
    ReportSpec,
    SamplerSpec,
    SweepConfig,
    applied_overrides,
    fmt_params,
    load_sweep,
    make_pruner,
    make_sampler,
    run_name,
    suggest,
    trial_config,
)
from mathgpt.sweep.trial import Objective, TrialFailed, read_new_points, run_bases, spawn_run
from mathgpt.sweep.workers import run_workers

__all__ = [
    "ParamSpec", "PrunerSpec", "ReportSpec", "SamplerSpec", "SweepConfig", "TrialFailed", "applied_overrides",
    "dry_run_sweep", "planned_runs",
    "Objective", "counts_as_done", "fmt_params", "is_stale", "load_sweep", "make_pruner",
    "make_sampler", "open_study", "pid_alive", "rdb_url", "read_new_points", "remaining_trials", "requeue",
    "resolve_storage", "retry_lost_trials", "run_name", "run_sweep", "spawn_run", "suggest", "trial_config",
]  # fmt: skip


def power_line(sweep: SweepConfig, base_raw: dict) -> str:
    """One line on what the report slice can show, a warning when it cannot detect the asked-for gain."""
    cfg = parse_config(base_raw)
    n = cfg.data.eval_size * len(cfg.data.eval)  # upper bound: a set smaller than eval_size gives fewer
    r = sweep.report
    over_zero = detectable_gain(n, alpha=r.alpha, power=r.power)
    over_delta = detectable_gain(n, delta=r.delta, alpha=r.alpha, power=r.power)
    text = (
        f"report slice ~{n} problems: with {r.power:.0%} power it shows gains >= {over_zero:.3f} over the base, "
        f"and >= {over_delta:.3f} with the lower 95% bound above delta {r.delta:.3f}"
    )
    if over_zero > r.delta or over_delta >= 1.0:
        return f"warning: {text}; a gain of {r.delta:.3f} is below this slice's detection limit"
    return text


def grid_points(sweep: SweepConfig) -> list[dict]:
    """Every point of a grid sweep, as {param name: value}, in the order the YAML lists the choices."""
    grid = sweep.grid()
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def planned_runs(sweep: SweepConfig, base_raw: dict, n_trials: int | None = None) -> list[tuple[str, dict]]:
    """(label, raw run config) of every run a fresh study starts: each model's base run, then the trials.

    A grid study's trials are its grid points (the first ``n_trials`` of them when given). Other samplers pick
    their points as they go, so each of their ``n_trials`` trials stands for the top of every range and the
    last choice of every categorical: an upper bound for sizes, epochs and ranks, not a prediction.
    """
    name = sweep.study
    models = sweep.models(base_raw)
    runs = []
    for model in models:
        values = {"train.epochs": 0, "eval.at_examples": None, "model.name": model}  # as run_bases sets them
        runs.append((f"base {model}", trial_config(base_raw, values, f"{name}-base", name, base=True)))
        for b in sweep.baselines:
            raw = trial_config(base_raw, values | b.values(), f"{name}-{b.name}", name, base=True)
            runs.append((f"baseline {b.name} {model}", raw))
    specs = sweep.all_params()
    if sweep.sampler.type == "grid":
        points = grid_points(sweep)[: n_trials or None]
    elif sweep.sampler.type == "list":
        points = sweep.design_points()[: n_trials or None]
    else:
        top = {n: (p.choices[-1] if p.choices else p.high) for n, p in specs.items()}
        top = {n: int(v) if specs[n].type in ("int", "log_int") else v for n, v in top.items()}
        points = [top] * (n_trials or sweep.n_trials or 1)
    for number, params in enumerate(points):
        values = {specs[n].key: v for n, v in params.items()} | sweep.design_overrides(params)
        runs.append(
            (
                f"trial {number} {fmt_params(params)}",
                trial_config(base_raw, values, run_name(name, number, params), name),
            )
        )
    return runs


def dry_run_sweep(
    sweep_path: str | Path,
    *,
    n_trials: int | None = None,
    output_dir: str | Path = "runs",
    probe: bool = True,
) -> Iterator[str]:
    """The runs a fresh study would start and, with ``probe``, each one's wall time and their sum (one probe per
    distinct model setting: ``mathgpt.run.wall_time_estimate``), as lines. Nothing is written: no study, no
    run folder."""
    from mathgpt.budget import fmt_duration
    from mathgpt.model import meta_model
    from mathgpt.run import wall_time_estimate

    sweep, _, base_raw = load_sweep(sweep_path)
    out_dir = Path(output_dir) / sweep.study
    runs = planned_runs(sweep, base_raw, n_trials)
    n_base = len(sweep.models(base_raw)) * (1 + len(sweep.baselines))
    yield f"[{sweep.study}] {n_base} base run(s) + {len(runs) - n_base} trial(s) ({sweep.sampler.type} sampler)"
    if sweep.sampler.type not in ("grid", "list"):
        yield "  trials sized at the top of every range (the sampler picks its points as it goes): an upper bound"
    if not probe:
        yield from (f"  {label}" for label, _ in runs)
        return
    rates: dict = {}
    n_params: dict[str, int] = {}
    estimates = {}
    # Trials first: their probe (which trains) also times the base model, so a base run reuses it.
    for i in sorted(range(len(runs)), key=lambda i: i < n_base):
        cfg = parse_config(runs[i][1])
        if cfg.model.name not in n_params:
            n_params[cfg.model.name] = sum(p.numel() for p in meta_model(cfg.model.name).parameters())
        estimates[i] = wall_time_estimate(cfg, out_dir, n_params=n_params[cfg.model.name], rates_cache=rates)
    total, missing = 0.0, 0
    for i, (label, _) in enumerate(runs):
        wt, lines = estimates[i]
        yield f"{label}:"
        yield from (f"  {line}" for line in lines)
        if wt is None:
            missing += 1
        else:
            total += wt.total_s
    left = f"; {missing} run(s) not probed are not counted" if missing else ""
    yield (
        f"study total    {fmt_duration(total)} for {len(runs)} runs, one after another{left} (the report, and "
        f"trials a resumed study already has, are not counted; timeout_s {sweep.timeout_s:g} s stops new trials)"
    )


def check_checker(study: optuna.Study, out_dir: Path) -> None:
    """Refuse to add trials graded by this checker to a study graded by another (one line, exit 2)."""
    stored = study.user_attrs.get("checker_version")
    if stored and stored != CHECKER_VERSION:
        raise ConfigError(
            f"study {study.study_name} was graded by checker {stored}, this is checker {CHECKER_VERSION}: "
            f"run `mathgpt regrade {out_dir}` first"
        )


def run_sweep(
    sweep_path: str | Path,
    storage: str | None = None,
    n_trials: int | None = None,
    study_name: str | None = None,
    output_dir: str | Path = "runs",
    report: bool = True,
    workers: int = 1,
    worker: bool = False,
) -> optuna.Study:
    """Create or join a study and run trials until it has its trials, its grid is covered, or time is up.

    Example: ``run_sweep("sweeps/cpu_demo.yaml")`` runs the CPU demo into ``runs/cpu_demo/``; the same call on
    another machine with ``storage="postgresql://..."`` joins the same study; ``workers=2`` runs two local
    workers on it, each with half the cores. ``worker=True`` is one such worker: it runs trials only (no
    summary, W&B table or report; its launcher does those).
    """
    sweep, sweep_raw, base_raw = load_sweep(sweep_path)
    if n_trials is not None:
        sweep = sweep.model_copy(update={"n_trials": n_trials})
    name = check_study_name(sweep.study if study_name is None else study_name)  # before anything is written
    out_dir = (Path(output_dir) / name).resolve()
    store, url = resolve_storage(name, storage, output_dir)
    check_same_config(store, name, sweep_raw, base_raw)  # before a resumed study gets any write
    study = optuna.create_study(
        study_name=name,
        storage=store,
        direction="maximize",
        sampler=make_sampler(sweep.sampler, sweep),
        pruner=make_pruner(sweep.pruner),
        load_if_exists=True,
    )
    host = socket.gethostname()
    if not worker:
        console.print(f"[{name}] storage: {redact(url)}")
        console.print(f"[{name}] {power_line(sweep, base_raw)}")
        for key, value in (
            ("sweep_config", sweep_raw),
            ("base_config", base_raw),
            ("output_dir", str(out_dir)),
        ):
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
        lost = retry_lost_trials(study, store, host)
        if lost:
            console.print(f"[{name}] re-queued trials lost by a dead worker: {lost}")
        run_bases(study, sweep, base_raw, out_dir, name)
        check_checker(study, out_dir)
        if sweep.sampler.type in ("grid", "list"):  # queued once by the launcher: two workers never get one
            for params in grid_points(sweep) if sweep.sampler.type == "grid" else sweep.design_points():
                study.enqueue_trial(params, skip_if_exists=True)
    if workers > 1:
        run_workers(workers, sweep_path, url, name, output_dir, n_trials)
    else:
        _work(study, store, sweep, base_raw, out_dir, name, host)
    if worker:
        return study
    console.print(summary_table(study))
    # The end of a study reaches right in the package order (docs/CONTRACTS.md), so these two imports stay
    # here, lazy: neither module imports sweep, and matplotlib/statsmodels load only when a report is due.
    from mathgpt.track_study import log_study

    report_dir = None
    if report:
        from mathgpt.report import write_report

        report_dir = write_report(study, None, storage_url=storage)
        console.print(f"report written to {report_dir}")
    cfg = parse_config(base_raw)
    matrix = None
    if report_dir is not None and (report_dir / "problems.csv").is_file():
        import pandas as pd

        matrix = pd.read_csv(report_dir / "problems.csv")
    log_study(
        study,
        project=cfg.tracking.project,
        mode=cfg.tracking.mode,
        out_dir=out_dir,
        report_dir=report_dir,
        matrix=matrix,
    )
    return study


def _work(
    study: optuna.Study,
    store: optuna.storages.BaseStorage,
    sweep: SweepConfig,
    base_raw: dict,
    out_dir: Path,
    name: str,
    host: str,
) -> None:
    """This process's share of the trials."""
    started, walls = time.time(), []

    def after_trial(st: optuna.Study, t: FrozenTrial) -> None:
        retry_lost_trials(st, store, host)
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
            Objective(sweep, base_raw, out_dir, name, host),
            n_trials=todo,
            timeout=sweep.timeout_s,
            catch=(TrialFailed,),
            callbacks=[after_trial],
        )
