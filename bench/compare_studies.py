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
import shlex
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

from mathgpt.stats import mcnemar_test, mean_ci  # noqa: E402


def _point(df: pd.DataFrame, seed: float, k: int) -> pd.Series:
    return df[(df.seed == seed) & (df.train_examples == k)].set_index("problem_id").correct


def compare(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str]) -> list[str]:
    a_name, b_name = labels
    lines = [
        f"| examples | seed | {a_name} | {b_name} | only {a_name} | only {b_name} | McNemar p |",
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
            m = mcnemar_test(a.to_numpy(), b.to_numpy())  # exact below 25 discordant problems
            lines.append(
                f"| {k} | {int(seed)} | {int(a.sum())}/{len(a)} | {int(b.sum())}/{len(b)} | {m.base_only} "
                f"| {m.tuned_only} | {m.pvalue:.2f}{'' if m.exact else ' (chi2)'} |"
            )
            diffs.append((b - a).rename(int(seed)))
        if diffs:
            per_problem = pd.concat(diffs, axis=1).mean(axis=1) * 100
            ci = mean_ci(per_problem.to_numpy())
            summary.append(
                f"- {k} examples: {b_name} − {a_name} = {ci.mean:+.1f} points [{ci.lo:+.1f}, {ci.hi:+.1f}] "
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
        cmd = shlex.join(argv if argv is not None else sys.argv[1:])
        write_section(a.section, f"## {a.title}\n\n`python bench/compare_studies.py {cmd}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
