"""The labelled checker cases, shared by the tests and bench/checker.py.

- ``checker_cases.yaml``: the development table (256 rows). Very long hostile responses are stored as a
  ``<PAD>`` placeholder plus ``pad: {text, times}`` and built here, so the YAML stays readable.
- ``checker_cases_policies.yaml``: rows per policy of docs/CHECKER.md (``{policy: [rows]}``).
- ``checker_real_cases.yaml``: real model outputs and MATH-500 reference solutions, labelled by hand.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent
CASES_FILE = HERE / "checker_cases.yaml"
POLICY_FILE = HERE / "checker_cases_policies.yaml"
REAL_FILE = HERE / "checker_real_cases.yaml"


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


def load_real_cases() -> list[dict]:
    return yaml.safe_load(REAL_FILE.read_text()) if REAL_FILE.exists() else []
