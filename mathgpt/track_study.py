"""The study's own W&B run (job type ``study``): scaling curve, trials table, per-problem matrix, report files.

It has a fixed id (``track.study_run_id(study)``) so every trial run, started earlier, already carries it in
its config (``study_run_id``) and, online, a link to it (``study_run_url``). It sits in the trials' group.
Logging it again (a sweep resumed, a report rebuilt) writes the same id; ``wandb sync`` then updates that run.

A W&B Report built from ``REPORT_TEMPLATE`` (``wandb-workspaces``) is optional and only online with a key;
offline nothing remote is written and one line says so.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import optuna

from mathgpt import track
from mathgpt.record import KNOB_COLUMNS, MATRIX_COLUMNS, study_bases, study_points

# W&B refuses tables above 200,000 rows (wandb.Table.MAX_ARTIFACT_ROWS); problems.csv in the report
# artifact always has the full matrix.
MAX_TABLE_ROWS = 200_000
CURVE_COLUMNS = [
    "trial",
    "model",
    "seed",
    "train_examples",
    "epoch",
    "accuracy",
    "ci95_lo",
    "ci95_hi",
    "n_eval",
]

# The W&B Report's layout: the trials' eval and train charts on their step-metric axes, then the study run.
REPORT_TEMPLATE: dict[str, Any] = {
    "title": "MathGPT study {study}",
    "description": "How accuracy grows with LoRA fine-tuning data; each trial is a run in group {study}.",
    "panels": [
        {"title": "accuracy vs examples seen", "x": "eval/examples_seen", "y": ["eval/accuracy"]},
        {"title": "accuracy vs epoch", "x": "eval/epoch", "y": ["eval/accuracy", "eval/strict_accuracy"]},
        {"title": "answered rate", "x": "eval/examples_seen", "y": ["eval/answered_rate"]},
        {"title": "training loss", "x": "train/examples_seen", "y": ["train/loss"]},
    ],
}


def _say(msg: str) -> None:
    print(f"mathgpt: {msg}", file=sys.stderr, flush=True)


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def curve_rows(study: optuna.Study) -> list[list[Any]]:
    """One row per evaluation point: each base at 0 examples, then every finished trial's points."""
    rows = []
    for model, b in study_bases(study).items():
        rows.append(["base", model, None, 0, 0.0, b.accuracy, *b.ci95, b.n_eval])
    stored = study_points(study)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        for p in stored[t.number]:
            if p.point == 0:
                continue  # a trial's own base line is the base row above
            row = [str(t.number), p.knobs["model"], p.knobs["seed"], p.train_examples, p.epoch]
            rows.append(row + [p.accuracy, *p.ci95, p.n_eval])
    return [[_num(x) for x in r] for r in rows]


def trial_rows(study: optuna.Study) -> tuple[list[str], list[list[Any]]]:
    """The trials table: one row per trial, whatever its state, with its last point's accuracy and CI."""
    cols = ["trial", "state", "value", *KNOB_COLUMNS, "accuracy", "ci95_lo", "ci95_hi", "train_examples"]
    cols += ["train_tokens", "wall_s", "trial_dir", "fail_reason"]
    rows, stored = [], study_points(study)
    for t in study.get_trials(deepcopy=False):
        u, pts = t.user_attrs, stored[t.number]
        last = pts[-1] if pts else None
        knobs = last.knobs if last else {}
        row = [t.number, t.state.name, t.value, *(knobs.get(k) for k in KNOB_COLUMNS)]
        row += [last.accuracy, *last.ci95] if last else [None, None, None]
        row += [
            last.train_examples if last else None,
            u.get("train_tokens"),
            u.get("wall_s"),
            u.get("trial_dir"),
        ]
        rows.append([_num(x) for x in row + [u.get("fail_reason")]])
    return cols, rows


