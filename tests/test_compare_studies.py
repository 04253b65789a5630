"""bench/compare_studies.py: two per-problem matrices paired by problem id and seed."""

from __future__ import annotations

import pandas as pd

from bench.compare_studies import compare


def _matrix(correct_by_seed: dict[int, list[int]], k: int = 64) -> pd.DataFrame:
    rows = [
        {"seed": s, "train_examples": k, "problem_id": f"p{i}", "correct": c}
        for s, cs in correct_by_seed.items()
        for i, c in enumerate(cs)
    ]
    base = [{"seed": None, "train_examples": 0, "problem_id": f"p{i}", "correct": 0} for i in range(4)]
    return pd.DataFrame(rows + base)


def test_pairs_by_problem_and_seed_and_averages_seeds_per_problem():
    before = _matrix({0: [1, 1, 0, 0], 1: [1, 0, 0, 0]})
    after = _matrix({0: [1, 0, 1, 1], 1: [0, 0, 0, 1]}).sample(
        frac=1, random_state=0
    )  # order must not matter
    lines = compare(before, after, ("a", "b"))
    assert "| 64 | 0 | 2/4 | 3/4 | 1 | 2 | 1.00 |" in lines
    assert "| 64 | 1 | 1/4 | 1/4 | 1 | 1 | 1.00 |" in lines
    (summary,) = [x for x in lines if x.startswith("- 64 examples")]
    # b - a per problem, averaged over the two seeds: [-50, -50, +50, +100] points, mean +12.5
    assert "+12.5 points" in summary and "2 seeds averaged per problem, 4 problems" in summary
    assert not any(x.startswith("| 0 |") for x in lines)  # the base point is not a size


def test_sizes_only_one_side_has_are_left_out():
    lines = compare(_matrix({0: [1, 0, 0, 0]}, k=32), _matrix({0: [1, 0, 0, 0]}, k=64), ("a", "b"))
    assert not [x for x in lines if x.startswith("- ")] and len(lines) == 3  # header, rule, blank
