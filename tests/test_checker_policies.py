"""One test per policy row (tests/checker_cases_policies.yaml), grouped by policy; docs/CHECKER.md names them.

pytest ids: ``<policy>-<row>-<expected>``, e.g. ``test_policy[comma_in_brackets-0-true]``.
"""

from __future__ import annotations

import pytest

from mathgpt.checker import grade
from tests.checker_cases import load_policy_cases

CASES = load_policy_cases()
_seen: dict[str, int] = {}
IDS = []
for _case in CASES:
    _n = _seen[_case["policy"]] = _seen.get(_case["policy"], -1) + 1
    IDS.append(f"{_case['policy']}-{_n}-{str(_case['expected']).lower()}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_policy(case: dict) -> None:
    verdict = grade(case["gold"], case["response"], case["dataset"])
    assert verdict.correct is case["expected"], (case["gold"], case["response"], verdict)
    if not case["expected"]:  # a right verdict of "wrong" must not come from a grading failure
        assert verdict.status in ("wrong", "no_answer"), verdict
