"""The labelled checker cases, shared by the tests and bench/checker.py.

- ``checker_cases.yaml``: the development table (256 rows). Very long hostile responses are stored as a
  ``<PAD>`` placeholder plus ``pad: {text, times}`` and built here, so the YAML stays readable.
- ``checker_cases_policies.yaml``: rows per policy of docs/CHECKER.md (``{policy: [rows]}``).
- ``checker_cases_v3.yaml``: rows per checker 3.0 kind of docs/CHECKER.md (``{kind: [rows]}``).
- ``checker_real_cases.yaml``: real model outputs and MATH-500 reference solutions, labelled by hand.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import yaml

HERE = Path(__file__).parent
CASES_FILE = HERE / "checker_cases.yaml"
POLICY_FILE = HERE / "checker_cases_policies.yaml"
REAL_FILE = HERE / "checker_real_cases.yaml"
V3_FILE = HERE / "checker_cases_v3.yaml"


def load_cases() -> list[dict]:
    cases = yaml.safe_load(CASES_FILE.read_text())
    for case in cases:
        if "pad" in case:
            case["response"] = case["response"].replace("<PAD>", case["pad"]["text"] * case["pad"]["times"])
    return cases


def load_policy_cases() -> list[dict]:
    """Every policy row with its ``policy`` name, in file order."""
    table = yaml.safe_load(POLICY_FILE.read_text())
    return [{**row, "policy": policy} for policy, rows in table.items() for row in rows]


def load_v3_cases() -> list[dict]:
    """Every checker 3.0 row with its ``policy`` (the kind's name), in file order."""
    table = yaml.safe_load(V3_FILE.read_text())
    return [{**row, "policy": kind} for kind, rows in table.items() for row in rows]


def load_real_cases() -> list[dict]:
    return yaml.safe_load(REAL_FILE.read_text()) if REAL_FILE.exists() else []


@contextlib.contextmanager
def frozen_workers() -> Iterator[None]:
    """SIGSTOP every idle checker worker for the duration: a symbolic check cannot be answered in time.

    A zero timeout alone races a warm worker (it answers sin^2 x + cos^2 x = 1 in ~30 ms), and a test process
    descheduled for that long on a busy machine saw the answer arrive: a flaky "timeout" test. A stopped
    worker cannot answer however long the caller waits; the ones not used are resumed afterwards.
    """
    from mathgpt.checker import pool

    frozen = list(pool._POOL)
    for w in frozen:
        os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for w in frozen:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)
