"""N-gram contamination: what counts as overlap, and the known overlaps of the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mathgpt import contamination, data
from mathgpt.cli import main
from mathgpt.data import DataError, Example
from tests.conftest import data_root, need_data

REPO = Path(__file__).resolve().parents[1]

# 20 words; any 13 consecutive ones are an n-gram the checker must find.
PROBLEM = (
    "A farmer has 17 cows and buys 5 more every week. After 6 weeks he sells half of them. "
    "How many cows remain?"
)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return need_data(data_root() / "math" / "math500_test.jsonl").parents[1]


def ex(i: str, question: str, solution: str = "The answer is 1.") -> Example:
    return Example(i, question, solution, "1", "gsm8k")


@pytest.mark.parametrize(
    "text,words",
    [
        ("How MANY cows?!", ["how", "many", "cows"]),
        ("Compute $\\dbinom{8}{4}$.", ["compute", "dbinom", "8", "4"]),
        ("x^2+1  =\n 5", ["x", "2", "1", "5"]),
        ("Janet\u2019s ducks_lay", ["janet", "s", "ducks", "lay"]),
    ],
)
def test_normalise(text, words):
    assert contamination.normalise(text) == words


def test_rephrased_punctuation_and_case_still_match():
    evals = [ex("e:0", PROBLEM)]
    train = [
        ex("t:copy", PROBLEM.upper().replace(".", " ;")),
        ex("t:in-solution", "Another problem.", f"Recall: {PROBLEM} Then 17 + 30 = 47."),
        ex(
            "t:other",
            "A baker makes 40 rolls and sells 25. How many rolls are left over at the end of the day?",
        ),
    ]
    assert contamination.contaminated_ids(train, evals) == {"t:copy", "t:in-solution"}


def test_twelve_shared_words_are_not_a_13_gram():
    words = PROBLEM.split()
    train = [ex("t:12", " ".join(words[:12]) + " zebra " + " ".join(words[12:]))]
    assert contamination.contaminated_ids(train, [ex("e:0", PROBLEM)], n=13) == set()
    assert contamination.contaminated_ids(train, [ex("e:0", PROBLEM)], n=8) == {"t:12"}


def test_short_texts_match_only_as_a_whole():
    evals = [ex("e:short", "Compute $\\dbinom{8}{4}$.")]
    same = ex("t:same", "compute \\dbinom{8}{4}")
    inside = ex(
        "t:inside", "First compute dbinom 8 4 and then add the result to the sum of the first ten primes."
    )
    assert contamination.contaminated_ids([same, inside], evals) == {"t:same"}


def test_overlap_table_counts_both_sides():
    evals = {"a": [ex("a:0", PROBLEM), ex("a:1", "Something else entirely, with nothing in common here.")]}
    train = {"pool": [ex("t:0", PROBLEM), ex("t:1", PROBLEM + " Twice."), ex("t:2", "Unrelated words only.")]}
    (row,) = contamination.overlap_table(train, evals)
    assert row == {
        "train": "pool",
        "eval": "a",
        "train_rows": 3,
        "eval_rows": 2,
        "contaminated_eval": 1,
        "contaminated_train": 2,
    }
    text = contamination.format_table([row], 13)
    assert "1 (50.0%)" in text and "2 (66.7%)" in text


def test_bad_ngram_length():
    with pytest.raises(DataError, match="n-gram length must be >= 1"):
        contamination.contaminated_ids([], [], n=0)


def test_math500_is_flagged_entirely_inside_the_full_math_test(data_dir):
    full, math500 = data.load("math:test", data_dir), data.load("math500", data_dir)
    hits = contamination.overlap_by_set(full, {"math500": math500})["math500"]
    assert len(hits[1]) == 500
    # Every MATH-500 problem is some full-test row, plus rows sharing boilerplate 13-grams with it.
    same_text = {e.question.strip() for e in math500}
    exact = {e.id for e in full if e.question.strip() in same_text}
    assert len(exact) == 500 and exact <= hits[0]


def test_gsm8k_train_and_test_share_a_few_templated_problems(data_dir):
    # Measured: 4 train rows share a 13-gram with 3 test questions (re-used templates such as
    # "... travels N miles in 3 hours. At the same rate, how many additional hours ...").
    train, test = data.load("gsm8k:train", data_dir), data.load("gsm8k:test", data_dir)
    bad_train, bad_test = contamination.overlap_by_set(train, {"test": test})["test"]
    assert (len(bad_train), len(bad_test)) == (4, 3)
    assert contamination.contaminated_ids(train, test) == bad_train


def test_cli_data_check_prints_the_table(data_dir, capsys):
    argv = ["data", "check", "--train", "math:test", "gsm8k:train", "--eval", "math500", "gsm8k:test"]
    assert main([*argv, "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["train", "pool"]
    row = next(line for line in lines if line.startswith("math:test") and "math500" in line)
    assert row.split()[2:5] == ["5000", "500", "500"]
    row = next(line for line in lines if line.startswith("gsm8k:train") and "gsm8k:test" in line)
    assert row.split()[2:] == ["7473", "1319", "3", "(0.2%)", "4", "(0.1%)"]
