"""Checker bench: three labelled case sets through math-verify and through mathgpt.checker, side by side.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARD_CAP_S = 12.0

sys.path.insert(0, str(ROOT))
from tests.checker_cases import load_cases, load_policy_cases, load_real_cases  # noqa: E402


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
        "n": len(cases),
        "accuracy": sum(right) / len(cases),
        "fp": sum(v and not c["expected"] for c, v in zip(cases, verdicts, strict=True)),
        "fn": sum(c["expected"] and not v for c, v in zip(cases, verdicts, strict=True)),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "wrong": [
            (c["kind"], c["gold"][:50], c["response"][-70:], v)
            for c, v in zip(cases, verdicts, strict=True)
            if v != c["expected"]
        ],
    }


def case_sets() -> dict[str, list[dict]]:
    """The three labelled sets; ``kind`` is the category, the policy, or the real output's source."""
    dev = [{**c, "kind": c["category"]} for c in load_cases()]
    real = [{**c, "kind": c["source"].split(",")[0].split(";")[0][:40]} for c in load_real_cases()]
    policy = [{**c, "kind": c["policy"]} for c in load_policy_cases()]
    return {"case file": dev, "real outputs": real, "policy kinds": policy}


def code_execution_calls() -> list[str]:
    """Calls in mathgpt/checker/ that would run text as code (eval, exec, sympify, parse_expr, ...)."""
    import ast

    builtins = {"eval", "exec", "compile", "__import__"}  # as bare names (re.compile is not one)
    anywhere = {"sympify", "parse_expr", "S", "parse_latex"}  # sympy's text-to-code entry points
    found = []
    for module in sorted((ROOT / "mathgpt" / "checker").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call):
                bare = isinstance(node.func, ast.Name)
                name = node.func.id if bare else getattr(node.func, "attr", "")
                if name in anywhere or (bare and name in builtins):
                    found.append(f"{module.name}:{node.lineno} {name}")
    return found


def run() -> dict[str, dict[str, dict]]:
    from mathgpt.checker import grade, warm_up

    sets = case_sets()
    results: dict[str, dict[str, dict]] = {name: {} for name in sets}
    child = MathVerifyChild()
    child.grade("$1$", "$1$")  # warm its imports too
    for name, cases in sets.items():
        mv = [child.grade(math_verify_gold(c["gold"], c["dataset"]), c["response"]) for c in cases]
        results[name]["math-verify"] = score(cases, [v for v, _ in mv], [s for _, s in mv])
    child.proc.kill()

    warm_up()
    for name, cases in sets.items():
        ours = []
        for c in cases:
            start = time.perf_counter()
            verdict = grade(c["gold"], c["response"], c["dataset"]).correct
            ours.append((verdict, time.perf_counter() - start))
        results[name]["mathgpt.checker"] = score(cases, [v for v, _ in ours], [s for _, s in ours])
    return results


def report(results: dict[str, dict[str, dict]]) -> str:
    from importlib.metadata import version

    from mathgpt.checker import CHECKER_VERSION

    calls = code_execution_calls()
    lines = [
        "## Answer checker",
        "",
        f"`python bench/checker.py`: mathgpt.checker {CHECKER_VERSION} and math-verify "
        f"{version('math-verify')} (default options) side by side on three hand-labelled sets: the "
        "development case file (`tests/checker_cases.yaml`), real model outputs and MATH-500 reference "
        "solutions (`tests/checker_real_cases.yaml`), and the policy kinds of docs/CHECKER.md "
        f"(`tests/checker_cases_policies.yaml`). sympy {version('sympy')}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU cores ({platform.machine()}), measured under "
        "load (shared with other jobs): times are wall seconds per case, extraction + parsing + verification.",
        "",
        "| set | cases | checker | accuracy | false positives | false negatives | median s/case | max s/case |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_checker in results.items():
        for checker, r in by_checker.items():
            cells = [name, r["n"], checker, f"{r['accuracy']:.3f}", r["fp"], r["fn"]]
            cells += [f"{r['median_s']:.4f}", f"{r['max_s']:.3f}"]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += [
        "",
        "Code execution in mathgpt.checker (AST scan of mathgpt/checker/ for calls of eval, exec, compile, "
        f"__import__, sympify, parse_expr, S, parse_latex): {', '.join(calls) if calls else 'none'}.",
        "",
        "Caveat: all three sets were labelled while this checker version was written, so they are development "
        "scores, not held-out ones; the real outputs are mostly wrong answers of a 135M base model, which "
        "test false positives more than false negatives.",
    ]
    for name, by_checker in results.items():
        for checker, r in by_checker.items():
            lines += ["", f"{checker} misses on {name} (kind, gold, response tail, verdict):", ""]
            lines += [f"- `{w!r}`" for w in r["wrong"][:12]] or ["- none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-math-verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_math_verify:
        serve_math_verify()
        return
    results = run()
    text = report(results)
    print(text)
    sys.path.insert(0, str(ROOT / "bench"))
    from results import write_section

    print(f"written to {write_section('checker', text)}")


if __name__ == "__main__":
    main()
