"""Answer checker: pull the model's final committed answer out of a response and decide if it equals the gold.

Every accuracy the project reports rests on this package, so it is strict where public checkers are loose,
and split the way Math-Verify splits parsing from verification:
- ``extract``: where the final answer is (the last committed answer; never "the last number in the text").
- ``grammar`` / ``parse``: the project's own whitelisted grammar to nested tuples; raw text is never
  evaluated (no ``eval``, ``sympify`` or ``parse_expr``); sizes are capped.
- ``compare``: exact rationals in process; symbolic comparison only inside the bounded worker.
- ``pool``: the sympy worker subprocesses (thread-safe, killable, memory-capped).

``grade`` returns a ``Verdict`` that keeps "could not grade" (``ungradable``: timeout, dead worker, gold that
does not parse) apart from "wrong", and "no answer" apart from both. Policies: docs/CHECKER.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mathgpt.checker.compare import (
    _equal,
    _fast_expr_equal,
    adjust_prediction,
    percent_variants,
    precise_decimal,
)
from mathgpt.checker.extract import DATASETS, MODES, _check_dataset, extract_answer, gold_answer
from mathgpt.checker.grammar import _Reject
from mathgpt.checker.parse import parse_answer
from mathgpt.checker.pool import symbolic_equal, warm_up
from mathgpt.config import ConfigError

# Bump on any change of a verdict (extraction, parsing, comparison); runs record it, `mathgpt regrade` uses it.
CHECKER_VERSION = "3.0"

Status = Literal["correct", "wrong", "no_answer", "ungradable"]
_PARSE_ERRORS = (_Reject, RecursionError, OverflowError, ValueError, ZeroDivisionError)

__all__ = [
    "CHECKER_VERSION",
    "DATASETS",
    "Verdict",
    "extract_answer",
    "gold_answer",
    "grade",
    "grade_both",
    "is_correct",
    "parse_answer",
    "warm_up",
]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: Status
    extracted: str | None  # the final answer as written in the response; None when there is none
    reason: str  # short, for people: "equal as rationals", "timeout", "gold unparseable: ...", ...


def grade(gold: str, response: str, dataset: str, *, mode: str = "flexible") -> Verdict:
    """Grade ``response`` against ``gold`` (a full solution or just its answer); ``dataset``: "gsm8k"/"math".

    ``mode="strict"`` reads only the configured answer formats (``#### N``, ``\\boxed{}``, "the answer is");
    ``"flexible"`` (default) also reads bold, bare and concluding-sentence answers.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown checker mode {mode!r} (expected one of {', '.join(MODES)})")
    _check_dataset(dataset)
    gold = str(gold)  # SVAMP golds are floats
    try:
        gold_text = gold_answer(gold, dataset)
        g = parse_answer(gold_text, dataset)
    except _PARSE_ERRORS as err:
        extracted = extract_answer(response, dataset, mode=mode)
        return Verdict(False, "ungradable", extracted, f"gold unparseable: {err}"[:80])
    extracted = extract_answer(response, dataset, mode=mode)
    if extracted is None:
        return Verdict(False, "no_answer", None, "no final answer found")
    try:
        p = precise_decimal(adjust_prediction(g, parse_answer(extracted, dataset)), extracted)
    except _PARSE_ERRORS as err:
        return Verdict(False, "wrong", extracted, f"answer unparseable: {err}"[:80])
    why = ""
    for g_alt, p_alt in percent_variants(g, p, gold_text, extracted):
        try:
            verdict = _equal(g_alt, p_alt, _fast_expr_equal)
        except _PARSE_ERRORS as err:
            return Verdict(False, "wrong", extracted, f"answer out of bounds: {err}"[:80])
        how = "equal in process"
        if verdict is None:
            verdict, failed = symbolic_equal(g_alt, p_alt)
            why = why or failed
            how = "equal symbolically"
        if verdict:
            return Verdict(True, "correct", extracted, how)
    if why:  # a comparison that could not finish is not evidence of a wrong answer
        return Verdict(False, "ungradable", extracted, why)
    return Verdict(False, "wrong", extracted, "not equal")


def grade_both(gold: str, response: str, dataset: str) -> tuple[Verdict, Verdict]:
    """(flexible, strict) verdicts; the strict one reuses the flexible one when both read the same answer."""
    flexible = grade(gold, response, dataset)
    if extract_answer(response, dataset, mode="strict") == flexible.extracted:
        return flexible, flexible
    return flexible, grade(gold, response, dataset, mode="strict")


def is_correct(gold: str, response: str, dataset: str, *, mode: str = "flexible") -> bool:
    """True iff the response's final committed answer equals the gold (``dataset``: "gsm8k" or "math")."""
    return grade(gold, response, dataset, mode=mode).correct
