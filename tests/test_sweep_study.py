"""The study design on stand-in runs (no torch): seeds axis, per-model bases, fixed slices, pairing by id.

The stand-in child writes contract-shaped epochs.jsonl lines (docs/CONTRACTS.md) in well under a second:
problem ``p<j>`` is correct when j < (examples seen) / 2, so every point's per-problem vector is known.
Seed 7 lists the same problems in reverse order (stored re-ordered by id); seed 9 is scored on other
problems (a failed trial with a one-line reason).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

import mathgpt.sweep as sw
from mathgpt.checker import CHECKER_VERSION
from mathgpt.config import ConfigError, parse_config
from mathgpt.record import Point, ids_fingerprint
from mathgpt.sweep.slices import SliceMismatch, check_point, to_study_order
from tests import records
from tests.conftest import tiny_run_config
from tests.test_sweep import write_sweep

ROOT = Path(__file__).resolve().parents[1]

FAKE_RUN = """
import hashlib, json, sys, yaml
sys.path.insert(0, "@ROOT@")  # the repo, for tests.records
from tests.records import point, select
from mathgpt.checker import CHECKER_VERSION
cfg = yaml.safe_load(open(sys.argv[1]))
out, seed = sys.argv[2], cfg.get("seed", 0)
ids = [f"p{j}" for j in range(10)]
if seed == 7:
    ids = ids[::-1]
if seed == 9:
    ids = [f"q{j}" for j in range(10)]
fp = hashlib.sha256("\\n".join(sorted(ids)).encode()).hexdigest()[:12]

def line(point_n, k):
    correct = [1 if int(i[1:]) < k / 2 else 0 for i in ids]
    acc = sum(correct) / len(ids)
    sel = select([1, 1, 0, 0], "sel", accuracy=0.5 + k / 100 + seed / 1000)
    knobs = {"model": cfg["model"]["name"], "seed": seed}
    return point(correct, knobs, point=point_n, epoch=k / 8, train_examples=k, ci95=[acc - 0.1, acc + 0.1],
                 n_ungradable=1 if k == 8 else 0, ids=ids, fingerprint=fp, select=sel, checker_version=CHECKER_VERSION)

with open(out + "/epochs.jsonl", "a") as f, open(out + "/predictions.jsonl", "a") as p:
    if cfg["eval"]["base"]:
        f.write(json.dumps(line(0, 0)) + "\\n")
        for i in ids:
            p.write(json.dumps({"model": "base", "point": 0, "slice": "report", "id": i,
                                "eval_set": "synthetic:test", "steps": 2}) + "\\n")
    else:
        for n, k in enumerate(cfg["eval"]["at_examples"], 1):
            f.write(json.dumps(line(n, k)) + "\\n")
            f.flush()
