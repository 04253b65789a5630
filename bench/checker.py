"""Checker bench: the labelled case sets through mathgpt.checker, math-verify and lm-eval-style extraction.

    python bench/checker.py   (writes its section of bench/RESULTS.md)

Checkers: mathgpt.checker flexible (the headline) and strict; math-verify; lm-eval-harness-style "strict" and
"flexible" extraction (written here after lm-eval's GSM8K and MATH task definitions, not imported: GSM8K
strict reads ``#### N``, flexible the last number; MATH strict reads "The final answer is X", flexible the
last ``\boxed{}``; both then compare normalised strings, as lm-eval's exact match does). Reported per set and
per kind, with the worst case's time, and case by case on the real-output table wherever they differ.

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
import re
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARD_CAP_S = 12.0

sys.path.insert(0, str(ROOT))
from tests.checker_cases import (  # noqa: E402
    load_cases,
    load_policy_cases,
    load_real_cases,
    load_v3_cases,
)

# ------------------------------------------------------------------ lm-eval-harness-style extraction (own code)

_LM_GSM8K_STRICT = re.compile(r"#### (-?[0-9.,]+)")
_LM_GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_MATH_STRICT = re.compile(r"[Tt]he final answer is (.+?)(?:\. I hope|\n|$)")


def _lm_last_boxed(text: str) -> str | None:
    at = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if at < 0:
        return None
    start = text.index("{", at)
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def _lm_normalise(answer: str, dataset: str) -> str:
    """What lm-eval's exact match compares: GSM8K drops commas, dollars and a final period; MATH drops
    spacing, math delimiters, \\left/\\right, \\text{} wrappers, degrees and \\dfrac spelling."""
    answer = answer.strip()
    if dataset == "gsm8k":
        return re.sub(r"[,$]|\.$", "", answer).strip().lower()
    answer = re.sub(r"\\text\{([^{}]*)\}|\\mbox\{([^{}]*)\}", lambda m: m[1] or m[2] or "", answer)
    answer = re.sub(r"\\left|\\right|\\!|\\,|\\;|\$|\^\{?\\circ\}?|\s", "", answer)
    return re.sub(r"\\[dt]frac", r"\\frac", answer).rstrip(".")


def lm_eval_style(gold: str, response: str, dataset: str, mode: str) -> bool:
    """lm-eval-style verdict: the extracted string equals the gold string after normalisation."""
    from mathgpt.checker import gold_answer

    if dataset == "gsm8k":
        if mode == "strict":
            m = _LM_GSM8K_STRICT.search(response)
            got = m.group(1) if m else None
        else:
            found = _LM_GSM8K_FLEXIBLE.findall(response)
            got = next((a or b for a, b in reversed(found) if (a or b).strip(".,$")), None) if found else None
    elif mode == "strict":
        m = _LM_MATH_STRICT.search(response)
        got = m.group(1) if m else None
    else:
        got = _lm_last_boxed(response)
    if got is None:
        return False
    return _lm_normalise(got, dataset) == _lm_normalise(gold_answer(gold, dataset), dataset)


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
    kinds: dict[str, list[bool]] = {}
    for c, r in zip(cases, right, strict=True):
        kinds.setdefault(c["kind"], []).append(r)
    worst = max(range(len(cases)), key=lambda i: seconds[i])
    return {
        "verdicts": verdicts,
        "by_kind": {k: (sum(v), len(v)) for k, v in kinds.items()},
        "worst": f"{cases[worst]['kind']}: {cases[worst]['response'][-50:]!r}",
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


def _real_kind(source: str) -> str:
    """The real output's eval set ("gsm8k:test", "math500"), or "MATH-500 solution" for a reference."""
    if source.startswith("MATH-500 reference"):
        return "MATH-500 solution"
    return source.rsplit(";", 1)[-1].strip().rsplit(":", 2)[0]


def case_sets() -> dict[str, list[dict]]:
    """The labelled sets; ``kind`` is the category, the policy, or the real output's eval set."""
    dev = [{**c, "kind": c["category"]} for c in load_cases()]
    real = [{**c, "kind": _real_kind(c["source"])} for c in load_real_cases()]
    policy = [{**c, "kind": c["policy"]} for c in load_policy_cases()]
    v3 = [{**c, "kind": c["policy"]} for c in load_v3_cases()]
    return {"case file": dev, "real outputs": real, "policy kinds": policy, "checker 3.0 kinds": v3}


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


def run() -> tuple[dict[str, list[dict]], dict[str, dict[str, dict]]]:
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
        for checker, mode in (("mathgpt.checker", "flexible"), ("mathgpt.checker strict", "strict")):
            ours = []
            for c in cases:
                start = time.perf_counter()
                verdict = grade(c["gold"], c["response"], c["dataset"], mode=mode).correct
                ours.append((verdict, time.perf_counter() - start))
            results[name][checker] = score(cases, [v for v, _ in ours], [s for _, s in ours])
        for mode in ("strict", "flexible"):
            lm = []
            for c in cases:
                start = time.perf_counter()
                lm.append(
                    (lm_eval_style(c["gold"], c["response"], c["dataset"], mode), time.perf_counter() - start)
                )
            results[name][f"lm-eval-style {mode}"] = score(cases, [v for v, _ in lm], [s for _, s in lm])
    return sets, results


