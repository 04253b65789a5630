"""What a sweep shows on the console: one line per event and the end-of-study table.

The study's W&B run is ``mathgpt.track_study.log_study``.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from mathgpt.record import study_points
from mathgpt.sweep.spec import fmt_params

console = Console(highlight=False, markup=False, soft_wrap=True)  # one line per event, even in a CI log


def fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def summary_table(study: optuna.Study) -> Table:
    bases = study.user_attrs.get("bases") or {}
    accs = ", ".join(f"{b['accuracy']:.3f}" for b in bases.values())
    title = f"study {study.study_name}" + (f", base accuracy {accs}" if bases else "")
    table = Table(title=title)
    for col in ("trial", "params", "accuracy by point", "value", "state", "wall"):
        table.add_column(col)
    stored = study_points(study)
    # A WAITING trial is a grid copy queued twice by launchers started together and never picked: not a trial.
    for t in study.get_trials(deepcopy=False, states=[s for s in TrialState if s != TrialState.WAITING]):
        points = stored[t.number]
        accs = " ".join(f"{p.accuracy:.3f}" for p in points)
        reason = t.user_attrs.get("fail_reason")
        state = t.state.name + (f" ({reason[:60]})" if reason else "")
        value = f"{t.value:.3f}" if t.value is not None else ""
        wall = fmt_s(t.user_attrs.get("wall_s", 0))
        table.add_row(str(t.number), fmt_params(t.params), accs, value, state, wall)
    return table
