"""Verdicts: status and reason, "could not grade" kept apart from "wrong", strict vs flexible, regrade."""

from __future__ import annotations

import json
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from mathgpt.checker import CHECKER_VERSION, Verdict, grade, grade_both, pool, warm_up
from mathgpt.cli import main
from mathgpt.config import ConfigError
from mathgpt.evaluate import verdict_counts, verdict_fields
from mathgpt.regrade import regrade
from tests.checker_cases import frozen_workers

# Equal only symbolically (goes to the worker), and ~0.2 s of sympy, so it cannot beat a zero timeout.
SYMBOLIC = ("1", "\\boxed{\\sin^2 x + \\cos^2 x}")


@pytest.mark.parametrize(
    ("gold", "response", "dataset", "status", "extracted"),
    [
        ("18", "The answer is 18.", "gsm8k", "correct", "18"),
        ("18", "The answer is 17.", "gsm8k", "wrong", "17"),
        ("18", "I am not sure how to solve this.", "gsm8k", "no_answer", None),
        ("18", "The answer is 12 or 18.", "gsm8k", "no_answer", None),
        ("\\sqrt{2}", "\\boxed{2^{1/2}}", "math", "correct", "2^{1/2}"),
        ("\\sqrt{2}", "\\boxed{2^{1/3}}", "math", "wrong", "2^{1/3}"),
        ("", "The answer is 5.", "gsm8k", "ungradable", "5"),  # nothing to compare against
        ("1" * 700, "The answer is 5.", "gsm8k", "ungradable", "5"),  # gold over the length cap
    ],
    ids=["correct", "wrong", "no-answer", "hedge", "symbolic", "symbolic-wrong", "empty-gold", "long-gold"],
)
def test_status(gold: str, response: str, dataset: str, status: str, extracted: str | None) -> None:
    verdict = grade(gold, response, dataset)
    assert (verdict.status, verdict.extracted) == (status, extracted)
    assert verdict.correct is (status == "correct")
    assert verdict.reason and len(verdict.reason) <= 80


def test_verdict_is_frozen() -> None:
    verdict = grade("1", "1", "gsm8k")
    with pytest.raises(FrozenInstanceError):
        verdict.correct = False  # type: ignore[misc]
    assert isinstance(verdict, Verdict) and CHECKER_VERSION.count(".") == 1


def test_timeout_is_ungradable_not_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    assert warm_up()
    monkeypatch.setattr(pool, "CHECK_TIMEOUT_S", 0.05)  # every symbolic check now times out
    start = time.perf_counter()
    with frozen_workers():
        verdict = grade(*SYMBOLIC, "math")
    assert (verdict.status, verdict.reason, verdict.correct) == ("ungradable", "timeout", False)
    assert time.perf_counter() - start < 1.0
    assert grade("5", "The answer is 5.", "gsm8k").status == "correct"  # in-process checks never time out
    monkeypatch.undo()
    assert grade(*SYMBOLIC, "math").status == "correct"  # a fresh worker answers again


def test_dead_worker_is_ungradable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert warm_up()
    ask = pool._Worker.ask

    def die_then_ask(worker: pool._Worker, *args: object) -> tuple[bool | None, str]:
        worker.proc.kill()  # the worker dies while it holds the request (as an out-of-memory kill does)
        worker.proc.wait()
        return ask(worker, *args)

    monkeypatch.setattr(pool._Worker, "ask", die_then_ask)
    verdict = grade(*SYMBOLIC, "math")
    assert (verdict.status, verdict.reason) == ("ungradable", "worker died")
    monkeypatch.undo()
    assert grade(*SYMBOLIC, "math").status == "correct"  # the dead one was replaced


