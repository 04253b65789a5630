"""The completion loss projects to the vocabulary only at target positions, a chunk at a time, and gives
transformers' own loss and gradients (full logits) on the tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mathgpt.model import add_lora, load_model, load_tokenizer
from mathgpt.synthetic import make_problems
from mathgpt.train import HEAD_CHUNK, IGNORE, LeftPadCollator, completion_loss, tokenize


def _setup(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    model = add_lora(load_model(str(tiny_model_dir), device="cpu"), r=4, alpha=8.0)
    with torch.no_grad():  # a non-zero adapter, so gradients reach lora_A too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    batch = LeftPadCollator(tok.pad_token_id)(tokenize(make_problems("train", 6), tok, "plain", 256))
    lengths = (batch["labels"] != IGNORE).sum(1)
    assert len(set(lengths.tolist())) > 1  # targets of different lengths: some rows' span holds prompt tokens
    return model, batch


def _loss_and_grads(model, loss_fn, precision: str):
    model.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("precision", ["no", "bf16"])
@pytest.mark.parametrize("rows_per_chunk", [None, 7, 1])
def test_chunked_loss_and_gradients_equal_the_full_logits_ones(tiny_model_dir, precision, rows_per_chunk):
    model, batch = _setup(tiny_model_dir)
    n = (batch["labels"] != IGNORE).sum()
    vocab = model.get_output_embeddings().weight.shape[0]
    chunk = HEAD_CHUNK if rows_per_chunk is None else rows_per_chunk * vocab
    ref, ref_grads = _loss_and_grads(model, lambda: model(**batch).loss, precision)  # transformers' own loss
    loss, grads = _loss_and_grads(
        model, lambda: completion_loss(model, dict(batch), chunk=chunk) / n, precision
    )
    assert torch.allclose(loss, ref, rtol=1e-6)
    # Under bf16 the gradient is rounded to bf16 before the 1/n scale, autograd's after it: rounding apart.
    tol = dict(rtol=1e-5, atol=1e-6) if precision == "no" else dict(rtol=2e-2, atol=1e-4)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        assert g.abs().max() > 0, name
        assert torch.allclose(g, ref_grads[name], **tol), name


def test_no_full_logits_are_materialised(tiny_model_dir, monkeypatch):
    """Every vocabulary projection the loss makes covers at most ``chunk`` logits, never batch x positions."""
    model, batch = _setup(tiny_model_dir)
    vocab = model.get_output_embeddings().weight.shape[0]
    widest = []
    real_linear = F.linear

    def linear(x, w, b=None):
        out = real_linear(x, w, b)
        if out.shape[-1] == vocab:
            widest.append(out.numel())
        return out

    monkeypatch.setattr(F, "linear", linear)
    completion_loss(model, dict(batch), chunk=3 * vocab).backward()
    n_targets = int((batch["labels"] != IGNORE).sum())
    assert widest and max(widest) <= 3 * vocab
    assert len(widest) == -(
        -n_targets // 3
    )  # one projection per chunk of target tokens, none in the backward


def test_a_head_that_scales_its_logits_is_refused(tiny_model_dir):
    model, batch = _setup(tiny_model_dir)
    model.get_base_model().config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        completion_loss(model, dict(batch))


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, recwarn):
    """model.gradient_checkpointing recomputes each layer in the backward instead of keeping its activations:
    the memory knob changes no number (and load_model uses transformers' current name for it)."""
    tok = load_tokenizer(str(tiny_model_dir))
    batch = LeftPadCollator(tok.pad_token_id)(tokenize(make_problems("train", 6), tok, "plain", 256))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = load_model(str(tiny_model_dir), device="cpu", gradient_checkpointing=checkpointing)
        assert base.is_activation_checkpointing == checkpointing
        model = add_lora(base, r=4, alpha=8.0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        model.train()
        loss = completion_loss(model, batch)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (l0, g0), (l1, g1) = grads
    assert l1 == pytest.approx(l0, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1, strict=True))
    # peft 0.21 still reads the deprecated is_gradient_checkpointing; the project's own call is the new one
    assert not [w for w in recwarn if "gradient_checkpointing_enable" in str(w.message)]
