"""One test per checker 3.0 row (tests/checker_cases_v3.yaml), grouped by kind; docs/CHECKER.md names them.

pytest ids: ``<kind>-<row>-<expected>``, e.g. ``test_v3_case[labels-0-true]``. Every ``true`` row was graded
false by checker 2.0; every ``false`` row is a near miss that must stay wrong (not ungradable).
"""

from __future__ import annotations

import time

import pytest

from mathgpt import checker
from mathgpt.checker import grade
from tests.checker_cases import load_v3_cases

CASES = load_v3_cases()
_seen: dict[str, int] = {}
IDS = []
for _case in CASES:
    _n = _seen[_case["policy"]] = _seen.get(_case["policy"], -1) + 1
    IDS.append(f"{_case['policy']}-{_n}-{str(_case['expected']).lower()}")


def test_every_kind_has_near_misses() -> None:
    kinds = {c["policy"] for c in CASES}
    assert len(kinds) == 10
    for kind in kinds:
        rows = [c["expected"] for c in CASES if c["policy"] == kind]
        assert rows.count(True) >= 4 and rows.count(False) >= 2, kind


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_v3_case(case: dict) -> None:
    assert checker.warm_up()  # time the case, not sympy's import
    start = time.perf_counter()
    verdict = grade(case["gold"], case["response"], case["dataset"])
    assert time.perf_counter() - start <= 1.0  # the budget per case
    assert verdict.correct is case["expected"], (case["gold"], case["response"], verdict)
    if not case["expected"]:  # a right verdict of "wrong" must not come from a grading failure
        assert verdict.status in ("wrong", "no_answer"), verdict
