"""The format-controlled baseline (issue 17): k-shot prompts, their examples, baseline runs in a study, the
strongest-baseline rule, and a "list" design (a study that is not a full grid)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState

import mathgpt.sweep as sw
from mathgpt.config import ConfigError, parse_config
from mathgpt.prompts import cut_invented_shot, format_prompt
from mathgpt.report import analysis as an
from mathgpt.report import write_report
from mathgpt.report.load import PairingError, load_study
from mathgpt.run import eval_slices, few_shot_examples, run_experiment
from mathgpt.stats import newcombe_gain
from mathgpt.sweep.spec import load_sweep
from tests import test_report as tr
from tests.conftest import tiny_run_config
from tests.test_sweep_study import fake_runs, write_study  # noqa: F401 - fake_runs is a fixture

SHOTS = [
    ("What is 1 + 1?", "1 + 1 = 2.\nThe answer is 2."),
    ("What is 2 * 3?", "2 * 3 = 6.\nThe answer is 6."),
]


# ------------------------------------------------------------------------------------------- prompts


def test_plain_k_shot_prompt_shows_solved_examples_then_the_question() -> None:
    got = format_prompt("What is 4 - 1?", "plain", shots=SHOTS)
    assert got == (
        "Question: What is 1 + 1?\nAnswer: 1 + 1 = 2.\nThe answer is 2.\n\n"
        "Question: What is 2 * 3?\nAnswer: 2 * 3 = 6.\nThe answer is 6.\n\n"
        "Question: What is 4 - 1?\nAnswer: "
    )
    assert (
        format_prompt("What is 4 - 1?", "plain") == "Question: What is 4 - 1?\nAnswer: "
    )  # zero-shot unchanged


def test_chat_k_shot_prompt_is_earlier_turns(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    got = format_prompt("What is 4 - 1?", "chat", tok, shots=SHOTS[:1])
    assert got == (
        "<|system|>\n\n<|user|>\nWhat is 1 + 1?\n<|assistant|>\n1 + 1 = 2.\nThe answer is 2.\n"
        "<|user|>\nWhat is 4 - 1?\n<|assistant|>\n"
    )


def test_an_invented_next_example_is_cut_off() -> None:
    text = "4 - 1 = 3.\nThe answer is 3.\n\nQuestion: What is 9 + 9?\nAnswer: The answer is 18."
    assert cut_invented_shot(text, "plain") == ("4 - 1 = 3.\nThe answer is 3.", True)
    assert cut_invented_shot("The answer is 3.", "plain") == ("The answer is 3.", False)


# ------------------------------------------------------------------------------------------- the k examples


def test_few_shot_examples_are_fixed_by_the_eval_seed_and_never_an_evaluation_problem(tmp_path) -> None:
    raw = tiny_run_config(tmp_path, data={"eval_size": 30, "select_size": 20}, eval={"few_shot": 5})
    cfg = parse_config(raw)
    report, select = eval_slices(cfg)
    held = [ex for s in report + select for ex in s.examples]
    shots = few_shot_examples(cfg, held)
    assert len(shots) == 5 and len({ex.id for ex in shots}) == 5
    assert not {ex.id for ex in shots} & {ex.id for ex in held}
    assert not {ex.question for ex in shots} & {ex.question for ex in held}
    assert all(ex.id.startswith("synthetic:train") and ex.solution for ex in shots)
    # the training seed never moves them (every trial's baseline shows the same); the eval seed does
    other_seed = parse_config(raw | {"seed": 5})
    assert [ex.id for ex in few_shot_examples(other_seed, held)] == [ex.id for ex in shots]
    moved = parse_config(
        tiny_run_config(tmp_path, data={"eval_size": 30, "eval_seed": 3}, eval={"few_shot": 5})
    )
    rep3, sel3 = eval_slices(moved)
    assert [ex.id for ex in few_shot_examples(moved, [e for s in rep3 + sel3 for e in s.examples])] != [
        ex.id for ex in shots
    ]


def test_a_base_run_with_few_shot_records_what_it_was_asked(tiny_model_dir, tmp_path) -> None:
    raw = tiny_run_config(
        tiny_model_dir, train={"epochs": 0}, data={"train_size": 0}, eval={"few_shot": 2, "max_new_tokens": 6}
    )
    run_experiment(parse_config(raw), tmp_path / "run")
    line = json.loads((tmp_path / "run" / "epochs.jsonl").read_text().splitlines()[0])
    assert line["prompt"]["few_shot"] == 2 and line["prompt"]["max_new_tokens"] == 6
    assert line["prompt"]["format"] == "plain" and len(line["prompt"]["shot_ids"]) == 2
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["eval"]["few_shot"] == 2  # the config next to the run is the one that ran


# ------------------------------------------------------------------------------------------- the study


def test_each_baseline_runs_once_per_model_with_its_prompt_and_cap(tmp_path, fake_runs) -> None:  # noqa: F811
    baselines = [{"name": "fs", "few_shot": 3, "max_new_tokens": 40}]
    study = sw.run_sweep(
        write_study(tmp_path, baselines=baselines), output_dir=tmp_path / "runs", report=False
    )
    stored = study.user_attrs["baselines"]
    assert set(stored) == {"/fake/a", "/fake/b"} and all(set(v) == {"fs"} for v in stored.values())
    assert Path(stored["/fake/a"]["fs"]["dir"]).name == "base-a-fs"
    cfg = yaml.safe_load((tmp_path / "runs" / "s" / "base-a-fs" / "cfg.yaml").read_text())
    assert (
        cfg["eval"]["few_shot"] == 3 and cfg["eval"]["max_new_tokens"] == 40 and cfg["train"]["epochs"] == 0
    )
    main = yaml.safe_load((tmp_path / "runs" / "s" / "base-a" / "cfg.yaml").read_text())
    assert main["eval"].get("few_shot", 0) == 0  # the study's own base keeps the trials' prompt
    again = sw.run_sweep(
        write_study(tmp_path, baselines=baselines), output_dir=tmp_path / "runs", report=False
    )
    assert again.user_attrs["baselines"] == stored  # a rerun evaluates nothing twice


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"baselines": [{"name": "base"}]}, "not 'base'"),
        ({"baselines": [{"name": "x"}, {"name": "x"}]}, "must be unique"),
        ({"report": {"baseline": "nope"}}, "report.baseline 'nope'"),
        ({"trials": [{"model": "/fake/a"}]}, "for sampler type 'list'"),
    ],
)
def test_bad_baselines_or_design_is_one_line(tmp_path, fields, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_sweep(write_study(tmp_path, **fields))
    assert "\n" not in str(err.value)


def test_a_list_design_runs_exactly_its_points_with_their_own_keys(tmp_path, fake_runs) -> None:  # noqa: F811
    trials = [
        {"model": "/fake/a"},
        {"model": "/fake/b", "seed": [1], "overrides": {"lora.dropout": 0.1}},
    ]
    path = write_study(tmp_path, [0, 1], sampler={"type": "list"}, trials=trials)
    study = sw.run_sweep(path, output_dir=tmp_path / "runs", report=False)
    done = sorted(
        (t.params["model"], t.params["seed"]) for t in study.trials if t.state == TrialState.COMPLETE
    )
    assert done == [("/fake/a", 0), ("/fake/a", 1), ("/fake/b", 1)]
    for t in study.trials:
        cfg = yaml.safe_load((Path(t.user_attrs["trial_dir"]) / "cfg.yaml").read_text())
        assert cfg["lora"].get("dropout", 0.0) == (0.1 if t.params["model"] == "/fake/b" else 0.0)


def test_a_list_design_point_must_be_a_valid_run(tmp_path) -> None:
    trials = [{"model": "/fake/a", "overrides": {"eval.at_examples": [4, 100]}}]
    with pytest.raises(ConfigError, match=r"trials\[0\]: .*more than data.train_size"):
        load_sweep(write_study(tmp_path, sampler={"type": "list"}, trials=trials))


# ------------------------------------------------------------------------------------------- the report


def with_baseline(study, correct: list[int], select: float, truncated: int = 0, rule: str | None = None):
    """Add a few-shot baseline to the report tests' study (trials and base as there)."""
    bp = tr.base_point() | {"correct": correct, "n_correct": sum(correct), "accuracy": sum(correct) / tr.N}
    bp |= {"select": tr.records.select([1] * 50 + [0] * 50, accuracy=select), "n_truncated": truncated}
    bp |= {"prompt": {"format": "plain", "few_shot": 4, "shot_ids": ["t1"], "max_new_tokens": 256}}
    bp["dir"] = "/runs/s/base-tiny-few_shot"
    study.set_user_attr("baselines", {"tiny": {"few_shot": bp}})
    base = study.user_attrs["bases"]["tiny"] | {"select": tr.records.select([0] * 100, accuracy=0.1)}
    study.set_user_attr("bases", {"tiny": base})
    if rule is not None:
        cfg = study.user_attrs["sweep_config"]
        study.set_user_attr("sweep_config", cfg | {"report": cfg["report"] | {"baseline": rule}})
    return study


