"""What a finished sweep cost, and what per-epoch evaluation, pruning and one-run data-size curves save.

    python bench/sweep_compute.py [--study cpu_demo] [--runs-dir runs] [--storage URL]
    python bench/sweep_compute.py --data-curve 32,64,128,256 [--config experiments/cpu_smollm2.yaml]

Per trial: training tokens, training and evaluation seconds (from each epoch's line in epochs.jsonl) and the
trial's wall time. The baseline is what the same grid of points would cost without the two tricks:
- without per-epoch evaluation, the 1-, 2-, ..., E-epoch points of a trial need E separate runs of 1..E
  epochs, i.e. E(E+1)/2 epochs of training instead of E;
- without pruning, every trial trains its configured E epochs instead of stopping at the pruned epoch.
Savings are in training tokens (machine-independent); training seconds scale the same way.

``--data-curve`` needs no study: it tokenizes the config's real training rows in their nested-prefix order
and compares one run evaluated at each size (``eval.at_examples``) with a separate run per size.
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
from mathgpt.datafiles import nested_subset  # noqa: E402
from mathgpt.record import trial_points  # noqa: E402
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
    # Training tokens of the trial run to its end, and of separate runs for each of its planned points
    # (per epoch count, or per data size for an eval.at_examples trial).
    planned_tokens: float = 0.0
    separate_tokens: float = 0.0


def _planned(points: list[dict], overrides: dict) -> tuple[float, float]:
    """(to-the-end tokens, separate-runs tokens) of one trial, scaled from what it trained so far."""
    last = points[-1]
    sizes = overrides.get("eval.at_examples")
    # A data-size curve shows as points inside the epoch (the sweep's own eval.at_examples is not in the
    # trial's overrides, only its sampled parameters are).
    if sizes or any(not float(p["epoch"]).is_integer() for p in points):
        n_train = int(overrides.get("data.train_size") or round(last["train_examples"] / last["epoch"]))
        sizes = sorted(set(sizes or [p["train_examples"] for p in points]) | {n_train})
        per_example = last["train_tokens"] / last["train_examples"]
        return per_example * n_train, per_example * sum(sizes)
    per_epoch = last["train_tokens"] / last["epoch"]
    e = int(overrides.get("train.epochs", last["epoch"]))
    return per_epoch * e, per_epoch * e * (e + 1) / 2


def trial_costs(trials: list[FrozenTrial]) -> list[TrialCost]:
    """One row per trial that trained (failed and lost trials before their first point have no cost data)."""
    rows = []
    for t in trials:
        points = [p.model_dump() for p in trial_points(t) if p.epoch > 0]
        if not points or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        overrides = t.user_attrs.get("overrides", {})
        planned, separate = _planned(points, overrides)
        rows.append(
            TrialCost(
                number=t.number,
                state=t.state.name,
                params=" ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
                ),
                epochs_run=max(1, round(points[-1]["epoch"])),
                epochs_planned=int(overrides.get("train.epochs", 1)),
                train_tokens=int(points[-1]["train_tokens"]),
                train_s=float(points[-1]["train_wall_s"]),
                eval_s=sum(float(p["eval_wall_s"]) for p in points),
                wall_s=float(t.user_attrs.get("wall_s", 0.0)),
                planned_tokens=planned,
                separate_tokens=separate,
            )
        )
    return rows


def savings(rows: list[TrialCost]) -> dict[str, float]:
    """Training tokens: actual, every trial to its end, and separate runs per point; saved shares."""
    actual = sum(r.train_tokens for r in rows)
    to_end = sum(r.planned_tokens for r in rows)
    separate = sum(r.separate_tokens for r in rows)
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
        "Training tokens against running every point (epoch count or data size) as a separate run:",
        "",
        f"- a separate run for each point: {s['separate_runs_tokens']:,.0f}",
        f"- every trial to its end, evaluated at each point: {s['to_end_tokens']:,.0f} "
        f"(evaluating inside one run saves {s['saved_by_per_epoch_eval']:.1%})",
        f"- what ran, with pruning: {s['actual_tokens']:,.0f} (pruning saves {s['saved_by_pruning']:.1%})",
        f"- saved in all: {s['saved_total']:.1%}",
        "",
        "Per-epoch evaluation alone saves 1 - 2/(E+1) of the training tokens of E-epoch trials (E = 3: 50%); "
        "a one-run data-size curve (eval.at_examples) at four doubling sizes saves about 1 - 256/480 (47%); "
        "one-epoch, one-point trials that are not pruned save nothing.",
        "",
    ]
    return "\n".join(lines)


def data_curve_share(row_tokens: list[int], sizes: list[int]) -> dict[str, float]:
    """Training tokens of one nested-prefix run evaluated at every size vs one separate run per size.

    ``row_tokens`` are the tokens of the training rows in the order the run trains them (the nested prefix).
    """
    if not sizes or max(sizes) > len(row_tokens):
        raise ConfigError(f"sizes {sizes} need at most {len(row_tokens)} rows")
    prefix = [0]
    for n in row_tokens:
        prefix.append(prefix[-1] + n)
    one = prefix[max(sizes)]
    separate = sum(prefix[k] for k in sizes)
    return {
        "one_run_tokens": one,
        "separate_tokens": separate,
        "share": one / separate,
        "one_run_examples": max(sizes),
        "separate_examples": sum(sizes),
    }


def real_row_tokens(config: str, n: int) -> list[int]:
    """Token counts of the config's first ``n`` training rows in nested-prefix order, tokenized as trained."""
    from mathgpt import data
    from mathgpt.config import load_config
    from mathgpt.model import load_tokenizer
    from mathgpt.train import tokenize

    cfg = load_config(config)
    pool = data.load(cfg.data.train, cfg.data.data_dir, sources=cfg.data.sources)
    rows = nested_subset(pool, n, cfg.seed)
    tok = load_tokenizer(cfg.model.name)
    return [len(r["input_ids"]) for r in tokenize(rows, tok, cfg.data.prompt_format, cfg.data.max_seq_len)]


