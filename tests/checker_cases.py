"""The labelled checker cases (checker_cases.yaml), shared by the accuracy test and bench/checker.py.

Very long hostile responses are stored as a ``<PAD>`` placeholder plus ``pad: {text, times}`` and built here,
so the YAML stays readable.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CASES_FILE = Path(__file__).with_name("checker_cases.yaml")


def load_cases() -> list[dict]:
    cases = yaml.safe_load(CASES_FILE.read_text())
    for case in cases:
        if "pad" in case:
            case["response"] = case["response"].replace("<PAD>", case["pad"]["text"] * case["pad"]["times"])
    return cases
