"""Files: turns the analysis into report.md / report.html (jinja2 templates), the figures and the CSVs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mathgpt.record import study_bases, study_points
from mathgpt.redact import redact
from mathgpt.report import analysis as an
from mathgpt.report import effects as ef
from mathgpt.report import figures
from mathgpt.report.examples import side_by_side
from mathgpt.report.load import MATRIX_COLUMNS, StudyData, load_study
from mathgpt.report.tables import (
    _num,
    analyse,
    answer_csv,
    answer_sentence,
    answered_sentence,
    baseline_sentence,
    breakdown_table,
    machine_notes,
    points_table,
    tables,
)
from mathgpt.stats import MIN_SEEDS_RETRAIN
from mathgpt.storage import check_study_name

FIGURES = [
    "scaling.png",
    "rates.png",
    "learning.png",
    "knobs.png",
    "importances.png",
    "breakdown.png",
    "tradeoff.png",
]
TEMPLATES = Path(__file__).parent / "templates"


def _md_table(df: pd.DataFrame) -> str:
    # Cells are already formatted (_num); numparse off so tabulate does not reformat "0.10" as "0.1".
    cells = df.map(lambda v: _num(v).replace("|", "\\|"))
    return cells.to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


def _html_table(df: pd.DataFrame) -> str:
    return df.map(_num).to_html(index=False, escape=True, border=0)


def write_report(
    study: optuna.Study,
    out_dir: str | Path | None = None,
    *,
    storage_url: str | None = None,
) -> Path:
    """Write report.md, report.html, the figures, problems.csv, trials.csv and answer.csv for a study."""
    data = load_study(study)
    out = Path(out_dir) if out_dir is not None else Path("analysis") / check_study_name(data.name)
    out.mkdir(parents=True, exist_ok=True)
    results = analyse(data)
    effects = ef.knob_effects(data)
    report_cfg = (study.user_attrs.get("sweep_config") or {}).get("report") or {}
    margin = float(report_cfg.get("general_margin", ef.GENERAL_MARGIN))
    general = ef.general_change(data, margin)
    models = an.models(data)
    breakdown = (
        pd.concat([ef.breakdown(data, m) for m in models], ignore_index=True) if models else pd.DataFrame()
    )
    found, importance_text = ef.importances(study)
    pngs = {
        "scaling.png": (
            figures.scaling(data, results) if models else None,
            "Accuracy against training examples per benchmark: faint marks are single points (offset by setting, 95% Wilson bars); the line is the chosen setting's mean over seeds with its 95% CI, the shaded band the range over seeds, the hatched band the log-linear fit's 95% band, stars the sizes that clear +Δ in the fixed sequence; dashed: each model's base with its 95% CI.",
        ),
        "rates.png": (
            figures.rates(data),
            "Accuracy, answered rate and truncated rate per data size (all points pooled, 95% Wilson bars; dashed: base). A rise in answered with flat accuracy is format learning, not math.",
        ),
        "learning.png": (
            figures.learning(data),
            "Each trial's evaluated points: accuracy with 95% Wilson bars, and training loss.",
        ),
        "knobs.png": (
            figures.knobs(effects),
            "Knob effects as paired differences (same seed, other knobs equal) with 95% CIs; panels only for knobs that vary.",
        ),
        "importances.png": (figures.importance(found) if found else None, importance_text),
        "breakdown.png": (
            figures.breakdown(breakdown) if not breakdown.empty else None,
            "Accuracy by MATH level and subject and by synthetic step count, base and each data size's chosen setting, 95% CIs (first model).",
        ),
        "tradeoff.png": (
            figures.tradeoff(general),
            f"Math gain (95% CI) against general-ability change (its {round(100 * (1 - 2 * data.alpha))}% CI, the TOST's; shaded: the ±{100 * margin:g}-point equivalence margin) for every point with general results, both paired against the base.",
        ),
    }
    figs = []
    for name in FIGURES:
        png, caption = pngs[name]
        (out / name).unlink(missing_ok=True)  # a figure this study no longer has must not linger from a rerun
        if png is not None:
            (out / name).write_bytes(png)
            figs.append({"name": name, "caption": caption, "b64": base64.b64encode(png).decode("ascii")})
    tbl = tables(data, results, effects, general)
    if not breakdown.empty:
        tbl["breakdown"] = breakdown_table(breakdown)
    trials = points_table(data)
    data.matrix[MATRIX_COLUMNS].to_csv(out / "problems.csv", index=False)
    trials.to_csv(out / "trials.csv", index=False)
    answer_csv(results).to_csv(out / "answer.csv", index=False)
    shown = []
    for model, per in results.items():
        tests = next(iter(per.values()))["tests"] if per else pd.DataFrame()
        if not tests.empty:
            answer = next(iter(per.values()))["answer"].size
            pairs = side_by_side(data, model, answer or int(tests["train_examples"].max()))
            shown += [pairs | {"model": model}] if pairs else []
    context = _context(study, data, results, tbl, figs, storage_url) | {"examples": shown}
    context = context | {"importance_note": importance_text}
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_table"] = _md_table
    env.filters["html_table"] = _html_table
    (out / "report.md").write_text(env.get_template("report.md.j2").render(**context))
    (out / "report.html").write_text(env.get_template("report.html.j2").render(**context))
    return out


def _context(
    study: optuna.Study,
    data: StudyData,
    results: dict[str, Any],
    tbl: dict[str, pd.DataFrame],
    figs: list[dict],
    storage_url: str | None,
) -> dict[str, Any]:
    models = list(results)
    primary = [b for b in an.benchmarks(data) if b != "all sets (pooled)"]
    lines = (
        []
        if models
        else [
            "No base run is stored in this study yet (study attribute `bases`), so nothing can be paired with it."
        ]
    )
    for model in models:
        said = [answer_sentence(data, b, results[model][b]) for b in primary]
        said += [baseline_sentence(data, results[model][primary[0]])] if primary else []
        said += [answered_sentence(b, results[model][b]) for b in primary]
        text = " ".join(t for t in said if t)
        lines.append(f"{model}: {text}" if len(models) > 1 else text)
    sel = an.choose(data)
    on_report = bool(len(sel)) and (sel["selected_on"] == "report").any()
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(data.states.items())) or "no trials yet"
    steps = (
        data.points[data.points["trial"].notna()]
        .groupby("train_examples")[["batch_size", "optimizer_steps"]]
        .agg(lambda s: ", ".join(sorted({_num(v) for v in s if pd.notna(v)}, key=str)))
    )
    # Each point's `machine` (docs/CONTRACTS.md): the base runs' and every trial point's with results.
    machines = [b.machine for b in study_bases(study).values()]
    machines += [ln.machine for pts in study_points(study).values() for ln in pts if ln.train_examples]
    machine_lines, machine_warning = machine_notes(machines)
    dashboard = f"mathgpt dashboard {data.name}" + (
        f" --storage {redact(storage_url)}" if storage_url else ""
    )
    return {
        "title": f"MathGPT report: {data.name}",
        "name": data.name,
        "lines": lines,
        "summary": f"{len(study.trials)} trials ({counts}); {len(data.problems)} report problems per model ({', '.join(f'{b}: {int(m.sum())}' for b, m in an.benchmarks(data).items())}); models: {', '.join(models) or 'none'}.",
        "partial": data.states.get("RUNNING", 0),
        "delta": 100 * data.delta,
        "alpha": data.alpha,
        "power": int(100 * data.power),
        "selected_on_report": on_report,
        "select_fingerprint": data.select_fingerprint or "not recorded",
        "eval_fingerprint": data.eval_fingerprint or "not recorded",
        "design": pd.DataFrame(
            {
                "examples": steps.index,
                "batch size": steps["batch_size"],
                "optimizer steps": steps["optimizer_steps"],
            }
        )
        if len(steps)
        else None,
        "tables": tbl,
        "figures": figs,
        "dashboard": dashboard,
        "fails": data.fail_reasons,
        "machines": machine_lines,
        "machine_warning": machine_warning,
        "intervals": sorted(
            {m for per in results.values() for r in per.values() for m in r["tests"]["interval"]}
        ),
        "min_seeds": MIN_SEEDS_RETRAIN,
        "baseline_rule": data.baseline_rule,
    }
