"""Loaders, slices and subsets: real files from ../shared/data, the MathInstruct fixture, and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mathgpt import data
from mathgpt.cli import main
from mathgpt.config import EMBEDDED_MODEL, load_config
from mathgpt.data import DataError, Example
from mathgpt.datafiles import nested_subset
from tests.conftest import data_root, need_data

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "mathinstruct_sample.jsonl"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return need_data(data_root() / "gsm8k" / "test.jsonl").parents[1]


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("MATHGPT_DATA_DIR", raising=False)


def _rows(n: int, strata: list[tuple[str, int]] | None = None) -> list[Example]:
    out = []
    for i in range(n):
        subject, level = strata[i % len(strata)] if strata else (None, None)
        out.append(Example(f"x:{i}", f"q{i}", f"s{i}", str(i), "math" if strata else "gsm8k", level, subject))
    return out


# ------------------------------------------------------------------------------------------- real files

MATH500_COUNTS = {  # from shared/data/README.md: subject -> counts at levels 1..5
    "Algebra": [17, 21, 26, 30, 30],
    "Counting & Probability": [2, 7, 4, 13, 12],
    "Geometry": [2, 8, 8, 10, 13],
    "Intermediate Algebra": [7, 12, 19, 23, 36],
    "Number Theory": [5, 10, 16, 19, 12],
    "Prealgebra": [7, 19, 17, 20, 19],
    "Precalculus": [3, 13, 15, 13, 12],
}


@pytest.mark.parametrize(
    "name,rows",
    [("gsm8k:test", 1319), ("gsm8k:train", 7473), ("math500", 500), ("math:test", 5000), ("svamp", 1000)],
)
def test_real_files_load_with_official_counts_and_unique_ids(data_dir, name, rows):
    examples = data.load(name, data_dir)
    assert len(examples) == rows
    assert len({e.id for e in examples}) == rows
    assert all(e.question.strip() and e.solution.strip() and e.answer.strip() for e in examples)


def test_gsm8k_solution_drops_annotations_and_ends_with_the_answer(data_dir):
    examples = data.load("gsm8k:test", data_dir)
    assert examples[0].id == "gsm8k:test:0"
    assert examples[0].solution == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market.\nThe answer is 18."
    )
    assert all("<<" not in e.solution and "####" not in e.solution for e in examples)
    assert all(e.solution.endswith(f"\nThe answer is {e.answer}.") for e in examples)
    assert all(re.fullmatch(r"-?[\d.]+", e.answer) for e in examples)  # thousands separators removed
    raw = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()]
    with_commas = [i for i, r in enumerate(raw) if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_commas, "the test split has answers such as 1,000"
    assert all(
        examples[i].answer == raw[i]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        for i in with_commas
    )


def test_math500_subject_by_level_counts(data_dir):
    examples = data.load("math500", data_dir)
    counts = Counter((e.subject, e.level) for e in examples)
    got = {s: [counts[(s, lv)] for lv in range(1, 6)] for s in {e.subject for e in examples}}
    assert got == MATH500_COUNTS
    assert examples[0].id == "test/precalculus/807.json"
    assert all(e.grader == "math" for e in examples)


def test_full_math_gold_comes_from_the_last_boxed_and_agrees_with_math500(data_dir):
    full = data.load("math:test", data_dir)
    assert Counter(e.level for e in full) == {1: 437, 2: 894, 3: 1131, 4: 1214, 5: 1324}
    by_problem = {e.question.strip(): e for e in full}
    math500 = data.load("math500", data_dir)
    # MATH-500 has an `answer` field; the full test only has solutions: the two must agree on all 500.
    assert [by_problem[e.question.strip()].answer for e in math500] == [e.answer for e in math500]


def test_svamp_joins_body_and_question_and_uses_the_equation(data_dir):
    first = data.load("svamp", data_dir)[0]
    assert first == Example(
        "svamp:chal-1",
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?",
        "( 76.0 - 25.0 ) = 51\nThe answer is 51.",
        "51",
        "svamp",
    )
    assert not any(e.answer.endswith(".0") for e in data.load("svamp", data_dir))


def test_env_var_is_used_and_the_argument_wins(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MATHGPT_DATA_DIR", str(data_dir))
    assert len(data.load("gsm8k:test")) == 1319
    monkeypatch.setenv("MATHGPT_DATA_DIR", str(tmp_path / "nowhere"))
    assert len(data.load("gsm8k:test", data_dir)) == 1319
    with pytest.raises(DataError, match="MATHGPT_DATA_DIR"):
        data.load("gsm8k:test")


def test_cli_data_show_prints_counts_fields_and_examples(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MATHGPT_DATA_DIR", str(data_dir))
    assert main(["data", "show", "gsm8k:test", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "1319" in out and "native fields: question, answer" in out
    assert out.count("--- gsm8k:test:") == 2
    assert main(["data", "show", "math500", "--data-dir", str(data_dir), "-n", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Algebra\s+17\s+21\s+26\s+30\s+30\s+124", out)
    assert re.search(r"total\s+43\s+90\s+105\s+128\s+134\s+500", out)


def test_run_config_trains_on_local_gsm8k(data_dir, monkeypatch):
    cfg = load_config(REPO / "experiments" / "gsm8k_local.yaml")
    assert (cfg.data.train, cfg.data.eval, cfg.model.name) == ("gsm8k:train", ["gsm8k:test"], EMBEDDED_MODEL)
    monkeypatch.chdir(REPO)  # data_dir is relative to where `mathgpt run` starts
    need_data(REPO / cfg.data.data_dir)
    train = data.load(cfg.data.train, cfg.data.data_dir)
    evals = data.load(cfg.data.eval[0], cfg.data.data_dir)
    assert (len(train), len(evals)) == (7473, 1319)
    assert cfg.data.train_size <= len(train) and cfg.data.eval_size <= len(evals)


# ------------------------------------------------------------------------------------------ MathInstruct


@pytest.fixture
def instruct_dir(tmp_path) -> Path:
    (tmp_path / "mathinstruct").mkdir()
    shutil.copy(FIXTURE, tmp_path / "mathinstruct" / "sample.jsonl")
    return tmp_path


def test_mathinstruct_keeps_chain_of_thought_rows_only(instruct_dir):
    raw = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    examples = data.load("mathinstruct", instruct_dir)
    cot = [i for i, r in enumerate(raw) if "/CoT/" in r["source"]]
    assert [e.id for e in examples] == [f"mathinstruct:{i}" for i in cot]
    assert [e.solution for e in examples] == [raw[i]["output"] for i in cot]
    assert Counter(e.source for e in examples) == {
        "mathinstruct/gsm_rft": 2,
        "mathinstruct/aqua_rat": 1,
        "mathinstruct/MATH_train": 1,
        "mathinstruct/math50k_camel": 1,
        "mathinstruct/college_math": 1,
    }
    assert [e.answer for e in examples] == ["22", "C", "7", "80", "8", "3/8"]


def test_mathinstruct_source_filter_keeps_ids(instruct_dir):
    everything = {e.id: e for e in data.load("mathinstruct", instruct_dir)}
    picked = data.load("mathinstruct", instruct_dir, sources=["gsm_rft", "data/CoT/aqua_rat.json"])
    assert {e.source for e in picked} == {"mathinstruct/gsm_rft", "mathinstruct/aqua_rat"}
    assert all(everything[e.id] == e for e in picked)
    with pytest.raises(DataError, match=r"no chain-of-thought rows from \['mathqa'\]"):
        data.load("mathinstruct", instruct_dir, sources=["mathqa"])  # PoT only in the fixture


def test_mathinstruct_reads_parquet_and_json_arrays_alike(instruct_dir, tmp_path):
    import pandas as pd

    expected = data.load("mathinstruct", instruct_dir)
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for name, write in [
        ("a.parquet", lambda p: pd.DataFrame(rows).to_parquet(p)),
        ("MathInstruct.json", lambda p: p.write_text(json.dumps(rows))),
    ]:
        other = tmp_path / name.split(".")[-1]
        (other / "mathinstruct").mkdir(parents=True)
        write(other / "mathinstruct" / name)
        assert data.load("mathinstruct", other) == expected


@pytest.mark.parametrize(
    "source,pot",
    [
        ("data/CoT/gsm_rft.json", False),
        ("data/CoT/MATH_train.json", False),
        ("data/PoT/mathqa.json", True),
        ("data/PoT/MATH_train.json", True),
        ("data/numglue_pot.json", True),
        ("data/CoT/potential_energy.json", False),
    ],
)
def test_program_of_thought_markers(source, pot):
    assert data.is_program_of_thought(source) is pot


# ----------------------------------------------------------------------------------------- synthetic


def test_synthetic_names_call_the_generator():
    test = data.load("synthetic:test")
    assert len(test) == data.SYNTHETIC_POOL["test"] and {e.source for e in test} == {"synthetic"}
    assert data.load("synthetic")[:5] == data.load("synthetic:train")[:5]
    assert not {e.question for e in test} & {e.question for e in data.load("synthetic:train")}


# ---------------------------------------------------------------------------------- slices and subsets


def test_held_out_slice_is_seeded_and_in_dataset_order():
    rows = _rows(200)
    a = data.held_out_slice(rows, 50, seed=1)
    assert a == data.held_out_slice(rows, 50, seed=1)
    assert a != data.held_out_slice(rows, 50, seed=2)
    assert len(a) == 50 and len(set(a)) == 50
    assert [int(e.id[2:]) for e in a] == sorted(int(e.id[2:]) for e in a)
    assert data.held_out_slice(rows, 500, seed=1) == rows
    assert data.held_out_slice(rows, 0, seed=1) == []


def test_held_out_slice_stratifies_by_subject_and_level():
    # 120 rows in strata of 60 / 40 / 20: a 30-row slice must take 15 / 10 / 5, whatever the seed.
    strata = [("Algebra", 1)] * 3 + [("Geometry", 5)] * 2 + [("Algebra", 2)]
    rows = _rows(120, strata)
    for seed in range(5):
        got = Counter((e.subject, e.level) for e in data.held_out_slice(rows, 30, seed))
        assert got == {("Algebra", 1): 15, ("Geometry", 5): 10, ("Algebra", 2): 5}
    # The leftover row goes to the largest remainder: 8 of 120 -> 4 / 2.67 / 1.33 -> 4 / 3 / 1.
    got = Counter((e.subject, e.level) for e in data.held_out_slice(rows, 8, 0))
    assert got == {("Algebra", 1): 4, ("Geometry", 5): 3, ("Algebra", 2): 1}


def test_held_out_slice_of_math500_keeps_the_level_mix(data_dir):
    math500 = data.load("math500", data_dir)
    part = data.held_out_slice(math500, 100, seed=0)
    assert len(part) == 100
    full = Counter((e.subject, e.level) for e in math500)
    for key, k in Counter((e.subject, e.level) for e in part).items():
        assert abs(k - full[key] / 5) < 1


def test_nested_subset_is_a_prefix_of_the_larger_one():
    rows = _rows(100)
    for n in (1, 8, 25, 50):
        assert nested_subset(rows, n, seed=3) == nested_subset(rows, 2 * n, seed=3)[:n]
    assert nested_subset(rows, 10, seed=3) != nested_subset(rows, 10, seed=4)
    assert sorted(nested_subset(rows, 100, seed=3), key=lambda e: int(e.id[2:])) == rows
    with pytest.raises(DataError, match="cannot take 101 training examples from a pool of 100"):
        nested_subset(rows, 101, seed=3)


def test_fingerprint_depends_on_ids_not_order():
    rows = _rows(10)
    fp = data.fingerprint(rows)
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    assert data.fingerprint(rows[::-1]) == fp
    assert data.fingerprint(rows[:9]) != fp


@pytest.mark.parametrize(
    "text,boxed",
    [
        (r"so $\boxed{7}$.", "7"),
        (r"$\boxed{1}$ then $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}.$", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"answer $\fbox{12}$", "12"),
        (r"hence $\boxed 5$.", "5"),
        ("no box here", None),
        (r"broken \boxed{3", None),
    ],
)
def test_last_boxed(text, boxed):
    assert data.last_boxed(text) == boxed


# ------------------------------------------------------------------------------------------- bad input


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_missing_field_names_the_file_and_the_field(tmp_path):
    path = _write(tmp_path, "gsm8k/test.jsonl", json.dumps({"question": "q", "answer": "x\n#### 1"}) + "\n"
                  + json.dumps({"question": "q"}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row 1 has no field 'answer'$"):
        data.load("gsm8k:test", tmp_path)
    path = _write(
        tmp_path, "math/math500_test.jsonl", json.dumps({"problem": "p", "solution": "s", "level": 1})
    )
    with pytest.raises(DataError, match=r"row 0 has no field 'subject'"):
        data.load("math500", tmp_path)
    _write(
        tmp_path,
        "math/math500_test.jsonl",
        json.dumps({"problem": "p", "solution": "s", "level": 1, "type": "A"}),
    )
    with pytest.raises(DataError, match=r"no field 'answer' and no \\boxed"):
        data.load("math500", tmp_path)


@pytest.mark.parametrize(
    "rel,text,message",
    [
        (
            "gsm8k/test.jsonl",
            '{"question": "q", "answer": "no marker"}\n',
            r"row 0 'answer' has no '#### N' line",
        ),
        ("gsm8k/test.jsonl", '{"question": "q", "answer": "#### 1"}\n{oops\n', r"line 2 is not valid JSON"),
        ("gsm8k/test.jsonl", "\n", r"test.jsonl: no rows"),
        ("svamp/SVAMP.json", '{"ID": "a"}', r"SVAMP.json: expected a JSON array of rows"),
        ("svamp/SVAMP.json", '[{"ID": "a", "Body": "b"}]', r"row 0 has no field 'Question'"),
        ("svamp/SVAMP.json", "[1, 2]", r"row 0 is not a JSON object"),
        (
            "svamp/SVAMP.json",
            '[{"ID": "a", "Body": "b", "Question": "q", "Equation": "e", "Answer": "x"}]',
            r"row 0 'Answer' is not a number \(got 'x'\)",
        ),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, rel, text, message):
    _write(tmp_path, rel, text)
    name = {"gsm8k/test.jsonl": "gsm8k:test", "svamp/SVAMP.json": "svamp"}[rel]
    with pytest.raises(DataError, match=message) as err:
        data.load(name, tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_name_and_bad_data_dir(tmp_path, capsys):
    with pytest.raises(DataError, match="unknown dataset 'gsm8k'; known: gsm8k:train"):
        data.load("gsm8k", tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        data.load("gsm8k:test", tmp_path / "missing")
    assert main(["data", "show", "math", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mathgpt: error: unknown dataset 'math'") and err.count("\n") == 1


def test_hub_rows_go_through_the_same_converters(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        if repo == "openai/gsm8k":
            return datasets.Dataset.from_list(
                [{"question": "q", "answer": "2 * 617 = <<2*617=1234>>1234\n#### 1,234"}]
            )
        return datasets.Dataset.from_list(
            [{"problem": f"{config} p", "level": "Level 4", "type": "Algebra", "solution": "so $\\boxed{2}$"}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (gsm,) = data.load("gsm8k:train", tmp_path)  # tmp_path has no gsm8k/ folder: the Hub id is used
    assert calls == [("openai/gsm8k", "main", "train")]
    assert (gsm.id, gsm.solution, gsm.answer) == (
        "gsm8k:train:0",
        "2 * 617 = 1234\nThe answer is 1234.",
        "1234",
    )
    calls.clear()
    full = data.load("math:test")  # no data dir at all
    assert [c[1] for c in calls] == list(data.MATH_CONFIGS) and {c[2] for c in calls} == {"test"}
    assert [e.id for e in full] == [f"math:test:{i}" for i in range(7)]
    assert {(e.answer, e.level, e.subject) for e in full} == {("2", 4, "Algebra")}


def test_hub_fallback_offline_fails_fast_with_one_line(tmp_path):
    # A fresh process, so the offline switches are read when `datasets` is imported; an empty HF cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("MATHGPT_DATA_DIR", None)
    (tmp_path / "data").mkdir()
    cmd = [
        sys.executable,
        "-m",
        "mathgpt",
        "data",
        "show",
        "gsm8k:test",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "gsm8k:test" in done.stderr and "openai/gsm8k" in done.stderr and "MATHGPT_DATA_DIR" in done.stderr


# ------------------------------------------------------------------------------ module layout, math:train


def _module_level_imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # module level only: a function-level import does not make an import cycle
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_data_and_synthetic_do_not_import_each_other():
    data_imports = _module_level_imports(REPO / "mathgpt" / "data.py")
    synthetic_imports = _module_level_imports(REPO / "mathgpt" / "synthetic.py")
    assert "mathgpt.synthetic" not in data_imports and "mathgpt.data" not in synthetic_imports
    assert "mathgpt.example" in data_imports and "mathgpt.example" in synthetic_imports
    # A fresh interpreter can import synthetic first (the order that used to need data half-initialised).
    done = subprocess.run(
        [sys.executable, "-c", "import mathgpt.synthetic, mathgpt.data; print(mathgpt.data.Example)"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0 and "mathgpt.example.Example" in done.stdout, done.stderr


def test_math_train_is_a_chain_of_thought_pool_with_release_ids(data_dir):
    pool = data.load("math:train", data_dir)
    assert len(pool) == 7500 and len({e.id for e in pool}) == 7500
    assert pool[0].id == "train/algebra/0.json" and pool[0].answer == "0" and pool[0].level == 5
    assert all(e.source == "math" and e.grader == "math" and "\\boxed" in e.solution for e in pool)
    assert Counter(e.level for e in pool)[None] == 2  # the release's two "Level ?" rows
    assert "math:train" in data.NAMES


def test_math_train_contamination_check_finds_the_known_duplicate(data_dir):
    from mathgpt import contamination

    pool = data.load("math:train", data_dir)
    known = "train/geometry/6032.json"  # same problem text as math:test row 4656 (shared/data/README.md)
    full_test = data.load("math:test", data_dir)
    twin = next(e for e in full_test if e.id == "math:test:4656")
    assert twin.question.strip() == next(e for e in pool if e.id == known).question.strip()
    assert known in contamination.contaminated_ids(pool, full_test)
    # Against MATH-500 (the usual eval set) the 13-gram check flags 213 of 7,500 training rows (measured):
    # near-duplicate problems and solutions quoting a test problem's wording; a run drops them all.
    math500 = data.load("math500", data_dir)
    flagged = contamination.contaminated_ids(pool, math500)
    assert 150 < len(flagged) < 300 and known not in flagged
