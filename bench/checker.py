"""Checker bench: the labelled cases through math-verify and through mathgpt.checker, side by side.

    python bench/checker.py   (writes its section of bench/RESULTS.md)

math-verify runs in a child process, in that child's main thread, so its SIGALRM timeouts (5 s per parse and
per verify, its defaults) work; the parent also kills the child after HARD_CAP_S so a case stuck in C code
cannot hang the bench (such a case scores false at HARD_CAP_S). mathgpt.checker runs in-process, as the
evaluation calls it, after ``warm_up()`` so sympy's one-time import is not charged to the first case.
Times are wall seconds per case (extraction + parsing + verification).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MATHGPT_DATA_DIR") or ROOT.parent / "shared" / "data")
HARD_CAP_S = 12.0

sys.path.insert(0, str(ROOT))
from tests.checker_cases import load_cases  # noqa: E402  (the case file's own reader)


def math_verify_gold(gold: str, dataset: str) -> str:
    """Gold in the form math-verify's README uses: a bare number, LaTeX in $...$, or a boxed solution."""
    from mathgpt.checker import gold_answer

    if dataset == "gsm8k":
        return gold_answer(gold, dataset)
    return gold if "\\boxed" in gold else f"${gold}$"


def serve_math_verify() -> None:
    """Child loop: one case per JSON line in, {"verdict", "seconds"} out; math-verify in the main thread."""
    from math_verify import parse, verify

    print("ready", flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        start = time.perf_counter()
        try:
            verdict = bool(verify(parse(case["gold"]), parse(case["response"])))
        except Exception:  # math-verify raising is a "not verified", as its own raise_on_error=False does
            verdict = False
        print(json.dumps({"verdict": verdict, "seconds": time.perf_counter() - start}), flush=True)


class MathVerifyChild:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-math-verify"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]

    def grade(self, gold: str, response: str) -> tuple[bool, float]:
        self.proc.stdin.write(json.dumps({"gold": gold, "response": response}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        if select.select([self.proc.stdout], [], [], HARD_CAP_S)[0]:
            reply = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
            return reply["verdict"], reply["seconds"]
        self.proc.kill()
        self.proc.wait()
        self.__init__()  # a fresh child for the next case
        return False, HARD_CAP_S


def score(cases: list[dict], verdicts: list[bool], seconds: list[float]) -> dict:
    right = [v == c["expected"] for c, v in zip(cases, verdicts, strict=True)]
    return {
        "accuracy": sum(right) / len(cases),
        "fp": sum(v and not c["expected"] for c, v in zip(cases, verdicts, strict=True)),
        "fn": sum(c["expected"] and not v for c, v in zip(cases, verdicts, strict=True)),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "by_category": Counter(c["category"] for c, ok in zip(cases, right, strict=True) if ok),
        "slowest": cases[seconds.index(max(seconds))]["category"],
    }


def run() -> tuple[list[dict], dict[str, dict]]:
    from mathgpt.checker import grade, warm_up

    cases = load_cases()
    results: dict[str, dict] = {}
    child = MathVerifyChild()
    child.grade("$1$", "$1$")  # warm its imports too
    mv = [child.grade(math_verify_gold(c["gold"], c["dataset"]), c["response"]) for c in cases]
    results["math-verify"] = score(cases, [v for v, _ in mv], [s for _, s in mv])
    math500 = [json.loads(line) for line in (DATA_DIR / "math" / "math500_test.jsonl").open()]
    results["math-verify"]["math500"] = sum(
        child.grade(f"${r['answer']}$", r["solution"])[0] for r in math500
    )
    child.proc.kill()

    warm_up()
    ours = []
    for c in cases:
        start = time.perf_counter()
        verdict = grade(c["gold"], c["response"], c["dataset"]).correct
        ours.append((verdict, time.perf_counter() - start))
    results["mathgpt.checker"] = score(cases, [v for v, _ in ours], [s for _, s in ours])
    results["mathgpt.checker"]["math500"] = sum(
        grade(r["answer"], r["solution"], "math").correct for r in math500
    )
    for name, verdicts in (("math-verify", mv), ("mathgpt.checker", ours)):
        results[name]["wrong"] = [
            (c["category"], c["gold"][:50], c["response"][-70:], v)
            for c, (v, _) in zip(cases, verdicts, strict=True)
            if v != c["expected"]
        ]
    return cases, results


def report(cases: list[dict], results: dict[str, dict]) -> str:
    from importlib.metadata import version

    counts = Counter(c["category"] for c in cases)
    lines = [
        "## Answer checker",
        "",
        f"`python bench/checker.py` on {len(cases)} hand-labelled cases (`tests/checker_cases.yaml`: "
        f"{counts['near_miss']} near misses, {counts['hostile']} hostile inputs); math-verify "
        f"{version('math-verify')}, sympy {version('sympy')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores ({platform.machine()}), shared with other jobs.",
        "",
        "| checker | accuracy | false positives | false negatives | median s/case | max s/case (category) "
        "| MATH-500 solutions = own answer |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        cells = [f"{r['accuracy']:.3f}", r["fp"], r["fn"], f"{r['median_s']:.4f}"]
        cells += [f"{r['max_s']:.3f} ({r['slowest']})", f"{r['math500']}/500"]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    lines += [
        "",
        "Caveat: the case file was written alongside mathgpt.checker, so its score there is a "
        "development-set score, not a held-out one. The last column uses real data: each MATH-500 reference "
        "solution (ending in \\boxed{}) graded against the row's own `answer` field, where every verdict "
        "should be true; it too was used while developing mathgpt.checker (to find parser gaps).",
    ]
    lines += ["", "Correct verdicts by category:", "", "| category | cases | " + " | ".join(results) + " |"]
    lines.append("| --- | --- |" + " --- |" * len(results))
    for cat, n in counts.most_common():
        lines.append(
            f"| {cat} | {n} | " + " | ".join(str(r["by_category"][cat]) for r in results.values()) + " |"
        )
    lines += ["", "Cases math-verify gets wrong, a sample (category, gold, response tail, its verdict):", ""]
    lines += [f"- `{w!r}`" for w in results["math-verify"]["wrong"][:15]]
    lines += ["", "Cases mathgpt.checker gets wrong:", ""]
    lines += [f"- `{w!r}`" for w in results["mathgpt.checker"]["wrong"]] or ["- none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-math-verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_math_verify:
        serve_math_verify()
        return
    sys.path.insert(0, str(ROOT))
    cases, results = run()
    text = report(cases, results)
    print(text)
    sys.path.insert(0, str(ROOT / "bench"))
    from results import write_section

    print(f"written to {write_section('checker', text)}")


if __name__ == "__main__":
    main()
