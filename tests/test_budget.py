"""The dry run's wall time: the arithmetic against hand computations, the recorded-answer lengths it reads, and
the probe end to end on the tiny model (`mathgpt run --dry-run`, `mathgpt sweep --dry-run`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig

from mathgpt import budget
from mathgpt.cli import main
from mathgpt.config import parse_config
from mathgpt.run import finetuned_points
from tests.conftest import tiny_run_config


def test_padded_tokens_pads_each_batch_to_its_longest_row():
    lengths = [3, 9, 4, 7, 5]
    # as listed: [3, 9] -> 2 x 9, [4, 7] -> 2 x 7, [5] -> 5
    assert budget.padded_tokens(lengths, 2, "sequential") == 18 + 14 + 5
    # sorted: [3, 4] -> 2 x 4, [5, 7] -> 2 x 7, [9] -> 9
    assert budget.padded_tokens(lengths, 2, "grouped") == 8 + 14 + 9


def test_wall_time_matches_a_hand_computation():
    wt = budget.wall_time(
        train_padded_tokens=2048,
        epochs=2,
        train_tok_per_s=512.0,
        points={"base": 1, "finetuned": 3},
        n_problems=100,
        prompt_tokens=6000,
        tokens_per_answer={"base": 128.0, "finetuned": 64.0},
        slots=50,
        decode_step_s={"base": 0.2, "finetuned": 0.25},
        prefill_tok_per_s=1000.0,
        load_s=3.0,
    )
    assert wt.train_s == pytest.approx(2048 * 2 / 512)  # 8 s
    # base: 6000 prompt tokens / 1000 tok/s = 6 s prefill; 100 x 128 / 50 = 256 steps x 0.2 s = 51.2 s
    assert wt.eval_point_s["base"] == pytest.approx(6 + 51.2)
    # fine-tuned: 6 s + 100 x 64 / 50 = 128 steps x 0.25 s = 32 s, three points
    assert wt.eval_point_s["finetuned"] == pytest.approx(38.0)
    assert wt.eval_s == pytest.approx(57.2 + 3 * 38.0)
    assert wt.total_s == pytest.approx(8 + 171.2 + 3)


def test_wall_time_of_a_base_only_run_has_no_training_and_needs_no_training_rate():
    wt = budget.wall_time(
        train_padded_tokens=0, epochs=0, train_tok_per_s=None, points={"base": 1, "finetuned": 0},
        n_problems=10, prompt_tokens=500, tokens_per_answer={"base": 20.0, "finetuned": 20.0}, slots=10,
        decode_step_s={"base": 0.1}, prefill_tok_per_s=250.0, load_s=1.0,
    )  # fmt: skip
    assert wt.train_s == 0 and wt.eval_point_s == {"base": pytest.approx(2 + 20 * 0.1)}
    with pytest.raises(ValueError, match="training rate"):
        budget.wall_time(
            train_padded_tokens=100, epochs=1, train_tok_per_s=None, points={}, n_problems=1,
            prompt_tokens=1, tokens_per_answer={}, slots=1, decode_step_s={}, prefill_tok_per_s=1.0, load_s=0.0,
        )  # fmt: skip


def test_probe_batches_follow_the_run_order():
    rows = [{"input_ids": [0] * n, "n_prompt": 1} for n in [5, 1, 4, 2, 3, 8, 7, 6]]
    seq = budget.probe_batches(rows, 2, "sequential", steps=1)
    assert [[len(r["input_ids"]) for r in b] for b in seq] == [[5, 1], [4, 2]]
    grouped = budget.probe_batches(rows, 2, "grouped", steps=1)  # the shortest and the longest sorted batch
    assert [[len(r["input_ids"]) for r in b] for b in grouped] == [[1, 2], [7, 8]]


@pytest.mark.parametrize(
    "train, ev, n_train, expected",
    [
        ({"epochs": 3}, {}, 64, 3),
        ({"epochs": 3}, {"every_epoch": False}, 64, 1),
        ({"epochs": 0}, {}, 64, 0),
        # at_examples 16, 32 at batch 4: steps 4 and 8; the epoch ends at step 16, a third point
        (
            {"batch_size": 4, "order": "sequential", "lr_scheduler": "constant"},
            {"at_examples": [16, 32]},
            64,
            3,
        ),
        # the last count is the whole set: the epoch's end is the same step, one point
        (
            {"batch_size": 4, "order": "sequential", "lr_scheduler": "constant"},
            {"at_examples": [16, 64]},
            64,
            2,
        ),
    ],
)
def test_finetuned_points_count_the_scheduled_evaluations(train, ev, n_train, expected):
    cfg = parse_config({"data": {"train_size": n_train}, "train": train, "eval": ev})
    assert finetuned_points(cfg, n_train) == expected


def write_run(folder: Path, model: str, cap: int, rows: list[tuple[str, int]]) -> None:
    folder.mkdir(parents=True)
    cfg = {"model": {"name": model}, "eval": {"max_new_tokens": cap}}
    (folder / "config.yaml").write_text("# machine: x\n" + yaml.safe_dump(cfg))
    lines = [json.dumps({"model": kind, "n_tokens": n, "id": str(i)}) for i, (kind, n) in enumerate(rows)]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_recorded_tokens_per_answer_keeps_only_this_model_at_this_cap(tmp_path):
    write_run(tmp_path / "base", "m", 64, [("base", 64), ("base", 32)])
    write_run(tmp_path / "t0", "m", 64, [("finetuned", 10), ("finetuned", 20), ("finetuned", 60)])
    write_run(tmp_path / "other_cap", "m", 128, [("finetuned", 128)])
    write_run(tmp_path / "other_model", "n", 64, [("base", 1)])
    got = budget.recorded_tokens_per_answer(tmp_path, "m", 64)
    assert got == {"base": (48.0, 2), "finetuned": (30.0, 3)}
    assert budget.recorded_tokens_per_answer(tmp_path / "missing", "m", 64) == {}


def minutes_or_seconds(text: str) -> float:
    value, unit = re.fullmatch(r"~([\d.]+) (s|min|h)", text).groups()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def test_dry_run_prints_a_probed_wall_time_on_the_tiny_model(tiny_model_dir, write_config, tmp_path, capsys):
    cfg = write_config(tiny_run_config(tiny_model_dir))
    assert main(["run", str(cfg), "--dry-run", "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    wall = re.search(r"^wall time +(~\S+ \S+) on .+ \(training (~\S+ \S+), evaluation (~\S+ \S+),", out, re.M)
    assert wall, out
    assert "32 examples x 1 epoch:" in out and "padded tok/s probed" in out
    # tiny_run_config: 8 report problems, base point + one fine-tuned point, 8 tokens each (the cap)
    assert re.search(r"1 base model point x 8 problems .*<= 8 tokens each \(the cap", out), out
    assert re.search(r"1 fine-tuned point x 8 problems", out), out
    # eval.dtype auto: bf16 decoding where this CPU has native bf16, else fp32; the line says which ran
    decoding = re.search(r"decoding auto -> (float32|bfloat16) on cpu$", out, re.M)
    assert decoding, out
    # the tiny model's slot cache: 2 x layers x slots x kv heads x (longest prompt + cap) x head dim x bytes
    cache = re.search(
        r"slot cache +(\S+ \S+) of keys and values: 8 slots x (\d+) columns \(longest prompt \+ cap\)", out
    )
    assert cache, out
    c = AutoConfig.from_pretrained(tiny_model_dir)
    kv_bytes = (
        2
        * c.num_hidden_layers
        * 8
        * c.num_key_value_heads
        * int(cache[2])
        * (c.hidden_size // c.num_attention_heads)
        * {"float32": 4, "bfloat16": 2}[decoding[1]]
    )
    assert cache[1] == budget.fmt_bytes(kv_bytes)

    assert re.search(
        r"probe +\d+ s \(load \d+ s; 3 training steps of 2 rows, decoding steps of 8 slots at \d+ columns: "
        r"3 base, 3 with the adapter; one prefill of 8 prompts",
        out,
    )
    assert not (tmp_path / "out").exists()  # a dry run writes nothing

    assert main(["run", str(cfg), "--dry-run", "--no-probe"]) == 0
    quick = capsys.readouterr().out
    assert "peak memory" in quick and "wall time" not in quick


def test_fmt_bytes_takes_the_largest_unit_under_1024():
    assert [budget.fmt_bytes(n) for n in (512, 1536, 5 * 2**20, 7.7 * 2**30)] == [
        "512 B", "1.5 KiB", "5.0 MiB", "7.7 GiB",
    ]  # fmt: skip


def test_dry_run_uses_recorded_answer_lengths_of_the_same_model(
    tiny_model_dir, write_config, tmp_path, capsys
):
    raw = tiny_run_config(tiny_model_dir)
    out_dir = tmp_path / "out"
    write_run(out_dir, str(tiny_model_dir), 8, [("base", 8), ("base", 6), ("finetuned", 3), ("finetuned", 5)])
    assert main(["run", str(write_config(raw)), "--dry-run", "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "7 tokens each (mean of 2 recorded answers" in out, out
    assert "4 tokens each (mean of 2 recorded answers" in out, out


def test_sweep_dry_run_sums_its_runs_with_one_probe(tiny_model_dir, tmp_path, capsys, monkeypatch):
    run = tiny_run_config(tiny_model_dir, train={"epochs": 1, "batch_size": 2, "min_steps": 4})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(run))
    spec = {
        "study": "dry",
        "base_config": "base.yaml",
        "sampler": {"type": "grid"},
        "timeout_s": 600,
        "seeds": [0, 1],
        "params": {"size": {"key": "data.train_size", "type": "categorical", "choices": [16, 32]}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    calls = []
    real_probe = budget.probe
    monkeypatch.setattr(budget, "probe", lambda *a, **k: calls.append(a) or real_probe(*a, **k))
    assert main(["sweep", str(path), "--dry-run", "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "1 base run(s) + 4 trial(s) (grid sampler)" in out
    assert len(calls) == 1  # sizes and seeds change nothing the probe times; the base reuses its base timing
    totals = [minutes_or_seconds(m) for m in re.findall(r"^  wall time +(~\S+ \S+) on", out, re.M)]
    assert len(totals) == 5
    study = re.search(r"^study total +(~\S+ \S+) for 5 runs", out, re.M)
    assert study, out
    # each run's total is rounded for print: the sum of the printed ones is within their rounding of it
    assert minutes_or_seconds(study.group(1)) == pytest.approx(sum(totals), abs=0.5 * 5 + 1)
    assert not (tmp_path / "runs").exists()  # no study, no journal, no run folder

    assert main(["sweep", str(path), "--dry-run", "--no-probe"]) == 0
    listed = capsys.readouterr().out
    assert "trial 3 size=32 seed=1" in listed and "wall time" not in listed


def test_static_batches_run_every_batch_to_the_cap():
    """A sliding-window model past its window decodes in static batches: ceil(n / slots) batches of cap steps,
    whatever the recorded answer lengths."""
    kw = dict(
        train_padded_tokens=0, epochs=0, train_tok_per_s=None, points={"base": 1}, n_problems=130,
        prompt_tokens=0, tokens_per_answer={"base": 40.0}, slots=50, decode_step_s={"base": 0.5},
        prefill_tok_per_s=1.0, load_s=0.0,
    )  # fmt: skip
    assert budget.wall_time(**kw).eval_point_s["base"] == pytest.approx(130 * 40 / 50 * 0.5)
    assert budget.wall_time(**kw, static_cap=256).eval_point_s["base"] == pytest.approx(3 * 256 * 0.5)
