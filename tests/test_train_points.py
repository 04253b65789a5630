"""Evaluation points on the tiny model: evaluation leaves training untouched, and the model after k examples
of a sequential run is the model a separate k-example run gives (what eval.at_examples relies on)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from mathgpt.cli import main
from mathgpt.config import parse_config
from tests.conftest import tiny_run_config


def _setup(model_dir, **train):
    from transformers import set_seed

    from mathgpt.model import add_lora, load_model, load_tokenizer
    from mathgpt.run import load_data, lora_settings, resolve_precision

    cfg = resolve_precision(  # as run_experiment does: eval.dtype auto resolved for this CPU
        parse_config(
            tiny_run_config(model_dir, train={"lr_scheduler": "constant", "logging_steps": 1, **train})
        ),
        "cpu",
    )
    set_seed(cfg.seed)
    tok = load_tokenizer(cfg.model.name)
    model = add_lora(load_model(cfg.model.name, device="cpu"), **lora_settings(cfg.lora))
    return cfg, tok, model, load_data(cfg)


def _args(cfg, tmp_path):
    from mathgpt.run import trainer_settings
    from mathgpt.train import training_args

    return training_args(
        out_dir=tmp_path, seed=cfg.seed, device="cpu", dtype="float32", **trainer_settings(cfg.train)
    )


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("copy_merge", [True, False])
def test_evaluation_leaves_weights_and_rng_bit_identical(tiny_model_dir, tmp_path, monkeypatch, copy_merge):
    from mathgpt import run
    from mathgpt.train import tokenize, train

    cfg, tok, model, rd = _setup(tiny_model_dir, learning_rate=5e-2)
    train(model, tok, tokenize(rd.train[:8], tok, "plain", 256), _args(cfg, tmp_path))  # B != 0 from here
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in model.state_dict().items())
    monkeypatch.setattr(run, "COPY_MERGE_MAX_BYTES", 2**40 if copy_merge else 0)
    before = _snapshot(model)
    rng = (random.getstate(), torch.get_rng_state())
    scored = run.score(model, tok, cfg, rd, "check")
    after = _snapshot(model)
    assert len(scored.report) == 8
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert random.getstate() == rng[0] and torch.equal(torch.get_rng_state(), rng[1])
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_training_losses_identical_with_and_without_evaluation(tiny_model_dir, tmp_path):
    from mathgpt import run
    from mathgpt.train import tokenize, train

    def losses(evaluate_each_epoch: bool) -> tuple[list[float], dict]:
        cfg, tok, model, rd = _setup(tiny_model_dir, epochs=2, learning_rate=5e-3)
        logged: list[float] = []

        def on_point(m, info):
            m.eval()
            run.score(m, tok, cfg, rd, "epoch")

        train(
            model,
            tok,
            tokenize(rd.train, tok, "plain", 256),
            _args(cfg, tmp_path),
            on_point=on_point,
            point_epochs={1, 2} if evaluate_each_epoch else set(),
            on_log=lambda logs, step, seen: logged.append(logs["loss"]) if "loss" in logs else None,
        )
        return logged, _snapshot(model)

    with_eval, w1 = losses(True)
    without, w2 = losses(False)
    assert len(with_eval) == 32 and with_eval == without
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_adapter_after_k_examples_equals_a_k_example_run(tiny_model_dir, tmp_path):
    from mathgpt.train import tokenize, train

    def lora(model) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}

    cfg, tok, model, rd = _setup(tiny_model_dir, order="sequential", learning_rate=5e-3)
    rows = tokenize(rd.train, tok, "plain", 256)
    at_k: dict[int, dict] = {}
    seen: list[dict] = []

    def on_point(m, info):
        at_k[info["train_examples"]] = lora(m)
        seen.append(info)

    train(model, tok, rows, _args(cfg, tmp_path), order="sequential", on_point=on_point, point_steps={4, 8})
    assert [i["train_examples"] for i in seen] == [8, 16, 32] and [i["optimizer_steps"] for i in seen] == [
        4,
        8,
        16,
    ]
    assert seen[1]["train_tokens"] == sum(len(r["input_ids"]) for r in rows[:16])

    for k in (8, 16):
        cfg_k, tok, model_k, _ = _setup(tiny_model_dir, order="sequential", learning_rate=5e-3)
        train(model_k, tok, rows[:k], _args(cfg_k, tmp_path), order="sequential")
        alone = lora(model_k)
        assert alone.keys() == at_k[k].keys()
        assert all(torch.allclose(alone[n], at_k[k][n], atol=1e-6) for n in alone), k
    assert any(not torch.allclose(at_k[8][n], at_k[16][n]) for n in at_k[8])  # the points differ


def test_at_examples_run_writes_one_point_per_size(tiny_model_dir, tmp_path, write_config):
    raw = tiny_run_config(
        tiny_model_dir,
        train={"order": "sequential", "lr_scheduler": "constant", "min_steps": 4},
        eval={"at_examples": [8, 16], "base": False},
    )
    out = tmp_path / "o"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert [ln["point"] for ln in lines] == [1, 2, 3]
    assert [ln["train_examples"] for ln in lines] == [8, 16, 32]
    assert [ln["optimizer_steps"] for ln in lines] == [4, 8, 16]
    assert [ln["epoch"] for ln in lines] == [0.25, 0.5, 1.0]
    assert lines[0]["train_tokens"] < lines[1]["train_tokens"] < lines[2]["train_tokens"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finetuned"]["accuracy"] == lines[-1]["accuracy"]


def test_sequential_order_trains_in_the_nested_prefix_order(tiny_model_dir):
    from mathgpt.train import CompletionTrainer, WholeSetLengthSampler

    rows = [{"input_ids": [0] * n, "n_prompt": 1} for n in (5, 9, 3, 7, 9, 2, 8, 4)]
    seq = CompletionTrainer._get_train_sampler.__get__(type("T", (), {"order": "sequential"})())(rows)
    assert list(seq) == list(range(8))
    grouped = list(WholeSetLengthSampler([len(r["input_ids"]) for r in rows], 2, seed=0))
    assert sorted(grouped) == list(range(8)) and grouped != list(range(8))
    widths = [sorted(len(rows[i]["input_ids"]) for i in grouped[j : j + 2]) for j in range(0, 8, 2)]
    assert sorted(widths) == [[2, 3], [4, 5], [7, 8], [9, 9]]  # batches of neighbours in length
    assert grouped != list(WholeSetLengthSampler([len(r["input_ids"]) for r in rows], 2, seed=1))


def test_bf16_mixed_precision_trains_under_autocast_and_evaluates_outside_it(tiny_model_dir, tmp_path):
    """train.mixed_precision bf16: the training forward runs in bf16, the adapter and its gradients stay fp32,
    and an evaluation point (called from inside training) runs without autocast, in fp32."""
    from mathgpt.run import trainer_settings
    from mathgpt.train import tokenize, train, training_args

    cfg, tok, model, rd = _setup(tiny_model_dir, mixed_precision="bf16", learning_rate=5e-3)
    args = training_args(
        out_dir=tmp_path, seed=cfg.seed, device="cpu", dtype=cfg.model.dtype, **trainer_settings(cfg.train)
    )
    assert not args.bf16  # accelerate's bf16 would wrap model.forward, evaluation included
    seen: dict[str, set] = {"train": set(), "point": set()}
    phase = {"now": "train"}
    # the last MLP projection: the training loss projects to the vocabulary itself, not through lm_head
    down_proj = model.get_base_model().model.layers[-1].mlp.down_proj
    down_proj.register_forward_hook(lambda m, i, o: seen[phase["now"]].add(o.dtype))

    def on_point(m, info):
        phase["now"] = "point"
        assert not torch.is_autocast_enabled("cpu")
        with torch.no_grad():
            m(input_ids=torch.tensor([[1, 2, 3]]))
        phase["now"] = "train"

    rows = tokenize(rd.train[:8], tok, "plain", 256)
    train(model, tok, rows, args, mixed_precision="bf16", on_point=on_point, point_epochs={1})
    phase["now"] = "point"
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))  # after training: still fp32
    assert seen == {"train": {torch.bfloat16}, "point": {torch.float32}}
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # it did train


def test_fp32_training_never_autocasts(tiny_model_dir, tmp_path):
    from mathgpt.train import tokenize, train

    cfg, tok, model, rd = _setup(tiny_model_dir)
    assert cfg.train.mixed_precision == "no"
    seen = set()
    down_proj = model.get_base_model().model.layers[-1].mlp.down_proj  # the loss does not call lm_head
    down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    train(model, tok, tokenize(rd.train[:8], tok, "plain", 256), _args(cfg, tmp_path))
    assert seen == {torch.float32}


def test_train_logs_carry_the_rows_trained_on(tiny_model_dir, tmp_path):
    """10 rows at batch 4 are batches of 4, 4 and 2 (in a seeded order): the logged examples count real rows,
    not HF's batch-counted epoch fraction times the set size (which would give 3, 7, 10)."""
    from mathgpt.train import tokenize, train

    cfg, tok, model, rd = _setup(tiny_model_dir, batch_size=4, min_steps=1)
    seen: list[int] = []
    rows = tokenize(rd.train[:10], tok, "plain", 256)
    train(
        model,
        tok,
        rows,
        _args(cfg, tmp_path),
        on_log=lambda logs, step, n: seen.append(n) if "loss" in logs else None,
    )
    assert len(seen) == 3 and seen[-1] == 10
    assert sorted(b - a for a, b in zip([0, *seen], seen, strict=False)) == [2, 4, 4]