def stronger() -> list[int]:
    """The base's verdicts plus 10 more right: a baseline 6.25 points above the zero-shot base."""
    out = list(tr.BASE)
    for i in [i for i in range(tr.N) if not tr.BASE[i]][:10]:
        out[i] = 1
    return out


def test_gains_are_measured_against_the_strongest_baseline_by_selection_slice() -> None:
    data = load_study(with_baseline(tr.make_study(), stronger(), select=0.3))
    assert data.baseline_rule == "strongest"
    assert np.array_equal(an.base_vector(data, "tiny"), np.asarray(stronger(), dtype=float))
    chosen = data.baselines[data.baselines["chosen"]]
    assert chosen["baseline"].tolist() == ["few_shot"]
    # problems.csv holds both baselines' verdicts, then the fine-tuned points
    rows = data.matrix[data.matrix["trial"].isna()]
    assert sorted(rows["baseline"].unique()) == ["base", "few_shot"] and len(rows) == 2 * tr.N
    # weaker on the selection slice: the zero-shot base stays, whatever the report slice says
    weak = load_study(with_baseline(tr.make_study(), stronger(), select=0.05))
    assert np.array_equal(an.base_vector(weak, "tiny"), np.asarray(tr.BASE, dtype=float))
    named = load_study(with_baseline(tr.make_study(), stronger(), select=0.3, rule="base"))
    assert np.array_equal(an.base_vector(named, "tiny"), np.asarray(tr.BASE, dtype=float))