def data_curve_markdown(config: str, sizes: list[int], s: dict[str, float], cmd: str) -> str:
    return "\n".join(
        [
            f"`{cmd}`, {time.strftime('%Y-%m-%d')}: rows of `{config}` tokenized as trained, nested-prefix order.",
            "",
            f"- separate runs at {', '.join(map(str, sizes))} examples: {s['separate_examples']:.0f} examples, "
            f"{s['separate_tokens']:,.0f} training tokens",
            f"- one run evaluated at each size (`eval.at_examples`): {s['one_run_examples']:.0f} examples, "
            f"{s['one_run_tokens']:,.0f} training tokens",
            f"- share of separate runs' training tokens: **{s['share']:.3f}** "
            f"(examples: {s['one_run_examples'] / s['separate_examples']:.3f})",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="cpu_demo")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--storage", default=None)
    p.add_argument("--data-curve", default=None, help="comma-separated sizes, e.g. 32,64,128,256")
    p.add_argument("--config", default=str(REPO / "experiments" / "cpu_smollm2.yaml"))
    args = p.parse_args(argv)
    cmd = "python bench/sweep_compute.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sys.path.insert(0, str(REPO / "bench"))
    from results import write_section

    if args.data_curve:
        try:
            sizes = sorted(int(x) for x in args.data_curve.split(","))
            s = data_curve_share(real_row_tokens(args.config, max(sizes)), sizes)
        except (ConfigError, ValueError) as err:
            print(f"sweep_compute: error: {err}", file=sys.stderr)
            return 2
        text = data_curve_markdown(Path(args.config).name, sizes, s, cmd.strip())
        print(text)
        write_section("data-curve", "## One-run data-size curve vs separate trials\n\n" + text)
        return 0
    try:
        study = open_study(args.study, storage=args.storage, runs_dir=args.runs_dir)
    except ConfigError as err:
        print(f"sweep_compute: error: {err}", file=sys.stderr)
        return 2
    trials = study.get_trials(deepcopy=False)
    rows = trial_costs(trials)
    text = to_markdown(study.study_name, rows, savings(rows), len(trials), study_span_s(trials), cmd.strip())
    print(text)
    write_section("sweep", text)  # to_markdown opens with its own heading
    return 0


if __name__ == "__main__":
    sys.exit(main())
