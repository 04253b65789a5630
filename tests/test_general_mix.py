"""data.mix: general instruction rows mixed into the math training set (counts, nesting, fingerprints, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathgpt import data, general
from mathgpt.cli import main
from mathgpt.config import MixConfig
from mathgpt.data import DataError
from mathgpt.datafiles import nested_subset
from tests.conftest import need_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    need_data(SHARED / general.INSTRUCTION_SETS["self_instruct"])
    return SHARED


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("MATHGPT_DATA_DIR", raising=False)


def test_self_instruct_rows_are_examples(data_dir):
    rows = general.load_instructions("self_instruct", data_dir)
    assert len(rows) == 175 and len({r.id for r in rows}) == 175
    assert rows[0].id == "self_instruct:seed_task_0" and rows[0].source == "general/self_instruct"
    assert rows[0].question.startswith("Is there anything I can eat for a breakfast")
    assert rows[0].solution.startswith("Yes, you can have 1 oatmeal banana protein shake")
    with_input = next(r for r in rows if r.id == "self_instruct:seed_task_1")
    assert with_input.question.endswith("\n\nNight : Day :: Right : Left")  # instruction, blank line, input


def test_mix_counts_rows_by_source_nests_and_fingerprints(data_dir):
    pool = data.load("synthetic:train")
    mix = MixConfig(dataset="self_instruct", fraction=0.25)
    small = general.mix_train_set(pool, 40, 3, mix, data_dir)
    large = general.mix_train_set(pool, 80, 3, mix, data_dir)
    assert general.count_by_source(small) == {"general/self_instruct": 10, "synthetic": 30}
    assert general.count_by_source(large) == {"general/self_instruct": 20, "synthetic": 60}
    # Each part is a prefix of its own seeded order: the fingerprint is that of the two nested subsets.
    instr = general.load_instructions("self_instruct", data_dir)
    expected = nested_subset(pool, 30, 3) + nested_subset(instr, 10, 3)
    assert data.fingerprint(small) == data.fingerprint(expected)
    assert {e.id for e in small} <= {e.id for e in large}
    # Spread evenly: every prefix of 4 rows holds exactly one general row.
    for k in range(0, 40, 4):
        assert sum(e.source != "synthetic" for e in small[k : k + 4]) == 1
    # Another seed draws other rows; fraction 0 and no mix are the plain math subset.
    assert data.fingerprint(general.mix_train_set(pool, 40, 4, mix, data_dir)) != data.fingerprint(small)
    plain = nested_subset(pool, 40, 3)
    assert general.mix_train_set(pool, 40, 3, None, data_dir) == plain
    assert general.mix_train_set(pool, 40, 3, MixConfig(dataset="nope", fraction=0.0), data_dir) == plain


def test_hub_instruction_set_goes_through_the_same_converter(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        rows = [
            {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
            {"instruction": "Summarise.", "context": "A long text.", "response": "Short.", "category": "x"},
        ]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = general.load_instructions("databricks/databricks-dolly-15k")
    assert calls == [("databricks/databricks-dolly-15k", None, "train")]
    assert [(r.id, r.question, r.solution, r.source) for r in rows] == [
        ("databricks-dolly-15k:0", "Name a colour.", "Blue.", "general/databricks-dolly-15k"),
        ("databricks-dolly-15k:1", "Summarise.\n\nA long text.", "Short.", "general/databricks-dolly-15k"),
    ]


def test_bad_mix_input_is_one_line(data_dir, tmp_path):
    with pytest.raises(DataError, match="unknown general dataset 'dolly'; known: self_instruct"):
        general.load_instructions("dolly", data_dir)
    with pytest.raises(
        DataError, match=r"data.mix: 200 rows \(0.5 x 400\) asked of 'self_instruct', which has 175"
    ):
        general.mix_train_set(
            data.load("synthetic:train"), 400, 0, MixConfig(dataset="self_instruct", fraction=0.5), data_dir
        )
    bad = tmp_path / "general" / "self_instruct"
    bad.mkdir(parents=True)
    (bad / "seed_tasks.jsonl").write_text(json.dumps({"id": "t", "instruction": "x", "instances": []}) + "\n")
    with pytest.raises(DataError, match="row 0 has no 'instruction' with an 'output'"):
        general.load_instructions("self_instruct", tmp_path)


@pytest.mark.parametrize(
    "mix,message",
    [
        ({"dataset": "self_instruct", "fraction": 1.0}, "'data.mix.fraction': Input should be less than 1"),
        ({"dataset": "self_instruct", "fraction": -0.1}, "'data.mix.fraction': Input should be greater than"),
        ({"dataset": "no_such_set", "fraction": 0.25}, "unknown general dataset 'no_such_set'"),
    ],
)
def test_cli_refuses_bad_mix_with_one_line_exit_2(
    tiny_model_dir, tmp_path, write_config, capsys, data_dir, mix, message
):
    from tests.conftest import tiny_run_config

    raw = tiny_run_config(tiny_model_dir, data={"mix": mix, "data_dir": str(data_dir)})
    out = tmp_path / "out"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.slow
def test_run_with_mix_trains_on_the_stated_fraction(tiny_model_dir, tmp_path, write_config, data_dir):
    from tests.conftest import tiny_run_config

    raw = tiny_run_config(
        tiny_model_dir,
        data={
            "mix": {"dataset": "self_instruct", "fraction": 0.25},
            "data_dir": str(data_dir),
            "eval_size": 4,
            "drop_contaminated": False,  # so the math part comes from the whole synthetic pool
        },
        train={"min_steps": 1},
        eval={"base": False},
    )
    out = tmp_path / "out"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 32
    assert metrics["n_train_by_source"] == {"general/self_instruct": 8, "synthetic": 24}
    pool, instr = data.load("synthetic:train"), general.load_instructions("self_instruct", data_dir)
    expected = nested_subset(pool, 24, 0) + nested_subset(instr, 8, 0)
    assert metrics["fingerprint"]["train"] == data.fingerprint(expected)


def test_a_general_set_is_a_training_pool_by_itself(data_dir):
    pool = data.load("general:self_instruct", data_dir)
    assert len(pool) == 175 and {e.source for e in pool} == {"general/self_instruct"}
    with pytest.raises(DataError, match="unknown general dataset 'nope'"):
        data.load("general:nope", data_dir)


@pytest.mark.slow
def test_tradeoff_demo_script_runs_all_arms_on_the_tiny_model(
    tiny_model_dir, tmp_path, write_config, data_dir
):
    """scripts/tradeoff_demo.sh end to end (math, math+mix, general, merge; paired summary) at toy sizes."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / "experiments" / "tradeoff.yaml").read_text())
    raw["model"] = {"name": str(tiny_model_dir)}
    raw["lora"] = {"r": 4, "target_modules": ["q_proj", "v_proj"]}
    raw["data"].update(
        data_dir=str(data_dir), train_size=16, eval_size=4, prompt_format="plain", max_seq_len=256
    )
    raw["train"].update(batch_size=2, min_steps=1)
    raw["eval"].update(max_new_tokens=8, batch_size=8, general_size=3)
    env = {**dict(__import__("os").environ), "PYTHON": sys.executable, "CONFIG": str(write_config(raw))}
    out = tmp_path / "demo"
    done = subprocess.run(
        ["bash", "scripts/tradeoff_demo.sh", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.strip().splitlines()[-6:]
    assert [line.split()[0] for line in table] == [
        "base",
        "math",
        "math_mix",
        "math_plus",
        "general",
        "merged",
    ]
    assert "TOST" in table[1]  # general change is an equivalence test, with its flips
    mix = json.loads((out / "math_mix" / "metrics.json").read_text())
    assert mix["n_train_by_source"] == {"general/self_instruct": 4, "synthetic": 12}
    plus = json.loads((out / "math_plus" / "metrics.json").read_text())
    assert plus["n_train_by_source"] == {"general/self_instruct": 4, "synthetic": 16}  # general on top
    assert json.loads((out / "merged_adapter" / "merge.json").read_text())["method"] == "linear"
