"""Issue 20's defects that are not kills or races (those are tests/test_faults.py): hostile input refused early.

Study names that escape their folders, secrets in storage URLs, the dashboard's Host check, unbounded
generation lengths, YAML alias bombs and the validation gaps. Each test reproduces the defect as the issue
describes it and fails on the code before the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mathgpt.cli import main
from tests.test_sweep_study import fake_runs, write_study  # noqa: F401 - fake_runs is a fixture


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------------------------------- study names


@pytest.mark.usefixtures("fake_runs")
@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "/abs/x", "", "x y", "..", "a\\b"])
def test_a_study_name_is_one_safe_path_component(tmp_path, monkeypatch, capsys, bad):
    """Issue 20 #5: --study, `study:` in the YAML and `mathgpt report NAME` refuse names that leave their folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_study(work)
    runs = work / "runs"
    before = tree(tmp_path)
    assert main(["sweep", str(path), "--output-dir", str(runs), "--study", bad, "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study name" in err and "\n" not in err, err
    (work / "bad.yaml").write_text(path.read_text().replace("study: s", f"study: '{bad}'"))
    assert main(["sweep", str(work / "bad.yaml"), "--output-dir", str(runs), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study" in err and "\n" not in err, err
    assert main(["report", bad, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "study name" in err and "\n" not in err, err
    assert main(["dashboard", bad, "--runs-dir", str(runs), "--port", "0"]) == 2
    capsys.readouterr()
    assert tree(tmp_path) == before | {"work/bad.yaml"}  # nothing written anywhere
