"""The embedded default data: procedurally generated grade-school word problems with worked solutions.

A problem is a starting amount followed by 1-4 events that change it (buying, giving away, packing into
groups, sharing, doubling, earning, spending), then a question about the final amount. The chain-of-thought
solution writes one equation per event and ends with "The answer is N." Every answer is recomputed with sympy
from the event chain, so a template bug cannot produce a wrong label.

Splits are disjoint by construction: a problem's split is decided by a hash of its text, so no question text
can appear in both. Generation is deterministic in (split, n, seed).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import sympy

from mathgpt.example import Example

NAMES = [
    "Maya",
    "Liam",
    "Ava",
    "Noah",
    "Zoe",
    "Omar",
    "Lena",
    "Ravi",
    "Chloe",
    "Mateo",
    "Ines",
    "Jonah",
    "Priya",
    "Felix",
    "Hana",
    "Diego",
    "Nora",
    "Kofi",
    "Elena",
    "Sam",
]
PRONOUN = {
    n: (
        "she"
        if n in {"Maya", "Ava", "Zoe", "Lena", "Chloe", "Ines", "Priya", "Hana", "Nora", "Elena"}
        else "he"
    )
    for n in NAMES
}
ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "cookies",
    "stamps",
    "shells",
    "cards",
    "books",
    "cupcakes",
    "beads",
    "coins",
    "balloons",
    "oranges",
    "toy cars",
]
FRIENDS = ["a friend", "her brother", "his sister", "a neighbor", "the teacher", "a classmate"]
TEST_FRACTION = 5  # one problem in five (by text hash) belongs to the held-out split


@dataclass
class _State:
    value: int  # the running amount, kept as a plain int for the sentence templates
    expr: sympy.Expr  # the same amount as an exact sympy expression of the event chain


# An event: (state, rng, subject words) -> (sentence, solution line, new state), or None when it does not
# apply to the current amount (e.g. halving an odd number).
Event = Callable[[_State, random.Random, dict], "tuple[str, str, _State] | None"]


def _buy_more(s: _State, rng: random.Random, w: dict):
    a = rng.randint(2, 20)
    v = s.value + a
    return (
        f"{w['Pron']} buys {a} more {w['items']}.",
        f"Buys {a}: {s.value} + {a} = {v}.",
        _State(v, s.expr + a),
    )


def _buy_packs(s: _State, rng: random.Random, w: dict):
    g, k = rng.randint(2, 5), rng.randint(2, 10)
    v = s.value + g * k
    return (
        f"{w['Pron']} buys {g} packs with {k} {w['items']} in each pack.",
        f"Packs: {g} * {k} = {g * k}, and {s.value} + {g * k} = {v}.",
        _State(v, s.expr + sympy.Integer(g) * k),
    )


def _give_away(s: _State, rng: random.Random, w: dict):
    if s.value < 3:
        return None
    a = rng.randint(2, s.value - 1)
    v = s.value - a
    return (
        f"{w['Pron']} gives {a} {w['items']} to {rng.choice(FRIENDS)}.",
        f"Gives {a}: {s.value} - {a} = {v}.",
        _State(v, s.expr - a),
    )


def _fraction_left(s: _State, rng: random.Random, w: dict):
    d = rng.choice([2, 3, 4, 5])
    if s.value % d or s.value < d:
        return None
    word = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}[d]
    part = s.value // d
    v = s.value - part
    return (
        f"{w['Pron']} {w['lose']} {word} of {w['pos']} {w['items']}.",
        f"{w['Lose']} {s.value} / {d} = {part}: {s.value} - {part} = {v}.",
        _State(v, s.expr - s.expr / d),
    )


def _share_keep(s: _State, rng: random.Random, w: dict):
    k = rng.choice([2, 3, 4, 6])
    if s.value % k or s.value < k:
        return None
    v = s.value // k
    return (
        f"{w['Pron']} splits the {w['items']} equally into {k} boxes and keeps one box.",
        f"One box: {s.value} / {k} = {v}.",
        _State(v, s.expr / k),
    )


def _multiply(s: _State, rng: random.Random, w: dict):
    if s.value > 40:
        return None
    m = rng.choice([2, 3])
    word = {2: "doubles", 3: "triples"}[m]
    v = s.value * m
    what = f"{w['pos']} money" if w["items"] == "money" else f"the number of {w['items']} {w['pron']} has"
    return (
        f"{w['Pron']} {word} {what}.",
        f"{word.capitalize()}: {s.value} * {m} = {v}.",
        _State(v, s.expr * m),
    )


def _earn(s: _State, rng: random.Random, w: dict):
    h, r = rng.randint(2, 8), rng.randint(3, 15)
    v = s.value + h * r
    return (
        f"{w['Pron']} works {h} hours and earns ${r} per hour.",
        f"Earns {h} * {r} = {h * r}: {s.value} + {h * r} = {v}.",
        _State(v, s.expr + sympy.Integer(h) * r),
    )


def _spend(s: _State, rng: random.Random, w: dict):
    n, p = rng.randint(2, 5), rng.randint(2, 12)
    if n * p >= s.value:
        return None
    v = s.value - n * p
    thing = rng.choice(["notebooks", "sandwiches", "tickets", "plants", "pens"])
    return (
        f"{w['Pron']} buys {n} {thing} that cost ${p} each.",
        f"Spends {n} * {p} = {n * p}: {s.value} - {n * p} = {v}.",
        _State(v, s.expr - sympy.Integer(n) * p),
    )


ITEM_EVENTS: list[Event] = [_buy_more, _buy_packs, _give_away, _fraction_left, _share_keep, _multiply]
MONEY_EVENTS: list[Event] = [_earn, _spend, _fraction_left, _multiply]


def _one_problem(rng: random.Random) -> tuple[str, str, int, int]:
    name = rng.choice(NAMES)
    pron = PRONOUN[name]
    money = rng.random() < 0.3
    items = "money" if money else rng.choice(ITEMS)
    w = {
        "pron": pron,
        "Pron": pron.capitalize(),
        "pos": "her" if pron == "she" else "his",
        "items": items,
        "lose": "spends" if money else "sells",
        "Lose": "Spends" if money else "Sells",
    }
    start = rng.randint(5, 40) if not money else rng.randint(20, 100)
    state = _State(start, sympy.Integer(start))
    opening = f"{name} has ${start}." if money else f"{name} has {start} {items}."
    sentences, lines = [opening], []
    n_steps = rng.randint(1, 4)
    events = MONEY_EVENTS if money else ITEM_EVENTS
    while len(lines) < n_steps:
        out = rng.choice(events)(state, rng, w)
        if out is None:
            continue
        sentence, line, state = out
        sentences.append(sentence)
        lines.append(line)
    question = " ".join(sentences) + (
        f" How much money does {name} have now?" if money else f" How many {items} does {name} have now?"
    )
    answer = sympy.nsimplify(state.expr)
    if not (answer.is_Integer and int(answer) == state.value):  # the label must follow from the event chain
        raise AssertionError(f"generator bug: {question} -> {state.value} vs {answer}")
    solution = "\n".join(lines) + f"\nThe answer is {state.value}."
    return question, solution, state.value, len(lines)


def split_of(question: str) -> str:
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big")
    return "test" if h % TEST_FRACTION == 0 else "train"


def make_problems(split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` distinct problems of ``split`` ("train" or "test"), deterministic in (split, n, seed)."""
    if split not in ("train", "test"):
        raise ValueError(f"synthetic split must be 'train' or 'test', not {split!r}")
    rng = random.Random(f"mathgpt-synthetic-{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    while len(out) < n:
        question, solution, answer, steps = _one_problem(rng)
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        out.append(
            Example(
                id=f"synthetic:{split}:{seed}:{len(out)}",
                question=question,
                solution=solution,
                answer=str(answer),
                source="synthetic",
                steps=steps,
            )
        )
    return out