def log_study(
    study: optuna.Study,
    *,
    project: str,
    mode: str | None,
    out_dir: Path,
    report_dir: Path | None,
    matrix: Any | None,
    wandb_report: bool = False,
) -> None:
    """Log the study's W&B run under ``out_dir`` (``runs/<study>/``).

    ``matrix`` is the per-problem matrix (a pandas DataFrame with ``MATRIX_COLUMNS``) or None; ``report_dir``
    (``analysis/<study>/``) is uploaded as an artifact of type ``report`` when given. ``wandb_report`` also
    builds a W&B Report (online with a key only).
    """
    if matrix is not None:  # before the run starts: a bad matrix must not leave a half-logged run
        missing = [c for c in MATRIX_COLUMNS if c not in matrix.columns]
        if missing:
            raise ValueError(f"per-problem matrix lacks columns {missing} (docs/CONTRACTS.md)")
    name = study.study_name
    tracker = track.start_run(
        project=project,
        name=f"{name}-study",
        group=name,
        config={
            "study": name,
            "sweep": study.user_attrs.get("sweep_config"),
            "bases": {
                m: {k: v for k, v in b.items() if k != "correct"}
                for m, b in (study.user_attrs.get("bases") or {}).items()
            },
            "eval_fingerprint": study.user_attrs.get("eval_fingerprint"),
            "checker_version": study.user_attrs.get("checker_version"),
        },
        mode=mode,
        dir=Path(out_dir),
        job_type="study",
        run_id=track.study_run_id(name),
    )
    if isinstance(tracker, track.NullTracker):
        return
    import wandb

    run = tracker.run
    curve = wandb.Table(columns=CURVE_COLUMNS, data=curve_rows(study))
    title = f"{name}: accuracy vs training examples (ci95_lo/ci95_hi: Wilson 95% interval)"
    run.log(
        {"scaling_curve": wandb.plot.line(curve, "train_examples", "accuracy", stroke="trial", title=title)}
    )
    cols, rows = trial_rows(study)
    tracker.log_table("trials", cols, rows)
    if matrix is not None:
        if len(matrix) > MAX_TABLE_ROWS:
            _say(
                f"per-problem matrix has {len(matrix)} rows, over W&B's table limit: only in the report artifact"
            )
        else:
            run.log({"problems": wandb.Table(dataframe=matrix[MATRIX_COLUMNS])})
    if report_dir is not None and Path(report_dir).is_dir():
        tracker.log_artifact(Path(report_dir), name=f"{name}-report", type="report")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    tracker.summary({"n_trials": len(rows), "n_complete": len(done)})
    if done:
        best = max(done, key=lambda t: t.value)
        tracker.summary({"best_trial": best.number, "best_value": best.value})
    tracker.finish()
    if wandb_report:
        build_wandb_report(name, project, tracker.mode)


def report_blocks(study: str, project: str, entity: str) -> list[Any]:
    """The W&B Report's blocks from ``REPORT_TEMPLATE`` (built without network; saving needs it)."""
    import wandb_workspaces.reports.v2 as wr

    runs = wr.Runset(entity=entity, project=project, name=study, filters=f"Group = '{study}'")
    panels = [wr.LinePlot(title=p["title"], x=p["x"], y=p["y"]) for p in REPORT_TEMPLATE["panels"]]
    desc = REPORT_TEMPLATE["description"].format(study=study)
    return [
        wr.P(text=desc),
        wr.PanelGrid(runsets=[runs], panels=panels),
        wr.H1(text="Study run: scaling curve, trials, per-problem matrix"),
        wr.PanelGrid(
            runsets=[
                wr.Runset(entity=entity, project=project, filters=f"JobType = 'study' and Group = '{study}'")
            ],
            panels=[
                wr.CustomChart.from_table(
                    "scaling_curve_table",
                    chart_fields={"x": "train_examples", "y": "accuracy", "stroke": "trial"},
                    chart_strings={"title": f"{study}: accuracy vs training examples"},
                )
            ],
        ),
    ]


def build_wandb_report(study: str, project: str, mode: str) -> str | None:
    """Save a W&B Report for the study (online only); returns its URL, or None with one line saying why."""
    if mode != "online":
        _say("W&B Report not built: W&B is offline, nothing was sent (log online with a key to build it)")
        return None
    try:
        import wandb
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        _say("W&B Report not built: pip install wandb-workspaces")
        return None
    try:
        entity = wandb.Api().default_entity
        report = wr.Report(
            project=project,
            entity=entity,
            title=REPORT_TEMPLATE["title"].format(study=study),
            blocks=report_blocks(study, project, entity),
        )
        report.save()
    except Exception as err:  # noqa: BLE001 - the report is extra; the study's runs are already logged
        _say(f"W&B Report not built: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return None
    _say(f"W&B Report: {report.url}")
    return report.url
