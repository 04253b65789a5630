"""The single-experiment path on the tiny random Mistral: files, contracts, training behaviour, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mathgpt.cli import main
from mathgpt.config import parse_config
from mathgpt.data import Example
from mathgpt.train import IGNORE, LeftPadCollator, tokenize
from tests.conftest import REPO, tiny_run_config

POINT_KEYS = {
    "point", "epoch", "train_examples", "optimizer_steps", "train_tokens", "train_wall_s", "eval_wall_s", "loss",
    "accuracy", "ci95", "n_eval", "n_correct", "strict_accuracy", "n_answered", "n_truncated", "n_no_answer",
    "n_ungradable", "ids", "correct", "answered", "status", "fingerprint", "by_set", "select", "general",
    "checker_version", "gen", "knobs", "machine", "prompt",
}  # fmt: skip


def test_run_writes_the_output_contract(tiny_model_dir, tmp_path, write_config, capsys):
    cfg = write_config(tiny_run_config(tiny_model_dir, train={"epochs": 2}, data={"select_size": 4}))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--output-dir", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "ci95", "n_answered", "n_truncated", "n_no_answer", "n_ungradable"):
        assert key in metrics["base"] and key in metrics["finetuned"]
    lo, hi = metrics["finetuned"]["ci95"]
    assert 0 <= lo <= metrics["finetuned"]["accuracy"] <= hi <= 1
    assert metrics["n_eval"] == 8 and metrics["n_train"] == 32 and metrics["epochs"] == 2
    assert metrics["batch_size"] == 2 and metrics["n_train_by_source"] == {"synthetic": 32}
    for key in ("train_tokens_per_s", "train_tokens", "wall_s"):
        assert metrics[key] > 0
    assert 100 < metrics["peak_rss_mb"] < 64 * 1024  # MiB: torch alone is a few hundred
    assert set(metrics["fingerprint"]) == {"train", "eval", "select"}
    assert metrics["fingerprint"]["select"] != metrics["fingerprint"]["eval"]

    epochs = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert all(set(e) == POINT_KEYS for e in epochs)
    assert [e["point"] for e in epochs] == [0, 1, 2] and [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [e["train_examples"] for e in epochs] == [0, 32, 64]
    assert [e["optimizer_steps"] for e in epochs] == [0, 16, 32]
    assert epochs[2]["train_tokens"] == 2 * epochs[1]["train_tokens"] > 0  # real tokens, padding excluded
    assert epochs[0]["loss"] is None and epochs[1]["loss"] > 0 and epochs[2]["loss"] > 0
    assert all(len(e["correct"]) == len(e["ids"]) == len(e["status"]) == 8 for e in epochs)
    assert all(
        e["select"]["n_eval"] == len(e["select"]["correct"]) == len(e["select"]["ids"]) == 4 for e in epochs
    )
    assert epochs[1]["knobs"]["lora_r"] == 4 and epochs[1]["knobs"]["train_size"] == 32
    assert epochs[1]["select"]["fingerprint"] == metrics["fingerprint"]["select"]
    assert [p["point"] for p in metrics["points"]] == [0, 1, 2] and "ids" not in metrics["points"][0]

    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 * (8 + 4)  # every point, both slices
    assert {p["model"] for p in preds} == {"base", "finetuned"}
    assert {p["slice"] for p in preds} == {"report", "select"}
    assert {
        "id",
        "point",
        "train_examples",
        "question",
        "gold",
        "output",
        "extracted",
        "correct",
        "steps",
    } <= set(preds[0])
    assert (out / "adapter" / "adapter_config.json").is_file()
    ran = parse_config(__import__("yaml").safe_load((out / "config.yaml").read_text()))
    assert ran.train.epochs == 2 and ran.train.batch_size == 2
    assert "fine-tuned" in capsys.readouterr().out


def test_slices_use_eval_seed_only_and_are_disjoint(tiny_model_dir):
    from mathgpt.run import eval_slices

    def slices(**data):
        raw = tiny_run_config(tiny_model_dir, data={"eval_size": 20, "select_size": 10, **data})
        return eval_slices(parse_config(raw))

    rep, sel = slices()
    rep_ids, sel_ids = {e.id for e in rep[0].examples}, {e.id for e in sel[0].examples}
    assert len(rep_ids) == 20 and len(sel_ids) == 10 and not rep_ids & sel_ids
    for_seed_7 = eval_slices(
        parse_config({**tiny_run_config(tiny_model_dir, data={"eval_size": 20}), "seed": 7})
    )
    assert [e.id for e in for_seed_7[0][0].examples] == [e.id for e in rep[0].examples]  # seed trains only
    other, _ = slices(eval_seed=1)
    assert {e.id for e in other[0].examples} != rep_ids


def test_training_changes_only_lora_weights_and_lowers_loss(tiny_model_dir, tmp_path):
    from mathgpt.config import TrainConfig
    from mathgpt.model import add_lora, load_model, load_tokenizer
    from mathgpt.run import trainer_settings
    from mathgpt.synthetic import make_problems
    from mathgpt.train import train, training_args

    tok = load_tokenizer(str(tiny_model_dir))
    model = add_lora(load_model(str(tiny_model_dir), device="cpu"), r=4, alpha=8.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = tokenize(make_problems("train", 16), tok, "plain", 256)
    losses = []
    args = training_args(
        out_dir=tmp_path,
        seed=0,
        device="cpu",
        dtype="float32",
        **trainer_settings(
            TrainConfig(epochs=3, learning_rate=5e-3, batch_size=4, lr_scheduler="constant", logging_steps=1)
        ),
    )
    train(
        model,
        tok,
        rows,
        args,
        on_log=lambda logs, step, seen: losses.append(logs["loss"]) if "loss" in logs else None,
    )
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_labels_mask_the_prompt_and_keep_eos(tiny_model_dir):
    from mathgpt.model import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    assert tok.pad_token_id == tok.eos_token_id  # the situation that makes hand-built masks necessary
    exs = [
        Example("a", "What is 1+1?", "1 + 1 = 2\nThe answer is 2.", "2", "synthetic"),
        Example("b", "Long question " * 5, "4.\nThe answer is 4.", "4", "synthetic"),
    ]
    rows = tokenize(exs, tok, "plain", 256)
    batch = LeftPadCollator(tok.pad_token_id)(rows)
    for i, r in enumerate(rows):
        labels = batch["labels"][i][batch["labels"][i] != IGNORE].tolist()
        assert labels == r["input_ids"][r["n_prompt"] :]
        assert labels[-1] == tok.eos_token_id
        assert tok.decode(labels[:-1]) == exs[i].solution
    # left padding: every row ends at the last column, positions restart at 0 after the padding
    assert batch["attention_mask"][:, -1].all()
    assert batch["position_ids"][1, -1] == len(rows[1]["input_ids"]) - 1


def test_target_only_logits_give_the_full_loss(tiny_model_dir):
    """The loss computed from logits at target positions equals transformers' own loss on the full logits."""
    from mathgpt.model import add_lora, load_model, load_tokenizer
    from mathgpt.synthetic import make_problems
    from mathgpt.train import completion_loss

    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), device="cpu")
    batch = LeftPadCollator(tok.pad_token_id)(tokenize(make_problems("train", 4), tok, "plain", 256))
    n = (batch["labels"] != IGNORE).sum()
    reference = model(**batch).loss
    assert torch.allclose(completion_loss(model, dict(batch)) / n, reference, atol=1e-5)
    peft_model = add_lora(model, r=4, alpha=8.0)
    assert torch.allclose(completion_loss(peft_model, dict(batch)) / n, peft_model(**batch).loss, atol=1e-5)


