"""One test per hand-labelled real case (tests/checker_real_cases.yaml): model outputs and MATH-500 solutions.

pytest ids: ``<source id>-<expected>``, e.g. ``test_real_case[gsm8k:test:906-true]``.
"""

from __future__ import annotations

import pytest

from mathgpt.checker import grade
from tests.checker_cases import load_real_cases

CASES = load_real_cases()


def _id(case: dict) -> str:
    tail = case["source"].split(";")[-1].strip() if ";" in case["source"] else case["source"].split(",")[1]
    other = "-other" if "differs" in case["source"] else ""
    return f"{tail.strip().replace(' ', '')}{other}-{str(case['expected']).lower()}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_real_case(case: dict) -> None:
    verdict = grade(case["gold"], case["response"], case["dataset"])
    assert verdict.correct is case["expected"], (case["source"], case["response"][-120:], verdict)
    assert verdict.status != "ungradable", verdict
