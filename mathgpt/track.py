"""Experiment tracking: the only module (with ``track_study``) that imports wandb.

Offline by default (no account needed; ``wandb sync`` uploads later). Online mode without an API key or
without a reachable server falls back to offline with one line saying so: a sweep must never hang on the
tracker. ``disabled`` gives a null tracker with the same methods.

Every chart has a real x-axis: training metrics are plotted against ``train/step`` (optimizer steps, with
``train/examples_seen`` in the same rows), evaluation metrics against ``eval/examples_seen`` (with
``eval/epoch``); nothing relies on W&B's own auto-incremented ``_step``. The tests read offline runs back
(tests/wandb_offline.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mathgpt.record import Point
from mathgpt.redact import redacted_argv

# Step metrics: each chart's x-axis. W&B plots a metric against the step metric its glob names.
TRAIN_STEP, TRAIN_EXAMPLES = "train/step", "train/examples_seen"
EVAL_EPOCH, EVAL_EXAMPLES = "eval/epoch", "eval/examples_seen"
STEP_METRICS = (TRAIN_STEP, TRAIN_EXAMPLES, EVAL_EPOCH, EVAL_EXAMPLES)


def study_run_id(study: str) -> str:
    """The W&B run id of a study's own run, known before it exists so each trial run can point to it."""
    return "study-" + hashlib.sha1(study.encode()).hexdigest()[:16]


def eval_metrics(line: Point) -> dict[str, float]:
    """The charted numbers of one evaluation point (docs/CONTRACTS.md), unprefixed.

    Rates are over the report slice's ``n_eval`` problems.
    """
    m: dict[str, float] = {"accuracy": line.accuracy}
    m["ci95_lo"], m["ci95_hi"] = line.ci95
    n = line.n_eval
    for key, name in (
        ("n_answered", "answered_rate"),
        ("n_no_answer", "no_answer_rate"),
        ("n_ungradable", "ungradable_rate"),
        ("n_truncated", "truncated_rate"),
    ):
        if n:
            m[name] = getattr(line, key) / n
    m["strict_accuracy"] = line.strict_accuracy
    for name, s in line.by_set.items():
        m[f"{name}/accuracy"] = s["accuracy"]
    if line.select is not None:
        m["select/accuracy"] = line.select.accuracy
        m["select/ci95_lo"], m["select/ci95_hi"] = line.select.ci95
    for name, g in line.general.items():
        for k in ("accuracy", "accuracy_norm"):
            if g.get(k) is not None:
                m[f"general/{name}/{k}"] = g[k]
    return m


class NullTracker:
    """Same methods as the W&B tracker, doing nothing (tests, ``tracking.mode: disabled``)."""

    mode = "disabled"

    def log(self, metrics: dict[str, Any]) -> None: ...
    def log_train(self, step: int, examples_seen: int, metrics: dict[str, Any]) -> None: ...
    def log_eval(self, line: Point) -> None: ...
    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None: ...
    def log_artifact(self, path: Path, name: str, type: str) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class WandbTracker:
    def __init__(self, run, mode: str):
        self.run, self.mode = run, mode
        for m in STEP_METRICS:
            run.define_metric(m)
        run.define_metric("train/*", step_metric=TRAIN_STEP)
        run.define_metric("eval/*", step_metric=EVAL_EXAMPLES)
        run.define_metric("eval/accuracy", step_metric=EVAL_EXAMPLES, summary="max,last")

    def log(self, metrics: dict[str, Any]) -> None:
        """Free-form metrics; charts want ``log_train`` / ``log_eval``, which carry their step metrics."""
        self.run.log(metrics)

    def log_train(self, step: int, examples_seen: int, metrics: dict[str, Any]) -> None:
        """Trainer logs (loss, learning_rate, grad_norm, ...) at optimizer step ``step``; non-numbers dropped."""
        row = {f"train/{k}": v for k, v in metrics.items() if isinstance(v, int | float) and k != "step"}
        self.run.log({**row, TRAIN_STEP: int(step), TRAIN_EXAMPLES: int(examples_seen)})

    def log_eval(self, line: Point) -> None:
        """One evaluation point: x = its ``train_examples`` and ``epoch``."""
        row = {f"eval/{k}": v for k, v in eval_metrics(line).items()}
        self.run.log({**row, EVAL_EPOCH: float(line.epoch), EVAL_EXAMPLES: int(line.train_examples)})

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        import wandb

        art = wandb.Artifact(name, type=type)
        art.add_dir(str(path)) if Path(path).is_dir() else art.add_file(str(path))
        self.run.log_artifact(art)

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def finish(self) -> None:
        self.run.finish()


def _say(msg: str) -> None:
    print(f"mathgpt: {msg}", file=sys.stderr, flush=True)


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        return bool(netrc.netrc().authenticators(host))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(timeout_s: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_mode(mode: str | None) -> str:
    """Config mode, else $WANDB_MODE, else offline; online degrades to offline when it cannot work."""
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode in ("dryrun",):
        mode = "offline"
    if mode not in ("online", "offline", "disabled"):
        _say(f"unknown W&B mode '{mode}', logging offline")
        return "offline"
    if mode == "online" and not _has_api_key():
        _say("W&B online asked but no API key found (wandb login / WANDB_API_KEY): logging offline")
        return "offline"
    if mode == "online" and not _reachable():
        _say("W&B server unreachable: logging offline; upload later with `wandb sync`")
        return "offline"
    return mode


def start_run(
    *,
    project: str,
    name: str,
    group: str | None,
    config: dict,
    mode: str | None,
    dir: Path,
    job_type: str = "finetune",
    run_id: str | None = None,
):
    """A W&B run (or a NullTracker when disabled) writing its files under ``dir``.

    A run with a ``group`` belongs to the study of that name (a sweep sets ``tracking.group`` to it): its
    config gets ``study`` and ``study_run_id``, the id of the study's own run (``track_study.log_study``).
    """
    mode = resolve_mode(mode)
    if group and job_type != "study":
        config = {**config, "study": group, "study_run_id": study_run_id(group)}
    if mode == "disabled":
        return NullTracker()
    import wandb

    dir.mkdir(parents=True, exist_ok=True)
    try:
        with redacted_argv():  # W&B records sys.argv; a --storage URL's password must not reach it
            run = wandb.init(
                project=project,
                name=name,
                group=group,
                config=config,
                mode=mode,
                dir=str(dir),
                job_type=job_type,
                id=run_id,
                resume="allow" if run_id else None,  # a study run logged again updates the same run
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=60, silent=True, console="off"),
            )
    except Exception as err:  # noqa: BLE001 - any tracker failure must not cost the run its results
        if mode == "online":
            _say(f"W&B online failed ({str(err).splitlines()[0]}): logging offline")
            return start_run(
                project=project,
                name=name,
                group=group,
                config=config,
                mode="offline",
                dir=dir,
                job_type=job_type,
                run_id=run_id,
            )
        _say(f"W&B failed ({str(err).splitlines()[0]}): tracking disabled for this run")
        return NullTracker()
    if group and job_type != "study" and getattr(run, "url", None):  # online: the study run's page
        run.config.update({"study_run_url": run.url.rsplit("/", 1)[0] + "/" + study_run_id(group)})
    return WandbTracker(run, mode)