def test_epochs_zero_evaluates_the_base_only(tiny_model_dir, tmp_path, write_config):
    cfg = write_config(tiny_run_config(tiny_model_dir, train={"epochs": 0}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    base = metrics["base"]
    assert metrics["finetuned"] is None and [p["point"] for p in metrics["points"]] == [0]
    assert base["accuracy"] == base["n_correct"] / metrics["n_eval"] == metrics["points"][0]["accuracy"]
    assert not (tmp_path / "o" / "adapter").exists()


def test_too_few_steps_is_refused_not_rebatched(tiny_model_dir, tmp_path, write_config, capsys):
    cfg = write_config(
        tiny_run_config(tiny_model_dir, train={"batch_size": 8, "min_steps": 8}, eval={"base": False})
    )
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "4 optimizer steps per epoch, fewer than train.min_steps 8" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lora": {"rank": 8}}, "unknown key 'lora.rank'"),
        ({"train": {"learning_rate": -1}}, "'train.learning_rate'"),
        ({"model": {"dtype": "int3"}}, "'model.dtype'"),
        ({"model": {"dtype": "bfloat16", "device": "cpu"}}, "needs a CUDA GPU"),
        ({"model": {"quantization": "nf4", "device": "cpu"}}, "needs a CUDA GPU"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(
    tiny_model_dir, tmp_path, write_config, capsys, change, message
):
    cfg = write_config(tiny_run_config(tiny_model_dir, **change))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_and_broken_config_files(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    assert main(["run", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_dry_run_sizes_mistral_7b_without_weights_or_network():
    proc = subprocess.run(
        [sys.executable, "-m", "mathgpt", "run", "experiments/mistral7b_lora.yaml", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    # Mistral-7B has 7.24B parameters; LoRA r=16 on all 7 projections of 32 layers adds 41.9M.
    assert "7,241,732,096 total" in proc.stdout
    assert "41,943,040 trainable" in proc.stdout
    assert "peak memory" in proc.stdout


def test_qlora_config_builds_nf4_quantization():
    from mathgpt.config import load_config
    from mathgpt.model import quantization_config

    cfg = load_config(REPO / "experiments" / "mistral7b_qlora.yaml")
    q = quantization_config(cfg.model.quantization, cfg.model.dtype)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.slow
def test_smollm2_reduced_default_run_end_to_end(tmp_path, write_config, monkeypatch):
    """The embedded model through the whole path: GGUF -> safetensors cache -> LoRA -> evaluation."""
    from mathgpt.config import read_yaml, set_dotted

    raw = read_yaml(REPO / "experiments" / "cpu_smollm2.yaml")
    for key, value in {
        "data.train_size": 32,
        "data.eval_size": 16,
        "train.batch_size": 2,
        "eval.max_new_tokens": 96,
        "tracking.mode": "offline",
    }.items():
        raw = set_dotted(raw, key, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "smol"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 32 and metrics["n_eval"] == 16
    tuned = metrics["finetuned"]
    assert tuned["accuracy"] == tuned["n_correct"] / 16 == metrics["points"][-1]["accuracy"]
    assert metrics["train_tokens_per_s"] > 0
    assert list((out / "wandb").glob("offline-run-*"))  # offline W&B files to `wandb sync` later


def test_missing_model_directory_is_one_line(tmp_path, write_config, capsys):
    cfg = write_config(tiny_run_config(tmp_path / "no-such-model", eval={"base": True}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.name" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