@pytest.mark.parametrize(
    ("response", "flexible", "strict"),
    [
        ("The answer is 18.", "correct", "correct"),
        ("Total 18.\n#### 18", "correct", "correct"),
        ("So it is $\\boxed{18}$.", "correct", "correct"),
        ("She has 9 eggs.\nSo she makes **18** dollars.", "correct", "no_answer"),  # bold
        ("18", "correct", "no_answer"),  # bare answer
        ("She sells 9 eggs.\nTherefore, she makes $18 a day.", "correct", "no_answer"),  # conclusion
        ("The answer is 17.\nSo she makes **18**.", "correct", "wrong"),  # strict keeps the configured one
    ],
    ids=["phrase", "hash", "boxed", "bold", "bare", "conclusion", "bold-after-phrase"],
)
def test_strict_reads_only_the_configured_format(response: str, flexible: str, strict: str) -> None:
    assert grade("18", response, "gsm8k").status == flexible
    assert grade("18", response, "gsm8k", mode="strict").status == strict


def test_bad_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown checker mode"):
        grade("1", "1", "gsm8k", mode="lenient")


def test_evaluation_records_and_counts() -> None:
    rows = [("18", "The answer is 18."), ("18", "So **18**."), ("18", "no idea"), ("", "The answer is 3.")]
    records = [verdict_fields(grade(g, r, "gsm8k"), grade(g, r, "gsm8k", mode="strict")) for g, r in rows]
    assert [r["status"] for r in records] == ["correct", "correct", "no_answer", "ungradable"]
    assert [r["answered"] for r in records] == [True, True, False, True]
    assert [r["strict_correct"] for r in records] == [True, False, False, False]
    counts = verdict_counts(records)
    assert counts == {
        "n_answered": 3,
        "n_no_answer": 1,
        "n_ungradable": 1,
        "strict_accuracy": 0.25,
        "checker_version": CHECKER_VERSION,
    }


# ------------------------------------------------------------------------------------------------- regrade

OUTPUTS = [
    ("gsm8k:test", "Natalia sold 24 clips.\n#### 72", "48 + 24 = 72.\nThe answer is 72."),
    ("gsm8k:test", "#### 5", "So she has **5** left."),
    ("gsm8k:test", "#### 5", "I do not know."),
    ("math500", "\\frac{\\sqrt{3}}{2}", "Thus $\\boxed{\\frac{1}{2}\\sqrt{3}}$."),
    ("math500", "(1,234)", "The answer is $1234$."),
]


def _write_run(run: Path, *, old_format: bool = False) -> list[dict]:
    run.mkdir(parents=True)
    records = []
    for i, (eval_set, gold, output) in enumerate(OUTPUTS):
        dataset = "math" if eval_set == "math500" else "gsm8k"
        record = {
            "model": "base",
            "point": 0,
            "epoch": 0,
            "id": f"p{i}",
            "eval_set": eval_set,
            "grader": dataset,
        }
        record |= {"gold": gold, "output": output}
        fields = verdict_fields(grade(gold, output, dataset), grade(gold, output, dataset, mode="strict"))
        record |= {"extracted": fields["extracted"], "correct": fields["correct"]} if old_format else fields
        records.append(record)
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "metrics.json").write_text(json.dumps({"checker_version": CHECKER_VERSION}))
    return records


def test_regrade_reproduces_stored_verdicts(tmp_path: Path) -> None:
    stored = _write_run(tmp_path / "run")
    lines = regrade(tmp_path / "run")
    assert len(lines) == 2 and "changed 0" in lines[0] and lines[1].endswith("regraded.jsonl (5 records)")
    assert f"checker {CHECKER_VERSION} -> {CHECKER_VERSION}" in lines[0]
    regraded = [json.loads(x) for x in (tmp_path / "run" / "regraded.jsonl").read_text().splitlines()]
    for before, after in zip(stored, regraded, strict=True):
        assert {k: after[k] for k in before} == before
    assert [r["correct"] for r in regraded] == [True, True, False, True, False]


