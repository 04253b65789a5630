"""The study's W&B run, logged offline and read back from its .wandb file: curve, tables, artifact, links."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mathgpt.track import study_run_id
from mathgpt.track_study import MATRIX_COLUMNS, build_wandb_report, curve_rows, log_study, report_blocks
from tests import records
from tests.wandb_offline import read_offline_run


def make_study(tmp_path: Path, name: str = "demo") -> optuna.Study:
    """A finished in-memory study with the user attrs a sweep writes (docs/CONTRACTS.md)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, direction="maximize")
    base = records.point([1, 0] * 4, point=0, epoch=0.0, train_examples=0, accuracy=0.25, ci95=[0.1, 0.5])
    study.set_user_attr("bases", {"tiny": {**base, "dir": "runs/demo/base"}})
    study.set_user_attr("sweep_config", {"study": name})
    for n, size in enumerate([16, 32]):
        t = study.ask()
        knobs = records.KNOBS | {"train_size": size, "lora_r": 4}
        pts = [
            base
            | {
                "point": i,
                "epoch": i,
                "train_examples": size * i,
                "accuracy": 0.25 + 0.125 * i * (n + 1),
                "knobs": knobs,
            }
            for i in (0, 1, 2)
        ]
        t.set_user_attr("points", pts)
        t.set_user_attr("trial_dir", str(tmp_path / f"trial_{n}"))
        study.tell(t, pts[-1]["accuracy"])
    failed = study.ask()
    failed.set_user_attr("fail_reason", "exit 1: out of memory")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return study


def matrix_for(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        for pid in ("p1", "p2"):
            row = dict.fromkeys(MATRIX_COLUMNS, None)
            row.update(model="tiny", trial=t.number, point=2, problem_id=pid, correct=1, status="correct")
            rows.append(row)
    return pd.DataFrame(rows)


def test_curve_has_the_base_then_each_trial_point():
    study = make_study(Path("/x"))
    rows = curve_rows(study)
    assert rows[0][:4] == ["base", "tiny", None, 0] and rows[0][6:8] == [0.1, 0.5]
    assert [(r[0], r[3]) for r in rows[1:]] == [("0", 16), ("0", 32), ("1", 32), ("1", 64)]


def test_study_run_offline_has_curve_tables_artifact_and_id(tmp_path, capsys):
    study = make_study(tmp_path)
    report = tmp_path / "analysis" / "demo"
    report.mkdir(parents=True)
    (report / "report.html").write_text("<html>report</html>")
    (report / "problems.csv").write_text("model,trial\n")
    out = tmp_path / "runs" / "demo"
    log_study(
        study,
        project="mathgpt-test",
        mode="offline",
        out_dir=out,
        report_dir=report,
        matrix=matrix_for(study),
        wandb_report=True,
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        "mathgpt: W&B Report not built: W&B is offline, nothing was sent (log online with a key to build it)"
    ]
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir, wait_s=30)
    assert run["complete"] and run["id"] == study_run_id("demo")
    assert run["job_type"] == "study" and run["group"] == "demo"
    assert (
        run["config"]["bases"]["tiny"]["accuracy"] == 0.25 and "correct" not in run["config"]["bases"]["tiny"]
    )
    assert run["summary"]["best_trial"] == 1 and run["summary"]["n_trials"] == 3

    logged = {k: v for row in run["history"] for k, v in row.items() if isinstance(v, dict) and "path" in v}
    assert {"scaling_curve_table", "trials", "problems"} <= set(logged)

    def table(key: str) -> tuple[list, list]:
        t = json.loads((run_dir / "files" / logged[key]["path"]).read_text())
        return t["columns"], t["data"]

    cols, data = table("scaling_curve_table")
    assert {"train_examples", "accuracy", "ci95_lo", "ci95_hi"} <= set(cols) and len(data) == 5
    cols, data = table("trials")
    by_trial = {r[cols.index("trial")]: r for r in data}
    assert (
        by_trial[2][cols.index("state")] == "FAIL"
        and "out of memory" in by_trial[2][cols.index("fail_reason")]
    )
    assert by_trial[1][cols.index("accuracy")] == 0.75 and by_trial[1][cols.index("train_size")] == 32
    cols, data = table("problems")
    assert cols == MATRIX_COLUMNS and len(data) == 4

    raw = b"".join(p.read_bytes() for p in run_dir.rglob("*.wandb"))
    assert b"demo-report" in raw and b"report.html" in raw, "report folder not logged as an artifact"


def test_matrix_without_the_contract_columns_is_refused(tmp_path):
    study = make_study(tmp_path)
    with pytest.raises(ValueError, match="lacks columns"):
        log_study(
            study,
            project="p",
            mode="offline",
            out_dir=tmp_path,
            report_dir=None,
            matrix=pd.DataFrame({"trial": [0]}),
        )
    assert not list(tmp_path.rglob("offline-run-*"))  # refused before any W&B run started


def test_report_template_builds_offline_and_needs_online_to_save(capsys):
    blocks = report_blocks("demo", "mathgpt", entity="someone")
    assert len(blocks) == 4
    assert build_wandb_report("demo", "mathgpt", "offline") is None
    assert "offline" in capsys.readouterr().err
