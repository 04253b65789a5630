"""The answer checker: the labelled case table, extraction both ways, safety and time bounds, real golds."""

from __future__ import annotations

import ast
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mathgpt import checker
from mathgpt.checker import extract_answer, grade, is_correct, pool
from mathgpt.cli import main
from mathgpt.config import ConfigError
from tests.checker_cases import frozen_workers, load_cases

DATA_DIR = Path(
    os.environ.get("MATHGPT_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


CASES = load_cases()


def test_case_file_covers_the_issue() -> None:
    counts = Counter(c["category"] for c in CASES)
    assert len(CASES) >= 200
    assert counts["near_miss"] >= 40 and counts["hostile"] >= 15
    assert all(c["expected"] is False for c in CASES if c["category"] in ("near_miss", "hostile"))
    assert all(c["dataset"] in ("gsm8k", "math") and isinstance(c["expected"], bool) for c in CASES)


def _case_id(case: dict) -> str:
    return f"{case['category']}-{case['n']}-{case['dataset']}"


for _n, _case in enumerate(CASES):
    _case["n"] = _n


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_labelled_case(case: dict) -> None:
    """One test per row of checker_cases.yaml (pytest id: category-row-dataset); no pass-rate threshold."""
    verdict = grade(case["gold"], case["response"], case["dataset"])
    assert verdict.correct is case["expected"], (case["gold"][:60], case["response"][-80:], verdict)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["category"] == "hostile"], ids=lambda c: c["response"][:30]
)
def test_hostile_input_is_false_and_fast(case: dict) -> None:
    assert checker.warm_up()  # time the case, not sympy's import
    start = time.perf_counter()
    assert is_correct(case["gold"], case["response"], case["dataset"]) is False
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("response", "dataset", "expected"),
    [
        ("So 9 * 2 = 18.\n#### 18", "gsm8k", "18"),
        ("The answer is $18.", "gsm8k", "$18"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "math", "\\frac{1}{2}"),
        ("so $\\boxed{\\frac{\\sqrt{3}}{2}}$ is the value", "math", "\\frac{\\sqrt{3}}{2}"),
        ("**Answer:** 42", "gsm8k", "42"),
        ("We add them up.\nSo she has **42** apples.", "gsm8k", "42"),
        ("The answer is 5. Wait, I made an error. The answer is 6.", "gsm8k", "6"),
        ("It is $\\boxed{1.5}$ or $\\boxed{\\frac{3}{2}}$.", "math", "\\frac{3}{2}"),  # two forms, one value
        (
            "The answer is 7.\n\nQuestion: Sam has 3 pens. The answer is 3.",
            "gsm8k",
            "7",
        ),  # invented follow-up
    ],
)
def test_extracts_the_final_committed_answer(response: str, dataset: str, expected: str) -> None:
    assert extract_answer(response, dataset) == expected


@pytest.mark.parametrize(
    ("response", "dataset"),
    [
        ("The answer is 12 or 15.", "gsm8k"),  # hedge
        ("Either $\\boxed{5}$ or $\\boxed{7}$.", "math"),  # hedge between boxes
        ("How many eggs does Janet sell if her ducks lay 16 a day?", "gsm8k"),  # restated question
        ("Step 1: 16 - 3 - 4 = 9 eggs. Step 2: she sells each for 2, so", "gsm8k"),  # only intermediate steps
        ("So in 2 days she makes 36 dollars and keeps 6 eggs.", "gsm8k"),  # conclusion with two numbers
        ("We may check our answer: 17 * 44 = 748.", "gsm8k"),  # a check, not a commitment
        ("", "math"),
    ],
)
def test_no_answer_is_not_a_guess(response: str, dataset: str) -> None:
    assert extract_answer(response, dataset) is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("18", "18"),
        ("$18 dollars.", "$18 dollars"),
        ("She sells 9 eggs.\nTherefore, she makes $18 a day.", "$18"),
    ],
)
def test_fallback_only_when_safe(response: str, expected: str) -> None:
    assert extract_answer(response, "gsm8k") == expected


