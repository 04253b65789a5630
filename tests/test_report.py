"""The report on a study built here with known per-problem results (docs/CONTRACTS.md's study format).

100 problems; the base gets the first 20 right. Each fine-tuned point breaks 2 of those and fixes enough
others that accuracy = 0.04 * log2(examples seen) + 0.04 exactly: 4 points per doubling, R^2 = 1. Its
McNemar test is then exact with b = 2 broken and c = 2 + (accuracy - 0.20) * 100 fixed problems.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from mathgpt.cli import main
from mathgpt.config import ConfigError
from mathgpt.report import (
    compare_to_base,
    scaling_fits,
    smallest_significant,
    study_frame,
    write_report,
)
from mathgpt.sweep import open_study

N = 100
IDS = [f"p{i:03d}" for i in range(N)]
BASE = [1] * 20 + [0] * 80
SLOPE, INTERCEPT = 0.04, 0.04
DISTS = {
    "data.train_size": IntDistribution(16, 1024, log=True),
    "train.epochs": IntDistribution(1, 3),
    "lora.r": IntDistribution(4, 64, log=True),
    "train.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def law(examples: int) -> float:
    return INTERCEPT + SLOPE * math.log2(examples)


def vector(accuracy: float) -> list[int]:
    """Right on base problems 2..19 (2 broken) and on enough of 20.. to reach the accuracy."""
    fixed = round(accuracy * N) - 18
    return [0, 0] + [1] * 18 + [1] * fixed + [0] * (80 - fixed)


def epoch_line(epoch: int, size: int, tokens: int, with_ids: bool = False) -> dict:
    acc = law(size * epoch)
    line = {
        "epoch": epoch,
        "accuracy": acc,
        "n_eval": N,
        "n_correct": round(acc * N),
        "correct": vector(acc),
        "train_examples": size * epoch,
        "train_tokens": tokens,
        "train_wall_s": 30.0 * epoch,
        "loss": 1.0,
    }
    return line | ({"ids": IDS} if with_ids else {})


def preds(model: str, correct: list[int]) -> list[dict]:
    out = []
    for i, (pid, c) in enumerate(zip(IDS, correct, strict=True)):
        math_set = i % 2 == 1
        out.append(
            {
                "model": model,
                "epoch": 0 if model == "base" else 1,
                "id": pid,
                "eval_set": "math500" if math_set else "gsm8k:test",
                "level": (i % 5) + 1 if math_set else None,
                "subject": "Algebra" if math_set else None,
                "question": f"What is {i} + 1? <b>",
                "gold": str(i + 1),
                "output": f"{model} thinks <script>{i}</script>",
                "extracted": str(i + c),
                "correct": bool(c),
            }
        )
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def add(study: optuna.Study, root: Path, state: TrialState, size: int, epochs: list[dict], **attrs) -> None:
    number = len(study.trials)
    params = {
        "data.train_size": size,
        "train.epochs": max(1, len(epochs)),
        "lora.r": 8 * (1 + number % 2),
        "train.learning_rate": 1e-3 * (1 + number % 3),
    }
    user = {"overrides": params, "trial_dir": str(root / f"trial_{number}"), "device": "cuda", **attrs}
    if epochs:
        user["epochs"] = epochs
    steps = {e["epoch"]: e["accuracy"] for e in epochs}
    value = epochs[-1]["accuracy"] if state == TrialState.COMPLETE else None
    study.add_trial(
        create_trial(
            state=state,
            params=params,
            distributions=DISTS,
            value=value,
            intermediate_values=steps,
            user_attrs=user,
        )
    )


def make_study(runs: Path, name: str = "demo", running_only: bool = False) -> Path:
    root = runs / name
    root.mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("eval_ids", IDS)
    study.set_user_attr("output_dir", str(root))
    study.set_user_attr(
        "base",
        {"accuracy": 0.2, "ci95": [0.13, 0.29], "n_eval": N, "correct": BASE, "dir": str(root / "base")},
    )
    write_jsonl(root / "base" / "predictions.jsonl", preds("base", BASE))
    if running_only:
        # A trial still training: no attrs yet, one epoch in its epochs.jsonl (the sweep tails that file).
        study.add_trial(create_trial(state=TrialState.RUNNING, params={}, distributions={}))
        write_jsonl(root / "trial_0" / "epochs.jsonl", [epoch_line(1, 64, 6400, with_ids=True)])
        # One only reported to Optuna so far: accuracy without per-problem results.
        study.add_trial(
            create_trial(state=TrialState.RUNNING, params={}, distributions={}, intermediate_values={1: 0.25})
        )
        return root
    add(study, root, TrialState.COMPLETE, 32, [epoch_line(1, 32, 3200)])  # trial 0: x=32
    add(study, root, TrialState.COMPLETE, 64, [epoch_line(1, 64, 6400), epoch_line(2, 64, 12800)])  # 64, 128
    add(study, root, TrialState.COMPLETE, 128, [epoch_line(1, 128, 12000)])  # trial 2: x=128, fewer tokens
    add(study, root, TrialState.COMPLETE, 256, [epoch_line(1, 256, 25000)])  # trial 3: best
    add(study, root, TrialState.FAIL, 512, [], fail_reason="CUDA out of memory")
    add(study, root, TrialState.PRUNED, 32, [epoch_line(1, 32, 3200)])
    write_jsonl(
        root / "trial_3" / "predictions.jsonl", preds("base", BASE) + preds("finetuned", vector(law(256)))
    )
    return root


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_study(tmp_path / "runs")
    return tmp_path / "runs"


def test_frame_has_base_and_every_epoch(runs: Path) -> None:
    frame = study_frame(open_study("demo", None, runs))
    assert frame["trial"].isna().sum() == 1 and frame.iloc[0]["accuracy"] == pytest.approx(0.2)
    assert sorted(frame["train_examples"].tolist()) == [0, 32, 32, 64, 128, 128, 256]
    assert set(frame["state"]) == {"BASE", "COMPLETE", "PRUNED"}  # the failed trial has no epochs
    row = frame[(frame["trial"] == 1) & (frame["epoch"] == 2)].iloc[0]
    assert (row["train_size"], row["lora_r"], row["learning_rate"], row["train_tokens"]) == (
        64,
        16,
        2e-3,
        12800,
    )
    assert row["ci_lo"] < row["accuracy"] < row["ci_hi"]


def test_fit_recovers_known_slope(runs: Path) -> None:
    fits = scaling_fits(study_frame(open_study("demo", None, runs)))
    assert fits["all points"].slope == pytest.approx(SLOPE)
    assert fits["all points"].r2 == pytest.approx(1.0)
    assert fits["epoch 1"].n == 5 and fits["epoch 2"] is None  # one point at epoch 2: no line


def test_mcnemar_and_holm_match_statsmodels(runs: Path) -> None:
    comp = compare_to_base(study_frame(open_study("demo", None, runs)))
    assert len(comp) == 6
    want = []
    for _, row in comp.iterrows():
        acc = law(row["train_examples"])
        c = round(acc * N) - 18
        table = [[18, 2], [c, 80 - c]]
        want.append(mcnemar(table, exact=True).pvalue)
        assert (row["base_only"], row["tuned_only"], row["exact"]) == (2, c, True)
        assert row["gain"] == pytest.approx(acc - 0.2)
    assert comp["p"].tolist() == pytest.approx(want)
    assert comp["p_holm"].tolist() == pytest.approx(multipletests(want, method="holm")[1].tolist())


def test_smallest_significant_uses_holm_and_tokens(runs: Path) -> None:
    comp = compare_to_base(study_frame(open_study("demo", None, runs)))
    # Unadjusted, 64 examples (p = 0.039) would pass; Holm over 6 tests leaves 128 examples first.
    assert comp[comp["train_examples"] == 64]["p"].iloc[0] < 0.05
    hit = smallest_significant(comp)
    assert (hit["trial"], hit["epoch"], hit["train_examples"]) == (2, 1, 128)  # 12000 tokens < 12800


def test_nothing_significant_is_said_plainly(tmp_path: Path) -> None:
    root = make_study(tmp_path / "runs", running_only=False)
    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    study = optuna.load_study(study_name="demo", storage=storage)
    study.set_user_attr("base", study.user_attrs["base"] | {"correct": vector(law(256)), "accuracy": 0.36})
    out = write_report("demo", runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Nothing is significant" in md and "Smallest configuration significantly better" not in md


def test_report_files_and_answer(runs: Path, tmp_path: Path) -> None:
    out = write_report("demo", runs_dir=runs, out_dir=tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert {
        "report.md",
        "report.html",
        "trials.csv",
        "scaling.png",
        "compute.png",
        "hyperparameters.png",
        "importances.png",
    } <= names
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    answer = "Smallest configuration significantly better than the base model: trial 2 after epoch 1"
    assert answer in page and answer in md
    assert "Best configuration: trial 3 after epoch 1" in md
    assert page.count("data:image/png;base64,") >= 3 and "](scaling.png)" in md
    assert "+4.00 accuracy points per doubling" in md and "R² = 1.000" in md
    assert "<script>" not in page and "&lt;script&gt;" in page  # model outputs are escaped
    assert "CUDA out of memory" in md and "PRUNED" in md and "GPU-hours" in md
    assert "math500 · level 3" in md and "gsm8k:test" in md
    csv = pd.read_csv(out / "trials.csv")
    assert len(csv) == 7 and {"accuracy", "ci_lo", "ci_hi", "p_holm", "train_tokens"} <= set(csv.columns)


def test_running_study_gives_partial_report(tmp_path: Path) -> None:
    make_study(tmp_path / "runs", running_only=True)
    out = write_report("demo", runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Partial report: 2 trial(s) still running" in md
    assert "trial 0 · epoch 1" in md  # read from the running trial's epochs.jsonl
    assert "Parameter importances need at least 2 complete trials" in md and "CPU-hours" in md
    # Alone in its Holm family, 64 examples (p = 0.039) is significant: the partial answer says so.
    assert "Smallest configuration significantly better than the base model: trial 0 after epoch 1" in md
    frame = pd.read_csv(out / "trials.csv")
    assert frame[frame["trial"] == 1]["accuracy"].tolist() == [0.25]  # plotted, but not testable
    assert frame[frame["trial"] == 1]["p"].isna().all() and frame[frame["trial"] == 0]["p"].notna().all()


def test_empty_study_renders(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "empty"
    root.mkdir(parents=True)
    optuna.create_study(
        study_name="empty", storage=JournalStorage(JournalFileBackend(str(root / "journal.log")))
    )
    out = write_report("empty", runs_dir=tmp_path / "runs", out_dir=tmp_path / "out")
    assert "No base-model result is stored" in (out / "report.html").read_text()
    assert not (out / "importances.png").exists()


def test_cli_report_and_missing_study(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "demo", "--runs-dir", str(runs), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    assert main(["report", "nosuch", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no study journal at" in err and len(err.splitlines()) == 1
    journal = str(runs / "demo" / "journal.log")
    assert main(["report", "other", "--storage", journal, "--out", str(tmp_path / "x")]) == 2
    assert "no study named 'other'" in (err := capsys.readouterr().err) and "(it has: demo)" in err
    bad = tmp_path / "bad" / "x" / "journal.log"
    bad.parent.mkdir(parents=True)
    bad.write_text('not a journal\n{"op_code": 99}\n')
    assert main(["report", "x", "--runs-dir", str(tmp_path / "bad"), "--out", str(tmp_path / "y")]) == 2
    assert "journal.log" in (err := capsys.readouterr().err) and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="no such database file"):
        open_study("demo", f"sqlite:///{tmp_path / 'none.db'}")
