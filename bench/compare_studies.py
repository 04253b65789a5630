"""Two studies' per-problem matrices compared point by point, paired by problem id and seed.

For a change that should not move accuracy (e.g. bf16 autocast in training), run the same study before and
after it and compare the reports' ``problems.csv``: per (examples, seed) the two accuracies, the problems only
one side solved and McNemar's exact p; per size the mean difference over problems (seeds averaged per
problem) with a 95% t interval. Writes its section of bench/RESULTS.md when ``--section`` is given.

    git show REV:analysis/cpu_demo/problems.csv > /tmp/before.csv
    python bench/compare_studies.py /tmp/before.csv analysis/cpu_demo/problems.csv --labels fp32 bf16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.weightstats import DescrStatsW

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402


def _point(df: pd.DataFrame, seed: float, k: int) -> pd.Series:
    return df[(df.seed == seed) & (df.train_examples == k)].set_index("problem_id").correct


def compare(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str]) -> list[str]:
    a_name, b_name = labels
    lines = [
        f"| examples | seed | {a_name} | {b_name} | only {a_name} | only {b_name} | McNemar p (exact) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    sizes = sorted(set(before.train_examples) & set(after.train_examples) - {0})
    summary = []
    for k in sizes:
        diffs = []
        for seed in sorted(set(before.seed.dropna()) & set(after.seed.dropna())):
            a, b = _point(before, seed, k).align(_point(after, seed, k), join="inner")
            if a.empty:
                continue
            only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
            p = mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue
            lines.append(
                f"| {k} | {int(seed)} | {int(a.sum())}/{len(a)} | {int(b.sum())}/{len(b)} | {only_a} | {only_b} "
                f"| {p:.2f} |"
            )
            diffs.append((b - a).rename(int(seed)))
        if diffs:
            per_problem = pd.concat(diffs, axis=1).mean(axis=1) * 100
            lo, hi = DescrStatsW(per_problem.to_numpy()).tconfint_mean()
            summary.append(
                f"- {k} examples: {b_name} − {a_name} = {per_problem.mean():+.1f} points [{lo:+.1f}, {hi:+.1f}] "
                f"({len(diffs)} seeds averaged per problem, {len(per_problem)} problems)"
            )
    return lines + [""] + summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--labels", nargs=2, default=["before", "after"])
    p.add_argument("--section", help="bench/RESULTS.md section to write (with --title)")
    p.add_argument("--title", default="Two studies, paired by problem and seed")
    a = p.parse_args(argv)
    lines = compare(pd.read_csv(a.before), pd.read_csv(a.after), tuple(a.labels))
    text = "\n".join(lines)
    print(text)
    if a.section:
        write_section(a.section, f"## {a.title}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