def _agreement(results: dict[str, dict], reference: str = "mathgpt.checker") -> dict[str, float]:
    """Share of cases on which each checker's verdict equals ``reference``'s."""
    ours = results[reference]["verdicts"]
    return {
        checker: sum(a == b for a, b in zip(r["verdicts"], ours, strict=True)) / len(ours)
        for checker, r in results.items()
    }


def case_by_case(cases: list[dict], results: dict[str, dict]) -> list[str]:
    """One markdown row per real case where any checker disagrees with the label or with another checker."""
    from tests.test_checker_real import _id

    names = list(results)
    rows = ["| case | label | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    mark = {True: "T", False: "F"}
    for i, c in enumerate(cases):
        verdicts = [results[n]["verdicts"][i] for n in names]
        if len(set(verdicts)) == 1 and verdicts[0] == c["expected"]:
            continue
        cells = [f"`{_id(c)}`", mark[c["expected"]]]
        cells += [mark[v] + ("" if v == c["expected"] else " ✗") for v in verdicts]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def report(sets: dict[str, list[dict]], results: dict[str, dict[str, dict]]) -> str:
    from importlib.metadata import version

    from mathgpt.checker import CHECKER_VERSION

    calls = code_execution_calls()
    lines = [
        "## Answer checker",
        "",
        f"`python bench/checker.py`: mathgpt.checker {CHECKER_VERSION} (flexible, the headline, and strict), "
        f"math-verify {version('math-verify')} (default options) and lm-eval-harness-style strict/flexible "
        "extraction with exact match (re-implemented in bench/checker.py after lm-eval's GSM8K and MATH tasks) "
        "side by side on four hand-labelled sets: the development case file (`tests/checker_cases.yaml`), real "
        "model outputs and MATH-500 reference solutions (`tests/checker_real_cases.yaml`), the policy kinds of "
        "docs/CHECKER.md (`tests/checker_cases_policies.yaml`) and the checker 3.0 kinds "
        f"(`tests/checker_cases_v3.yaml`). sympy {version('sympy')}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU cores ({platform.machine()}), measured under "
        "load (shared with other jobs): times are wall seconds per case, extraction + parsing + verification.",
        "",
        "| set | cases | checker | accuracy | false positives | false negatives | agrees with mathgpt "
        "| median s/case | max s/case |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_checker in results.items():
        agree = _agreement(by_checker)
        for checker, r in by_checker.items():
            cells = [name, r["n"], checker, f"{r['accuracy']:.3f}", r["fp"], r["fn"], f"{agree[checker]:.3f}"]
            cells += [f"{r['median_s']:.4f}", f"{r['max_s']:.3f}"]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Worst per-case time of each checker (set: kind, response tail):", ""]
    for name, by_checker in results.items():
        for checker, r in by_checker.items():
            lines.append(f"- {name}, {checker}: {r['max_s']:.3f} s ({r['worst']})")
    lines += ["", "Per-kind accuracy (right verdicts / cases) of each checker:", ""]
    for name, by_checker in results.items():
        checkers = list(by_checker)
        lines += ["", f"{name}:", "", "| kind | " + " | ".join(checkers) + " |"]
        lines.append("| --- |" + " --- |" * len(checkers))
        for kind in by_checker[checkers[0]]["by_kind"]:
            cells = [
                f"{by_checker[c]['by_kind'][kind][0]}/{by_checker[c]['by_kind'][kind][1]}" for c in checkers
            ]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Real outputs case by case (`tests/checker_real_cases.yaml`, pytest id; T/F = verdict, ✗ = differs from "
        "the hand label); cases where every checker agrees with the label are left out:",
        "",
    ]
    lines += case_by_case(sets["real outputs"], results["real outputs"])
    lines += [
        "",
        "Code execution in mathgpt.checker (AST scan of mathgpt/checker/ for calls of eval, exec, compile, "
        f"__import__, sympify, parse_expr, S, parse_latex): {', '.join(calls) if calls else 'none'}.",
        "",
        "Caveat: all four sets were labelled while this checker or its predecessor was written, so they are "
        "development "
        "scores, not held-out ones; the real outputs are mostly wrong answers of a 135M base model, which "
        "test false positives more than false negatives.",
    ]
    for name, by_checker in results.items():
        for checker, r in by_checker.items():
            if checker.startswith("lm-eval") or checker.endswith("strict"):
                continue  # by design they miss every unformatted answer: the per-kind table shows where
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
    sets, results = run()
    text = report(sets, results)
    print(text)
    sys.path.insert(0, str(ROOT / "bench"))
    from results import write_section

    print(f"written to {write_section('checker', text)}")


if __name__ == "__main__":
    main()
