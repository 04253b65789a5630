"""Scoring: greedy answers on a held-out slice, graded by the project's checker, with a 95% Wilson interval."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mathgpt.checker import CHECKER_VERSION, Verdict, grade_both
from mathgpt.data import Example
from mathgpt.generate import generate
from mathgpt.prompts import Shot, cut_invented_shot, format_prompt
from mathgpt.stats import wilson_ci


@dataclass(frozen=True)
class EvalSet:
    name: str  # e.g. "gsm8k:test"; kept per problem for breakdowns
    examples: list[Example]


@dataclass
class EvalResult:
    records: list[dict]  # one per problem: id, eval_set, level, subject, question, gold, output, extracted,
    # correct, status, reason, strict_correct, answered (the verdict's fields; docs/CONTRACTS.md)
    accuracy: float
    ci95: tuple[float, float]
    n_correct: int
    tokens_per_s: float  # useful (kept) generated tokens per second
    wall_s: float
    gen: dict  # generation statistics, GenStats.as_dict(): docs/CONTRACTS.md `gen`
    n_answered: int = 0
    n_no_answer: int = 0
    n_ungradable: int = 0
    strict_accuracy: float = 0.0
    checker_version: str = CHECKER_VERSION


def evaluate(
    model,
    tokenizer,
    eval_sets: list[EvalSet],
    *,
    prompt_format: str,
    max_new_tokens: int,
    batch_size: int,
    desc: str,
    shots: Sequence[Shot] = (),
    cache_budget: int | None = None,
) -> EvalResult:
    """Greedy answers for every problem of ``eval_sets`` in one generate call, graded; ``shots`` are the solved
    examples a k-shot prompt shows first (an answer that goes on to invent another one is cut there);
    ``cache_budget`` caps the continuous batch's slot cache in bytes (``generate``)."""
    start = time.perf_counter()
    problems = [(s.name, ex) for s in eval_sets for ex in s.examples]
    prompts = [format_prompt(ex.question, prompt_format, tokenizer, shots) for _, ex in problems]
    gens, stats = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        desc=desc,
        cache_budget=cache_budget,
    )
    if shots:  # a cut answer ended: it is not truncated, whatever the cap did to the invented example
        cut = [cut_invented_shot(g.text, prompt_format, tokenizer) for g in gens]
        gens = [
            replace(g, text=t, truncated=g.truncated and not c) for g, (t, c) in zip(gens, cut, strict=True)
        ]
    records = []
    for (set_name, ex), gen in zip(problems, gens, strict=True):
        verdict, strict = grade_both(ex.answer, gen.text, ex.grader)
        records.append(
            {
                "id": ex.id,
                "eval_set": set_name,
                "grader": ex.grader,  # the checker convention it was graded by: regrade uses the same
                "level": ex.level,
                "subject": ex.subject,
                "question": ex.question,
                "gold": ex.answer,
                "output": gen.text,
                **verdict_fields(verdict, strict),
            }
        )
    for r, gen in zip(records, gens, strict=True):  # predictions.jsonl's generation fields
        r["n_tokens"], r["truncated"] = gen.n_tokens, gen.truncated
    k, n = sum(r["correct"] for r in records), len(records)
    return EvalResult(
        records,
        k / n,
        wilson_ci(k, n),
        k,
        stats.useful_tokens_per_s,
        time.perf_counter() - start,
        stats.as_dict(),
        **verdict_counts(records),
    )


def verdict_fields(verdict: Verdict, strict: Verdict) -> dict:
    """A prediction record's grading fields (flexible verdict, plus the strict one's correctness)."""
    return {
        "extracted": verdict.extracted,
        "correct": verdict.correct,
        "status": verdict.status,
        "reason": verdict.reason,
        "strict_correct": strict.correct,
        "answered": verdict.extracted is not None,
    }


def verdict_counts(records: list[dict]) -> dict:
    """EvalResult's outcome counts from graded records (also used by `mathgpt regrade`)."""
    n = max(len(records), 1)
    return {
        "n_answered": sum(bool(r["answered"]) for r in records),
        "n_no_answer": sum(r["status"] == "no_answer" for r in records),
        "n_ungradable": sum(r["status"] == "ungradable" for r in records),
        "strict_accuracy": sum(bool(r["strict_correct"]) for r in records) / n,
        "checker_version": CHECKER_VERSION,
    }