def test_a_selection_tie_goes_to_the_baseline_that_is_harder_to_beat() -> None:
    data = load_study(with_baseline(tr.make_study(), stronger(), select=0.1))  # ties the base's 0.1
    assert data.baselines.loc[data.baselines["chosen"], "baseline"].tolist() == ["few_shot"]


def test_a_named_baseline_that_did_not_run_is_refused() -> None:
    study = with_baseline(tr.make_study(), stronger(), select=0.3, rule="zero_shot_long")
    with pytest.raises(PairingError, match="report.baseline 'zero_shot_long'"):
        load_study(study)


def test_every_baseline_gets_its_paired_gain_and_the_format_neutral_line(tmp_path) -> None:
    study = with_baseline(tr.make_study(), stronger(), select=0.3, truncated=20)
    out = write_report(study, tmp_path)
    data = load_study(study)
    mask = an.benchmarks(data)["synthetic:test"]
    gains = an.baseline_gains(data, "tiny", mask)
    assert (
        set(gains["baseline"]) == {"base", "few_shot"}
        and gains["chosen"].sum() == gains["train_examples"].nunique()
    )
    pts = an.arms(data, "tiny")[128]
    mat = an.arm_matrix(pts)[:, mask]
    for name, vec in (("base", tr.BASE), ("few_shot", stronger())):
        row = gains[(gains["baseline"] == name) & (gains["train_examples"] == 128)].iloc[0]
        hand = newcombe_gain(np.asarray(vec, dtype=float)[mask], mat, 0.05)  # 2 seeds: Newcombe
        assert row["gain"] == pytest.approx(hand.mean) and row["lo"] == pytest.approx(hand.lo)
    # format-neutral: only the problems the chosen baseline answered (the test points' first N - 10)
    ag = an.answered_gain(data, "tiny", mask, 128)
    keep = mask & (np.arange(tr.N) < tr.N - 10)
    hand = newcombe_gain(np.asarray(stronger(), dtype=float)[keep], an.arm_matrix(pts)[:, keep], 0.05)
    assert ag.n == int(keep.sum()) and ag.gain.mean == pytest.approx(hand.mean)
    md = (out / "report.md").read_text()
    screen = next(line for line in md.splitlines() if line.startswith("> **"))
    assert (
        "measured against the strongest baseline by selection-slice accuracy, 'few_shot' (4-shot, cap 256"
        in screen
    )
    assert f"on the {ag.n} of {int(mask.sum())} problems the baseline answered" in screen
    assert "its cap truncates 12.5% of its answers" in screen  # 20 of 160 > 5%
    assert "## Gains against each baseline" in md and "few_shot (chosen)" in md
