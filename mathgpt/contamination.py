"""Train/eval overlap by shared word n-grams, so a score cannot come from having seen the test problem.

What is compared: a training row's question AND its solution (a worked solution that quotes an evaluation
problem leaks it just as well) against an evaluation row's question (the only text the model is shown).
Text is normalised first: lowercase, punctuation dropped, whitespace collapsed, so "$x^2+1$" and "x^2 + 1"
match. A text shorter than n words has no n-gram; it is represented by its whole normalised text instead and
matches only an identical short text (MATH has 3-word problems such as "Compute $\\dbinom{8}{4}$.", which a
13-gram check would otherwise never flag). Shared n-grams are kept as 64-bit hashes: 7,473 + 5,000 rows take
about a second.
"""

from __future__ import annotations

import re
from pathlib import Path

from mathgpt.data import DataError, Example, load, text_table


def normalise(text: str) -> list[str]:
    """Lowercase words and numbers; punctuation, LaTeX braces and backslashes act as separators."""
    return re.findall(r"[^\W_]+", text.lower())


def ngrams(text: str, n: int) -> set[int]:
    """Hashes of the text's word n-grams (its whole text when shorter than n words)."""
    words = normalise(text)
    if len(words) < n:
        return {hash(("whole", *words))} if words else set()
    return {hash(gram) for gram in zip(*(words[i:] for i in range(n)), strict=False)}


def overlap_by_set(
    train: list[Example], eval_sets: dict[str, list[Example]], n: int = 13
) -> dict[str, tuple[set[str], set[str]]]:
    """For each evaluation set: (ids of training rows, ids of its rows) that share at least one n-gram.

    The training pool is scanned once for all sets, since its n-grams are most of the work.
    """
    if n < 1:
        raise DataError(f"n-gram length must be >= 1 (got {n})")
    owners: dict[int, list[tuple[str, str]]] = {}
    for name, evals in eval_sets.items():
        for e in evals:
            for h in ngrams(e.question, n):
                owners.setdefault(h, []).append((name, e.id))
    hits: dict[str, tuple[set[str], set[str]]] = {name: (set(), set()) for name in eval_sets}
    for t in train:
        for h in (ngrams(t.question, n) | ngrams(t.solution, n)) & owners.keys():
            for name, eval_id in owners[h]:
                hits[name][0].add(t.id)
                hits[name][1].add(eval_id)
    return hits


def contaminated_ids(train: list[Example], evals: list[Example], n: int = 13) -> set[str]:
    """Ids of training rows sharing any normalised n-gram with any evaluation question (a run drops them)."""
    return overlap_by_set(train, {"eval": evals}, n)["eval"][0]


def overlap_table(
    train_pools: dict[str, list[Example]], eval_sets: dict[str, list[Example]], n: int = 13
) -> list[dict]:
    """One row per (training pool, evaluation set) pair, with the counts `mathgpt data check` prints."""
    rows = []
    for train_name, train in train_pools.items():
        hits = overlap_by_set(train, eval_sets, n)
        for eval_name, evals in eval_sets.items():
            train_hit, eval_hit = hits[eval_name]
            rows.append(
                {
                    "train": train_name,
                    "eval": eval_name,
                    "train_rows": len(train),
                    "eval_rows": len(evals),
                    "contaminated_eval": len(eval_hit),
                    "contaminated_train": len(train_hit),
                }
            )
    return rows


def format_table(rows: list[dict], n: int) -> str:
    def pct(k: int, total: int) -> str:
        return f"{k} ({100 * k / total:.1f}%)" if total else str(k)

    header = ("train pool", "eval set", "train rows", "eval rows", "contaminated eval", "contaminated train")
    body = [
        (
            r["train"],
            r["eval"],
            str(r["train_rows"]),
            str(r["eval_rows"]),
            pct(r["contaminated_eval"], r["eval_rows"]),
            pct(r["contaminated_train"], r["train_rows"]),
        )
        for r in rows
    ]
    lines = [f"{n}-gram overlap: training question+solution vs evaluation question (normalised text)"]
    lines += text_table(list(header), [list(r) for r in body], left=2)
    return "\n".join(lines)


def check_report(
    train_names: list[str], eval_names: list[str], data_dir: str | Path | None = None, n: int = 13
) -> str:
    """Load every named pool and set once, and tabulate their pairwise overlap (`mathgpt data check`)."""
    train_pools = {name: load(name, data_dir) for name in dict.fromkeys(train_names)}
    eval_sets = {name: load(name, data_dir) for name in dict.fromkeys(eval_names)}
    return format_table(overlap_table(train_pools, eval_sets, n), n)
