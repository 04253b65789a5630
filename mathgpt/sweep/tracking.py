"""What a sweep shows: one console line per event, the end-of-study table, and the W&B study table.

``log_study_table`` is the pre-split W&B study run, kept as it was until ``mathgpt.track_study`` replaces it.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from mathgpt import track

console = Console(highlight=False, markup=False, soft_wrap=True)  # one line per event, even in a CI log


def fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def summary_table(study: optuna.Study) -> Table:
    bases = study.user_attrs.get("bases") or {}
    accs = ", ".join(f"{b['accuracy']:.3f}" for b in bases.values())
    title = f"study {study.study_name}" + (f", base accuracy {accs}" if bases else "")
    table = Table(title=title)
    for col in ("trial", "params", "accuracy by point", "value", "state", "wall"):
        table.add_column(col)
    for t in study.get_trials(deepcopy=False):
        points = t.user_attrs.get("points") or t.user_attrs.get("epochs") or []  # epochs: pre-split studies
        accs = " ".join(f"{p['accuracy']:.3f}" for p in points)
        reason = t.user_attrs.get("fail_reason")
        state = t.state.name + (f" ({reason[:60]})" if reason else "")
        value = f"{t.value:.3f}" if t.value is not None else ""
        wall = fmt_s(t.user_attrs.get("wall_s", 0))
        table.add_row(str(t.number), _fmt_params(t.params), accs, value, state, wall)
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