def test_training_hands_the_heap_back_after_every_step(tiny_model_dir, tmp_path, monkeypatch):
    from mathgpt import train as train_mod

    cfg, tok, model, rd = _setup(tiny_model_dir)
    calls = []
    monkeypatch.setattr(train_mod, "release_free_memory", lambda: calls.append(1))
    rows = train_mod.tokenize(rd.train[:8], tok, "plain", 256)
    train_mod.train(model, tok, rows, _args(cfg, tmp_path))
    assert len(calls) == -(-8 // cfg.train.batch_size) * cfg.train.epochs  # one per optimizer step


def test_bf16_decoding_leaves_the_trained_weights_exactly_as_they_were(tiny_model_dir):
    """eval.dtype bfloat16: a point decodes with bf16 weights (keys and values too), and training resumes on the
    very fp32 tensors it left, bit for bit."""
    from mathgpt.model import weights_in
    from mathgpt.run import eval_view

    _, _, model, _ = _setup(tiny_model_dir)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    seen = set()
    hook = (
        model.get_base_model()
        .model.layers[-1]
        .mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    )
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        fp32_logits = model(input_ids=ids).logits
        with eval_view(model, "none", "bfloat16") as view:
            assert {p.dtype for p in view.parameters()} == {torch.bfloat16}
            bf16_logits = view(input_ids=ids).logits
        with weights_in(model, torch.float32):  # already fp32: nothing is copied
            assert all(p.data_ptr() == before[n][0] for n, p in model.named_parameters())
    hook.remove()
    assert seen == {torch.float32, torch.bfloat16}
    assert bf16_logits.dtype == torch.bfloat16 and not torch.equal(bf16_logits.float(), fp32_logits)
    for n, p in model.named_parameters():
        assert (
            p.dtype == torch.float32
            and p.data_ptr() == before[n][0]
            and torch.equal(p.detach(), before[n][1])
        )
