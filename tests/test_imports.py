"""The light readers stay light, and the package imports only leftwards (docs/CONTRACTS.md's order)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "matplotlib")


@pytest.mark.parametrize("module", ["mathgpt.report.load", "mathgpt.sweep", "mathgpt.track_study"])
def test_light_modules_load_no_torch_transformers_or_matplotlib(module):
    code = f"import {module}, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(out.stdout) == [], f"{module} loads {out.stdout.strip()}"
