"""A study graded by an older checker: the sweep refuses it, `mathgpt regrade` re-scores it, the report reads it.

Two report problems; the stored verdicts come from a checker that called "So the answer is 4." wrong. The
current checker grades it right, so after regrade every point's accuracy moves from its stored value.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

import mathgpt.sweep as sw
from mathgpt.checker import CHECKER_VERSION
from mathgpt.cli import main
from mathgpt.config import ConfigError
from mathgpt.record import ids_fingerprint
from mathgpt.report import write_report
from mathgpt.report.load import PairingError
from tests import records
from tests.conftest import tiny_run_config

IDS = ["p0", "p1"]
FP = ids_fingerprint(IDS)
OUTPUTS = {"p0": "So the answer is 4.", "p1": "The answer is 5."}  # gold 4 for both


def write_run(run: Path, model: str, points: list[int]) -> None:
    """predictions.jsonl as a run writes it, with the old checker's verdicts (everything wrong)."""
    run.mkdir(parents=True)
    rows = [
        {"model": model, "point": n, "epoch": float(n), "train_examples": 8 * n, "slice": "report", "id": i,
         "eval_set": "synthetic:test", "grader": "gsm8k", "gold": "4", "output": OUTPUTS[i], "extracted": None, "correct": False,
         "status": "no_answer", "reason": "old", "strict_correct": False, "answered": False, "truncated": False}
        for n in points for i in IDS
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run / "predictions.jsonl").write_text(text + '{"model": "fine')  # torn last line: a killed writer


def make_study(root: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "journal.log"))
    )
    study = optuna.create_study(study_name=root.name, storage=storage, direction="maximize")
    old = {"correct": [0, 0], "answered": [0, 0], "status": ["no_answer"] * 2, "fingerprint": FP}
    write_run(root / "base", "base", [0])
    base = records.point([0, 0], point=0, epoch=0.0, train_examples=0, checker_version="old") | old
    study.set_user_attr("bases", {"tiny": base | {"dir": str(root / "base")}})
    write_run(root / "base-fs", "base", [0])  # a few-shot baseline: re-scored like the base
    study.set_user_attr("baselines", {"tiny": {"fs": base | {"dir": str(root / "base-fs")}}})
    study.set_user_attr("eval_problems", [{"id": i, "eval_set": "synthetic:test"} for i in IDS])
    study.set_user_attr("eval_fingerprint", FP)
    study.set_user_attr("checker_version", "old")
    for n, version in enumerate(["old", CHECKER_VERSION]):  # trial 1: resumed after a checker update
        write_run(root / f"trial_{n}", "finetuned", [1])
        pt = records.point([0, 0], checker_version=version) | old
        attrs = {"points": [pt], "trial_dir": str(root / f"trial_{n}")}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=attrs))
    return study


def test_refuse_then_regrade_then_report(tmp_path, capsys):
    root = tmp_path / "runs" / "s"
    root.mkdir(parents=True)
    study = make_study(root)
    # refuse: the report will not pair verdicts of two checkers, nor will the sweep add trials to the study
    with pytest.raises(PairingError, match="mathgpt regrade"):
        write_report(study, tmp_path / "before")
    with pytest.raises(ConfigError, match=f"run `mathgpt regrade {root}` first"):
        sw.check_checker(study, root)
    grid = {"size": {"key": "data.train_size", "type": "categorical", "choices": [8]}}
    sweep = sw.SweepConfig(study="s", base_config="b", timeout_s=9, sampler={"type": "grid"}, params=grid)
    study.enqueue_trial({"size": 8, "seed": 0})
    objective = sw.Objective(sweep, tiny_run_config(Path("tiny")), root, "s", "h")
    study.optimize(objective, n_trials=1, catch=(sw.TrialFailed,))
    refused = study.trials[-1]
    assert refused.state == TrialState.FAIL and "mathgpt regrade" in refused.user_attrs["fail_reason"]
    assert not (root / f"trial_{refused.number}").exists()  # refused before any run started

    # regrade the study: every run re-scored and named, the study's stored points with them
    assert main(["regrade", str(root)]) == 0
    out = capsys.readouterr().out
    assert sorted(line.split("/")[-2] for line in out.splitlines() if line.startswith("wrote")) == [
        "base", "base-fs", "trial_0", "trial_1"
    ]  # fmt: skip
    study = sw.open_study("s", runs_dir=tmp_path / "runs")
    assert study.user_attrs["checker_version"] == CHECKER_VERSION
    fs = study.user_attrs["baselines"]["tiny"]["fs"]
    assert (
        fs["checker_version"] == CHECKER_VERSION and fs["correct"] == [1, 0] and fs["dir"].endswith("base-fs")
    )
    sw.check_checker(study, root)  # the sweep accepts the study again

    # report: it reads the regraded verdicts (p0 is now right everywhere)
    trials = pd.read_csv(write_report(study, tmp_path / "after") / "trials.csv")
    assert trials["accuracy"].tolist() == [0.5, 0.5, 0.5]
    matrix = pd.read_csv(tmp_path / "after" / "problems.csv")
    assert matrix.loc[matrix["problem_id"] == "p0", "status"].eq("correct").all()
