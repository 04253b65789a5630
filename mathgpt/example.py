"""The one row type every loader returns, and the loaders' error: the leaf both ``data`` and ``synthetic`` import.

Kept apart so ``data`` (the loaders) and ``synthetic`` (the generator) need not import each other at module
level: ``synthetic`` builds ``Example`` rows from here, and ``data`` calls the generator lazily.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    solution: str  # chain of thought, ending in a final-answer line (general rows: the reference response)
    answer: (
        str  # gold final answer in the dataset's native form (a number, or MATH LaTeX); "" for general rows
    )
    source: str  # "synthetic", "gsm8k", "math", "svamp", "mathinstruct/<sub-source>", "general/<set>"
    level: int | None = None  # MATH only
    subject: str | None = None  # MATH only
    steps: int | None = None  # synthetic only: reasoning steps (1-4), for per-difficulty breakdowns

    @property
    def grader(self) -> str:
        """Which checker convention applies: MATH answers are LaTeX, everything else is a number."""
        return "math" if self.source == "math" else "gsm8k"


class DataError(ValueError):
    """A dataset that cannot be read (bad name, missing file, missing field); the message is one line."""
