"""The embedded default data: deterministic, disjoint splits, labels that follow from the worked solution."""

from __future__ import annotations

import re

import sympy

from mathgpt.checker import is_correct
from mathgpt.synthetic import make_problems, split_of


def test_deterministic_and_prefix_stable():
    a, b = make_problems("train", 50, seed=3), make_problems("train", 100, seed=3)
    assert a == b[:50]
    assert make_problems("train", 50, seed=4) != a


def test_splits_share_no_problem_text():
    train = {ex.question for ex in make_problems("train", 3000)}
    test = {ex.question for ex in make_problems("test", 600)}
    assert not train & test
    assert all(split_of(q) == "test" for q in test)


def test_every_equation_in_every_solution_is_true_and_ends_in_the_answer():
    exs = make_problems("train", 400) + make_problems("test", 100)
    steps = set()
    for ex in exs:
        lines = ex.solution.splitlines()
        assert lines[-1] == f"The answer is {ex.answer}."
        steps.add(len(lines) - 1)
        for lhs, rhs in re.findall(r"(\d+(?: [-+*/] \d+)+) = \$?(\d+)", ex.solution):
            assert sympy.sympify(lhs) == int(rhs), (
                ex.id,
                lhs,
                rhs,
            )  # our own generated text, not model output
        assert is_correct(ex.answer, ex.solution, "gsm8k")
    assert steps == {1, 2, 3, 4}
    assert len({ex.id for ex in exs}) == len(exs)
