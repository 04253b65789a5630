"""What a finished sweep cost, and what per-epoch evaluation and pruning saved.

    python bench/sweep_compute.py [--study cpu_demo] [--runs-dir runs] [--storage URL] [--out FILE.md]

Per trial: training tokens, training and evaluation seconds (from each epoch's line in epochs.jsonl) and the
trial's wall time. The baseline is what the same grid of points would cost without the two tricks:
- without per-epoch evaluation, the 1-, 2-, ..., E-epoch points of a trial need E separate runs of 1..E
  epochs, i.e. E(E+1)/2 epochs of training instead of E;
- without pruning, every trial trains its configured E epochs instead of stopping at the pruned epoch.
Savings are in training tokens (machine-independent); training seconds scale the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mathgpt.config import ConfigError  # noqa: E402
from mathgpt.sweep import open_study  # noqa: E402


@dataclass(frozen=True)
class TrialCost:
    number: int
    state: str
    params: str
    epochs_run: int
    epochs_planned: int
    train_tokens: int
    train_s: float
    eval_s: float
    wall_s: float

    @property
    def tokens_per_epoch(self) -> float:
        return self.train_tokens / self.epochs_run if self.epochs_run else 0.0


def trial_costs(trials: list[FrozenTrial]) -> list[TrialCost]:
    """One row per trial that trained (failed and lost trials before their first epoch have no cost data)."""
    rows = []
    for t in trials:
        epochs = t.user_attrs.get("epochs") or []
        if not epochs or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        rows.append(
            TrialCost(
                number=t.number,
                state=t.state.name,
                params=" ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
                ),
                epochs_run=epochs[-1]["epoch"],
                epochs_planned=int(t.user_attrs["overrides"]["train.epochs"]),
                train_tokens=int(epochs[-1]["train_tokens"]),
                train_s=float(epochs[-1]["train_wall_s"]),
                eval_s=sum(float(e["eval_wall_s"]) for e in epochs),
                wall_s=float(t.user_attrs.get("wall_s", 0.0)),
            )
        )
    return rows


def savings(rows: list[TrialCost]) -> dict[str, float]:
    """Training tokens: actual, every trial to its end, and separate runs per epoch count; saved shares."""
    actual = sum(r.train_tokens for r in rows)
    to_end = sum(r.tokens_per_epoch * r.epochs_planned for r in rows)
    separate = sum(r.tokens_per_epoch * r.epochs_planned * (r.epochs_planned + 1) / 2 for r in rows)
    share = (lambda x: x / separate) if separate else (lambda x: 0.0)
    return {
        "actual_tokens": actual,
        "to_end_tokens": to_end,
        "separate_runs_tokens": separate,
        "saved_by_per_epoch_eval": share(separate - to_end),
        "saved_by_pruning": share(to_end - actual),
        "saved_total": share(separate - actual),
    }


def study_span_s(trials: list[FrozenTrial]) -> float:
    """Seconds from the first trial's start to the last trial's end (the base run before it is not counted)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def to_markdown(
    study_name: str, rows: list[TrialCost], s: dict[str, float], n_trials: int, span_s: float, cmd: str
) -> str:
    lines = [
        f"## Sweep compute: `{study_name}`",
        "",
        f"`{cmd}` on {platform.machine()} with {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}. "
        f"{len(rows)} of {n_trials} trials trained (failed and lost trials are left out); "
        f"{span_s:.0f} s from the first trial's start to the last one's end.",
        "",
        "| trial | params | state | epochs | train tokens | train s | eval s | trial wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.number} | {r.params} | {r.state} | {r.epochs_run}/{r.epochs_planned} | "
            f"{r.train_tokens:,} | {r.train_s:.1f} | {r.eval_s:.1f} | {r.wall_s:.1f} |"
        )
    total_wall = sum(r.wall_s for r in rows)
    lines += [
        f"| all | | | | {s['actual_tokens']:,.0f} | {sum(r.train_s for r in rows):.1f} | "
        f"{sum(r.eval_s for r in rows):.1f} | {total_wall:.1f} |",
        "",
        "Training tokens against running every point to its end as separate runs per epoch count:",
        "",
        f"- separate runs for each epoch count: {s['separate_runs_tokens']:,.0f}",
        f"- every trial to its last epoch, evaluated after each: {s['to_end_tokens']:,.0f} "
        f"(per-epoch evaluation saves {s['saved_by_per_epoch_eval']:.1%})",
        f"- what ran, with pruning: {s['actual_tokens']:,.0f} (pruning saves {s['saved_by_pruning']:.1%})",
        f"- saved in all: {s['saved_total']:.1%}",
        "",
        "Per-epoch evaluation alone saves 1 - 2/(E+1) of the training tokens of E-epoch trials (E = 3: 50%); "
        "one-epoch trials that are not pruned save nothing.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="cpu_demo")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--storage", default=None)
    args = p.parse_args(argv)
    try:
        study = open_study(args.study, storage=args.storage, runs_dir=args.runs_dir)
    except ConfigError as err:
        print(f"sweep_compute: error: {err}", file=sys.stderr)
        return 2
    trials = study.get_trials(deepcopy=False)
    rows = trial_costs(trials)
    cmd = "python bench/sweep_compute.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(study.study_name, rows, savings(rows), len(trials), study_span_s(trials), cmd.strip())
    print(text)
    sys.path.insert(0, str(REPO / "bench"))
    from results import write_section

    write_section("sweep", "## Sweep compute\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
