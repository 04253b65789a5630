"""Experiment tracking: the only module that imports wandb.

Offline by default (no account needed; ``wandb sync`` uploads later). Online mode without an API key or
without a reachable server falls back to offline with one line saying so: a sweep must never hang on the
tracker. ``disabled`` gives a null tracker with the same methods.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class NullTracker:
    """Same methods as the W&B tracker, doing nothing (tests, ``tracking.mode: disabled``)."""

    mode = "disabled"
    dir: Path | None = None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None: ...
    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None: ...
    def log_artifact(self, path: Path, name: str, type: str) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class WandbTracker:
    def __init__(self, run, mode: str):
        self.run, self.mode = run, mode
        self.dir = Path(run.dir) if getattr(run, "dir", None) else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

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
):
    """A W&B run (or a NullTracker when disabled) writing its files under ``dir``."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return NullTracker()
    import wandb

    dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project,
            name=name,
            group=group,
            config=config,
            mode=mode,
            dir=str(dir),
            job_type=job_type,
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
            )
        _say(f"W&B failed ({str(err).splitlines()[0]}): tracking disabled for this run")
        return NullTracker()
    return WandbTracker(run, mode)