""".replace("@ROOT@", str(ROOT))


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)

    def fake_start(raw: dict, run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "cfg.yaml").write_text(yaml.safe_dump(raw))
        cmd = [sys.executable, str(script), str(run_dir / "cfg.yaml"), str(run_dir)]
        return subprocess.Popen(cmd)

    monkeypatch.setattr(sw.trial, "spawn_run", fake_start)


def write_study(tmp_path: Path, seeds: list[int] | None = None, **fields) -> Path:
    run = tiny_run_config(
        Path("/fake/a"),
        train={
            "epochs": 1,
            "batch_size": 1,
            "min_steps": 4,
            "order": "sequential",
            "lr_scheduler": "constant",
        },
        data={"train_size": 8, "eval_size": 10},
        eval={"at_examples": [4, 8]},
    )
    model = {"model": {"key": "model.name", "type": "categorical", "choices": ["/fake/a", "/fake/b"]}}
    spec = {
        "study": "s",
        "timeout_s": 120,
        "seeds": [0] if seeds is None else seeds,
        "report": {"delta": 0.05},
    }
    return write_sweep(tmp_path, "/fake/a", run=run, **{**spec, "params": model, **fields})


def test_seeds_and_models_each_get_their_trials_scored_on_one_slice(tmp_path, fake_runs, capsys):
    study = sw.run_sweep(write_study(tmp_path, [0, 7, 9]), output_dir=tmp_path / "runs", report=False)
    out = capsys.readouterr().out
    assert "warning: report slice ~10 problems" in out  # 10 problems cannot show a 5-point gain
    attrs = study.user_attrs
    ids = [f"p{j}" for j in range(10)]
    assert [p["id"] for p in attrs["eval_problems"]] == ids
    assert attrs["eval_problems"][0] == {"id": "p0", "eval_set": "synthetic:test", "level": None,
                                         "subject": None, "steps": 2}  # fmt: skip
    assert attrs["eval_fingerprint"] == ids_fingerprint(ids) and attrs["select_fingerprint"] == "sel"
    assert attrs["checker_version"] == CHECKER_VERSION and attrs["general_ids"] == {}
    assert set(attrs["bases"]) == {"/fake/a", "/fake/b"}
    assert {Path(b["dir"]).name for b in attrs["bases"].values()} == {"base-a", "base-b"}
    assert all(b["train_examples"] == 0 and "ids" not in b for b in attrs["bases"].values())
    base_cfg = yaml.safe_load((tmp_path / "runs" / "s" / "base-a" / "cfg.yaml").read_text())
    assert base_cfg["eval"]["at_examples"] is None and base_cfg["train"]["epochs"] == 0
    assert parse_config(base_cfg).eval.base  # the base run's config is valid as written

    trials = study.get_trials()
    assert sorted((t.params["model"], t.params["seed"]) for t in trials) == [
        (m, s) for m in ("/fake/a", "/fake/b") for s in (0, 7, 9)
    ]
    for t in trials:
        o = t.user_attrs["overrides"]
        assert o["seed"] == t.params["seed"] and o["model.name"] == t.params["model"]
        assert o["train.batch_size"] == 1 and o["data.train_size"] == 8
        if t.params["seed"] == 9:  # other problems: refused with one line
            assert t.state == TrialState.FAIL
            assert "report slice fingerprint" in t.user_attrs["fail_reason"]
            assert "\n" not in t.user_attrs["fail_reason"]
            continue
        assert t.state == TrialState.COMPLETE
        points = t.user_attrs["points"]
        assert [p["train_examples"] for p in points] == [4, 8] and all("ids" not in p for p in points)
        # Stored in the study's order whatever order the run listed them in: p<j> correct iff j < k / 2.
        assert [p["correct"] for p in points] == [
            [int(j < 2) for j in range(10)],
            [int(j < 4) for j in range(10)],
        ]
        assert t.intermediate_values == {4: 0.54 + t.params["seed"] / 1000, 8: 0.58 + t.params["seed"] / 1000}
        assert t.value == pytest.approx(0.58 + t.params["seed"] / 1000)  # the selection slice, last point
        assert t.user_attrs["checker_version"] == CHECKER_VERSION
        # What optuna-dashboard shows for a trial: the last point's report-slice accuracy and its interval.
        assert t.user_attrs["accuracy"] == points[-1]["accuracy"]
        assert t.user_attrs["ci95"] == points[-1]["ci95"] == pytest.approx([0.3, 0.5])
        assert t.user_attrs["train_examples"] == 8
    assert "ungradable at point 2" in out


def test_rerun_keeps_the_bases_and_runs_nothing_twice(tmp_path, fake_runs):
    path = write_study(tmp_path, [0])
    sw.run_sweep(path, output_dir=tmp_path / "runs", report=False)
    study = sw.run_sweep(path, output_dir=tmp_path / "runs", report=False)
    assert len(study.get_trials()) == 2 and len(study.user_attrs["bases"]) == 2


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seeds": [0, 0]}, "repeats a seed"),
        ({"seeds": []}, "'seeds'"),
        ({"overrides": {"seed": 3}}, "the training seed is the 'seeds' axis"),
        ({"params": {"s": {"key": "seed", "type": "categorical", "choices": [1]}}}, "'seeds' axis"),
        (
            {"params": {"e": {"key": "data.eval_seed", "type": "categorical", "choices": [1, 2]}}},
            "evaluation slices",
        ),
        (
            {"params": {"n": {"key": "data.eval_size", "type": "categorical", "choices": [5]}}},
            "evaluation slices",
        ),
        ({"report": {"delta": 1.5}}, "'report.delta'"),
        ({"report": {"power": 0.8, "beta": 1}}, "unknown key 'report.beta'"),
    ],
)
def test_bad_study_design_is_one_line(tmp_path, fields, message):
    with pytest.raises(ConfigError) as err:
        sw.load_sweep(write_study(tmp_path, **{"seeds": [0], **fields}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_seed_is_a_grid_axis_and_models_are_listed(tmp_path):
    sweep, _, base_raw = sw.load_sweep(write_study(tmp_path, [0, 1]))
    assert sweep.grid() == {"model": ["/fake/a", "/fake/b"], "seed": [0, 1]}
    assert sweep.models(base_raw) == ["/fake/a", "/fake/b"]
    assert sweep.report.delta == 0.05 and sweep.report.alpha == 0.05 and sweep.report.power == 0.8


def test_points_are_stored_in_the_study_order_and_other_problems_refused():
    p = Point.model_validate(records.point([1, 0], ids=["b", "a"], fingerprint=ids_fingerprint(["a", "b"])))
    assert to_study_order(p, ["a", "b"]).correct == [0, 1] and to_study_order(p, ["a", "b"]).ids is None
    check_point(p, ids_fingerprint(["a", "b"]), None)
    with pytest.raises(SliceMismatch, match="differs from the study's"):
        check_point(p, ids_fingerprint(["a", "c"]), None)
    with pytest.raises(SliceMismatch, match="other problems"):
        to_study_order(p, ["a", "c"])


def test_workers_split_the_cores_and_pass_the_split_to_run_children(monkeypatch):
    from mathgpt.sweep import workers

    assert [workers.threads_per_worker(n, cores=16) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]
    monkeypatch.setattr(workers, "cpu_cores", lambda: 6)
    env = workers.worker_env(2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    # Inside the worker, a run child inherits the split.
    monkeypatch.setenv("OMP_NUM_THREADS", env["OMP_NUM_THREADS"])
    assert sw.trial.child_env()["OMP_NUM_THREADS"] == "3"
    cmd = workers.worker_cmd("s.yaml", "postgresql://h/db", "st", "runs", None)
    assert cmd[3:] == ["sweep", "s.yaml", "--storage", "postgresql://h/db", "--study", "st",
                       "--output-dir", "runs", "--no-report", "--worker"]  # fmt: skip


def test_the_end_of_a_study_writes_the_report_from_the_study(tmp_path, fake_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./analysis/<study>/
    path = write_study(tmp_path, [0, 7], params={"lr": {"key": "train.learning_rate", "type": "categorical",
                                                        "choices": [1e-3]}})  # fmt: skip
    sw.run_sweep(path, output_dir=tmp_path / "runs", report=True)
    out = tmp_path / "analysis" / "s"
    assert (out / "report.md").is_file() and (out / "problems.csv").is_file()
    matrix = (out / "problems.csv").read_text().splitlines()
    assert len(matrix) == 1 + 10 * (1 + 2 * 2)  # header, base and 2 seeds x 2 points, 10 problems each