def test_gold_forms() -> None:
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert is_correct(solution, "The answer is 72.", "gsm8k")
    assert is_correct(72.0, "The answer is 72.", "gsm8k")  # type: ignore[arg-type]  # SVAMP floats
    assert is_correct("so the answer is $\\boxed{\\frac{1}{4}}$.", "\\boxed{0.25}", "math")


def test_never_evaluates_raw_text(monkeypatch: pytest.MonkeyPatch) -> None:
    called = {
        n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
        for module in Path(checker.__file__).parent.glob("*.py")
        for n in ast.walk(ast.parse(module.read_text()))
        if isinstance(n, ast.Call)
    }
    assert not called & {"eval", "exec", "sympify", "parse_expr", "S", "__import__"}
    import sympy

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("sympify called")

    monkeypatch.setattr(sympy, "sympify", refuse)
    assert is_correct("\\frac{1}{2}", "\\boxed{0.5}", "math")


def test_symbolic_checks_work_in_threads() -> None:
    pairs = [
        ("\\frac{\\sqrt{3}}{3}", "\\boxed{\\frac{1}{\\sqrt3}}", True),
        ("2\\pi", "\\boxed{\\pi}", False),
    ] * 4
    with ThreadPoolExecutor(3) as pool:
        verdicts = list(pool.map(lambda p: is_correct(p[0], p[1], "math"), pairs))
    assert verdicts == [p[2] for p in pairs]


def test_timeout_kills_and_restarts_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = ("1", "\\boxed{\\sin^2 x + \\cos^2 x}")  # ~0.2 s of sympy: it cannot beat a zero timeout
    assert checker.warm_up()
    monkeypatch.setattr(pool, "CHECK_TIMEOUT_S", 0.05)  # every symbolic check now times out
    start = time.perf_counter()
    with frozen_workers():
        assert not is_correct(*slow, "math")
    assert time.perf_counter() - start < 1.0
    monkeypatch.undo()
    assert is_correct(*slow, "math")  # a fresh worker answers again


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_worker_memory_is_capped() -> None:
    is_correct("\\sqrt{2}", "\\boxed{2^{1/2}}", "math")
    worker = pool._POOL[0]
    deadline = time.monotonic() + 30  # a freshly spawned spare sets its limit before it says "ready"
    while not worker.poll_ready():
        assert time.monotonic() < deadline, "the checker worker never became ready"
        time.sleep(0.05)
    limits = Path(f"/proc/{worker.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))
    assert int(line.split()[3]) == pool.WORKER_MEMORY_BYTES


def test_many_plain_answers_are_fast() -> None:
    start = time.perf_counter()
    for n in range(500):
        assert is_correct(f"#### {n:,}", f"She has {n} left. The answer is {n}.", "gsm8k")
    assert time.perf_counter() - start < 2.0


def test_bad_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown checker dataset"):
        is_correct("1", "1", "aime")


def test_cli_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "#### 18", "So she makes $18. The answer is 18.", "--dataset", "gsm8k"]) == 0
    assert capsys.readouterr().out.startswith("true\nextracted: 18\nstatus: correct (")
    assert main(["check", "\\frac{1}{3}", "\\boxed{0.33}", "--dataset", "math"]) == 0
    assert capsys.readouterr().out.startswith("false\nextracted: 0.33\nstatus: wrong (not equal;")


@pytest.mark.skipif(not (DATA_DIR / "math" / "math500_test.jsonl").exists(), reason="needs ../shared/data")
def test_every_math500_gold_matches_its_own_solution() -> None:
    rows = [json.loads(line) for line in (DATA_DIR / "math" / "math500_test.jsonl").open()]
    assert len(rows) == 500
    misses = [r["answer"] for r in rows if not grade(r["answer"], r["solution"], "math").correct]
    assert misses == []


@pytest.mark.skipif(not (DATA_DIR / "gsm8k" / "test.jsonl").exists(), reason="needs ../shared/data")
def test_every_gsm8k_gold_parses_as_a_number() -> None:
    rows = [json.loads(line) for line in (DATA_DIR / "gsm8k" / "test.jsonl").open()]
    for row in rows:
        number = row["answer"].rsplit("####", 1)[1].strip()
        assert checker.parse_answer(number, "gsm8k")[0] == "expr", number
        assert is_correct(row["answer"], f"The answer is {number}.", "gsm8k")
