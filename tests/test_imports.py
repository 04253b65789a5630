"""The light readers stay light, and the package imports only leftwards (docs/CONTRACTS.md's order)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "matplotlib")


@pytest.mark.parametrize("module", ["mathgpt.report.load", "mathgpt.sweep", "mathgpt.track_study"])
def test_light_modules_load_no_torch_transformers_or_matplotlib(module):
    code = f"import {module}, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(out.stdout) == [], f"{module} loads {out.stdout.strip()}"


def documented_order() -> list[str]:
    """The module names of docs/CONTRACTS.md's "Package order" paragraph, left to right."""
    text = (REPO / "docs" / "CONTRACTS.md").read_text()
    para = text[text.index("Package order") :].split("\n\n")[0]
    para = para[para.index("):") :]  # the order itself, after the parenthesis that explains it
    return [name.rstrip("/") for name in re.findall(r"`([a-z_]+/?)`(?:\s*\([^)]*\))?\s*(?:→|\.)", para)]


def mathgpt_imports(path: Path) -> list[tuple[str, int]]:
    """(top-level mathgpt module, line) for every import in ``path``, module level or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mathgpt"):
            names = [f"mathgpt.{a.name}" for a in node.names] if node.module == "mathgpt" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("mathgpt")]
        else:
            continue
        out += [(name.split(".")[1], node.lineno) for name in names if "." in name]
    return out


def test_every_import_points_left_in_the_documented_order():
    order = documented_order()
    assert order[:3] == ["redact", "machine", "config"] and order[-1] == "cli", order
    package = REPO / "mathgpt"
    modules = {p.relative_to(package).parts[0].removesuffix(".py") for p in package.glob("*")}
    modules -= {"__init__", "__main__", "__pycache__", "py.typed"}
    assert modules - set(order) == set(), "modules missing from docs/CONTRACTS.md's package order"
    wrong = []
    for path in sorted(package.rglob("*.py")):
        me = path.relative_to(package).parts[0].removesuffix(".py")
        if me in ("__init__", "__main__"):
            continue
        for target, line in mathgpt_imports(path):
            if target != me and order.index(target) > order.index(me):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}, right of {me}")
    assert wrong == []