def test_regrade_study_reports_every_run_and_refuses_old_records(tmp_path: Path, capsys) -> None:
    _write_run(tmp_path / "study" / "base")  # correct: 72, 5, sqrt(3)/2; (1,234) is not 1234
    _write_run(tmp_path / "study" / "trial_0")
    with (tmp_path / "study" / "trial_0" / "predictions.jsonl").open("a") as f:
        f.write('{"model": "finetuned", "point": 1, "id"')  # a run killed mid-line: its torn last line
    assert main(["regrade", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if line.startswith("wrote")] == ["wrote", "wrote"]
    assert sum("accuracy 0.600 -> 0.600" in line for line in out) == 2
    _write_run(tmp_path / "old", old_format=True)  # before checker 2.0: no status to compare with
    assert main(["regrade", str(tmp_path / "old")]) == 2
    assert "has no 'status' field" in capsys.readouterr().err


def test_regrade_bad_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regrade", str(tmp_path / "missing")]) == 2
    assert main(["regrade", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("mathgpt: error:") == 2


@pytest.mark.parametrize(
    "response",
    ["The answer is 18.", "So she has **18**.", "The answer is 17.\nSo she makes **18**.", "no idea"],
    ids=["same-answer", "flexible-only", "different-answers", "none"],
)
def test_grade_both_matches_two_calls(response: str) -> None:
    flexible, strict = grade_both("18", response, "gsm8k")
    assert flexible == grade("18", response, "gsm8k")
    assert strict == grade("18", response, "gsm8k", mode="strict")


def test_evaluate_records_every_verdict_field(monkeypatch: pytest.MonkeyPatch) -> None:

    from mathgpt import evaluate as ev
    from mathgpt.data import Example

    outputs = ["The answer is 18.", "So she has **7**.", "no idea", "\\boxed{\\pm 3}"]
    from mathgpt.generate import Generation, GenStats

    gens = [Generation(t, n_tokens=len(t), truncated=False) for t in outputs]
    monkeypatch.setattr(
        ev, "generate", lambda *a, **k: (gens, GenStats(sum(len(t) for t in outputs), 40, 1.0))
    )
    examples = [
        Example("g0", "q", "s", "18", "gsm8k"),
        Example("g1", "q", "s", "7", "gsm8k"),
        Example("g2", "q", "s", "5", "gsm8k"),
        Example("m0", "q", "s", "3, -3", "math"),
    ]
    res = ev.evaluate(
        None,
        None,
        [ev.EvalSet("mix", examples)],
        prompt_format="plain",
        max_new_tokens=8,
        batch_size=4,
        desc="t",
    )
    assert [r["status"] for r in res.records] == ["correct", "correct", "no_answer", "correct"]
    assert [r["strict_correct"] for r in res.records] == [True, False, False, True]
    assert all(r["reason"] for r in res.records)
    assert (res.n_correct, res.n_answered, res.n_no_answer, res.n_ungradable) == (3, 3, 1, 0)
    assert (res.accuracy, res.strict_accuracy, res.checker_version) == (0.75, 0.5, CHECKER_VERSION)


@pytest.mark.parametrize("base_version", ["2.0", CHECKER_VERSION], ids=["2.0-refused", "same-loads"])
def test_report_refuses_to_pair_checker_versions(base_version: str) -> None:
    """A trial graded by this checker (3.0) is not paired with a base graded by 2.0 until both are regraded."""
    import optuna

    from mathgpt.report.load import PairingError, load_study
    from tests.test_report import PROBLEMS, add, base_point, vector

    study = optuna.create_study(study_name="versions", direction="maximize")
    study.set_user_attr("bases", {"tiny": base_point("tiny") | {"checker_version": base_version}})
    study.set_user_attr("eval_problems", PROBLEMS)
    add(study, 64, 0, 2e-3, vector(3, 1, 5), 0.5, checker=CHECKER_VERSION)
    if base_version == CHECKER_VERSION:
        assert len(load_study(study).points) == 2
        return
    with pytest.raises(PairingError, match=rf"checker {CHECKER_VERSION}\).*checker 2\.0\).*mathgpt regrade"):
        load_study(study)


def test_check_with_an_unknown_dataset_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "3", "The answer is 3", "--dataset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown checker dataset 'nope'" in err and "gsm8k, math" in err
