"""General ability by log-likelihood multiple choice, scored the lm-eval-harness way (forgetting).

For each choice k the score is log P(continuation_k | context_k), summed over the continuation's tokens; the
prediction is the argmax (``acc``), and the argmax of the score divided by the continuation's UTF-8 byte
length (``acc_norm``, which stops long endings from losing just for being long). As in the harness, context
and continuation are tokenized separately and concatenated, so the continuation's tokens are the same
whatever the context ends with.

Batching: sequences are left-padded with explicit position ids, so every continuation ends at the last
position of its row and the model computes logits only for the last ``max continuation length`` positions
(``logits_to_keep``): with SmolLM2's 49k vocabulary this is what keeps a batch's logits small.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import torch

from mathgpt.data import fingerprint
from mathgpt.general import ChoiceItem, choice_slice, load_choices
from mathgpt.model import left_padded
from mathgpt.stats import wilson_ci


def _encode(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation; trailing spaces of the context move to the continuation."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped) :] + continuation
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ctx = [tokenizer.bos_token_id, *ctx]
    if not ctx:  # the first continuation token needs something to be predicted from
        ctx = [tokenizer.eos_token_id]
    return ctx, cont


@torch.no_grad()
def loglikelihoods(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    max_logits: int = 2**28,
) -> list[float]:
    """log P(continuation | context) for each (context, continuation), summed over continuation tokens."""
    encoded = [_encode(tokenizer, c, x) for c, x in pairs]
    # Longest first, so a batch's padding is small and an out-of-memory error shows on the first batch.
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = model.get_output_embeddings().weight.shape[0]
    out = [0.0] * len(encoded)
    start = 0
    while start < len(order):
        longest = len(encoded[order[start]][0]) + len(encoded[order[start]][1]) - 1
        size = max(1, min(batch_size, max_batch_tokens // max(longest, 1)))
        batch = order[start : start + size]
        # Logits are batch x kept positions x vocabulary floats: Gemma's 262k vocabulary makes 58 PIQA rows
        # 2.4 GB, so the batch also shrinks until they fit in max_logits floats (1 GiB in fp32).
        while len(batch) > 1 and len(batch) * max(len(encoded[i][1]) for i in batch) * vocab > max_logits:
            batch = batch[: len(batch) // 2]
        start += len(batch)
        seqs = [(encoded[i][0] + encoded[i][1])[:-1] for i in batch]  # the last token is only predicted
        ids, mask, positions = left_padded(seqs, pad)
        keep = max(len(encoded[i][1]) for i in batch)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
            use_cache=False,
        ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(batch):
            cont = torch.tensor(encoded[i][1], device=logprobs.device)
            picked = logprobs[row, keep - len(cont) :].gather(-1, cont[:, None])
            out[i] = float(picked.sum())
    return out


def score_choices(model, tokenizer, items: list[ChoiceItem], batch_size: int = 16) -> list[dict]:
    """Per item: ``id``, ``pred``, ``pred_norm``, ``correct``, ``correct_norm``, ``loglik`` (per choice)."""
    pairs = [(c, x) for it in items for c, x in zip(it.contexts, it.continuations, strict=True)]
    scores = loglikelihoods(model, tokenizer, pairs, batch_size)
    out, k = [], 0
    for it in items:
        ll = scores[k : k + len(it.continuations)]
        k += len(it.continuations)
        norm = [s / max(len(x.encode("utf-8")), 1) for s, x in zip(ll, it.continuations, strict=True)]
        pred = max(range(len(ll)), key=ll.__getitem__)
        pred_norm = max(range(len(norm)), key=norm.__getitem__)
        out.append(
            {
                "id": it.id,
                "pred": pred,
                "pred_norm": pred_norm,
                "correct": int(pred == it.label),
                "correct_norm": int(pred_norm == it.label),
                "loglik": [round(s, 4) for s in ll],
            }
        )
    return out


@lru_cache(maxsize=16)
def general_slice(name: str, size: int, seed: int, data_dir: str | None) -> tuple[ChoiceItem, ...]:
    """The seeded slice of set ``name`` (read once per process: every evaluation point scores the same items)."""
    return tuple(choice_slice(load_choices(name, data_dir), size, seed))


def general_slices(
    names: list[str], size: int, seed: int, data_dir: str | Path | None
) -> dict[str, tuple[ChoiceItem, ...]]:
    """The seeded slice of every set in ``names`` (``eval.general``), read now: an unknown set or a missing
    file fails before a run writes anything."""
    where = str(Path(data_dir)) if data_dir else None
    return {name: general_slice(name, size, seed, where) for name in names}


def evaluate_general(
    model, tokenizer, slices: dict[str, tuple[ChoiceItem, ...]], batch_size: int = 16
) -> dict:
    """The ``general`` dict of an epochs.jsonl point (docs/CONTRACTS.md): one entry per set of ``slices``.

    Slices use ``data.eval_seed``, so every trial of a study (and its base) scores the same items; pair a
    point with the base by ``ids`` / ``fingerprint``.
    """
    out: dict[str, dict] = {}
    was_training = model.training
    model.eval()
    try:
        for name, sliced in slices.items():
            items = list(sliced)
            t = time.perf_counter()
            rows = score_choices(model, tokenizer, items, batch_size)
            n = len(rows)
            correct = [r["correct"] for r in rows]
            correct_norm = [r["correct_norm"] for r in rows]
            out[name] = {
                "accuracy": sum(correct) / n,
                "ci95": list(wilson_ci(sum(correct), n)),
                "accuracy_norm": sum(correct_norm) / n,
                "ci95_norm": list(wilson_ci(sum(correct_norm), n)),
                "n": n,
                "ids": [r["id"] for r in rows],
                "correct": correct,
                "correct_norm": correct_norm,
                "fingerprint": fingerprint(items),  # reads only .id
                "wall_s": round(time.perf_counter() - t, 3),
            }
    finally:
        model.train(was_training)
    return out
