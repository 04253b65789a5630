"""Batched greedy generation that stops paying for finished rows.

Prompts are left-padded so all rows of a batch start generating at the same position. transformers' static
``model.generate`` keeps decoding a row after its EOS until the longest row of the batch ends: in the
fine-tuned CPU evaluations only 36-59% of the decoded row-steps produced kept tokens (issue 13). The default
path here (``mode="drop"``) runs its own greedy loop over the model's ``DynamicCache`` and removes a finished
row from the input ids, attention mask, positions and every cache layer (``batch_select_indices``) as soon as
it emits EOS, so every decoded row-step is a kept token.

transformers' continuous batching (``model.generate_batch``, paged attention) also runs on CPU with a peft
model and gives the same text, but in the one run that compared them it was slower than this loop
(bench/RESULTS.md, 2026-11-28), with a 13 GB resident process for a 135M model. On SmolLM2 + a trained
adapter (100 problems, 128-token cap) this loop decoded 63% as many row-steps as the static path, with
identical outputs, at 1.21-1.22x the static path's useful tokens per CPU-second: the last rows decode in
small batches, where a row-step costs ~2.9x one in a batch of 32.
``mode="static"`` keeps the old ``model.generate`` path as the reference the tests and benchmarks compare
against.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens, EOS included
    truncated: bool  # hit max_new_tokens without emitting EOS


@dataclass(frozen=True)
class GenStats:
    """What one ``generate`` call computed: kept tokens against decoded row-steps."""

    useful_tokens: int  # tokens kept in the outputs, EOS included
    slot_tokens: int  # row-steps computed (one per row per decoding step, the prefill's token included)
    wall_s: float

    @property
    def useful_fraction(self) -> float:
        return self.useful_tokens / self.slot_tokens if self.slot_tokens else 1.0

    @property
    def useful_tokens_per_s(self) -> float:
        return self.useful_tokens / max(self.wall_s, 1e-9)

    @property
    def slot_tokens_per_s(self) -> float:
        return self.slot_tokens / max(self.wall_s, 1e-9)

    def as_dict(self) -> dict:
        """The ``gen`` record of epochs.jsonl / metrics.json (docs/CONTRACTS.md)."""
        return {
            "useful_tokens": self.useful_tokens,
            "slot_tokens": self.slot_tokens,
            "useful_fraction": round(self.useful_fraction, 4),
            "useful_tokens_per_s": round(self.useful_tokens_per_s, 2),
            "slot_tokens_per_s": round(self.slot_tokens_per_s, 2),
        }


def sum_stats(stats: list[GenStats]) -> GenStats:
    """Several calls as one (e.g. the evaluation points of a run)."""
    return GenStats(
        sum(s.useful_tokens for s in stats), sum(s.slot_tokens for s in stats), sum(s.wall_s for s in stats)
    )


class _TokenProgress(StoppingCriteria):
    """Ticks a progress bar once per decoding step; never stops anything (EOS handling stays with generate)."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _static_batch(model, tokenizer, enc, max_new_tokens: int, bar) -> tuple[list[list[int]], int]:
    """transformers' ``generate``: every row decodes until the batch's longest row ends."""
    seqs = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([_TokenProgress(bar)]),
    )
    new = seqs[:, enc["input_ids"].shape[1] :]
    return new.tolist(), new.shape[0] * new.shape[1]


def _cache_kwarg(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40); earlier 5.x
    releases silently drop an unknown ``cache`` argument, so ask the forward which name it takes."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _dropping_batch(model, tokenizer, enc, max_new_tokens: int, bar) -> tuple[list[list[int]], int]:
    """Greedy decoding that drops each row from the batch (inputs and KV cache) once it has emitted EOS."""
    eos = tokenizer.eos_token_id
    mask = enc["attention_mask"]
    # Positions skip the left padding, as in generate(); padded slots are masked out, so their value is moot.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    cache_kw = {_cache_kwarg(model): cache}
    out = model(
        input_ids=enc["input_ids"],
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **cache_kw,
    )
    n = mask.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n)]
    alive = torch.arange(n, device=mask.device)  # original row index of each row still in the batch
    last_pos = positions[:, -1:]
    slots = 0
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(-1)
        slots += len(alive)
        bar.update(1)
        for row, tok in zip(alive.tolist(), next_ids.tolist(), strict=True):
            tokens[row].append(tok)
        keep = next_ids != eos
        if step == max_new_tokens - 1 or not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(1)
            alive, next_ids, mask, last_pos = alive[idx], next_ids[idx], mask[idx], last_pos[idx]
            cache.batch_select_indices(idx)
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=mask,
            position_ids=last_pos,
            use_cache=True,
            **cache_kw,
        )
    return tokens, slots


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generating",
    mode: Literal["drop", "static"] = "drop",
) -> tuple[list[Generation], GenStats]:
    """Greedy completions of ``prompts`` (in order) and what computing them cost (``GenStats``)."""
    if mode not in ("drop", "static"):
        raise ValueError(f"generate mode must be 'drop' or 'static', not {mode!r}")
    decode = _dropping_batch if mode == "drop" else _static_batch
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    useful, slots, start = 0, 0, time.perf_counter()
    # Longest prompts first: rows of similar length waste less padding; the original order is restored below.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: dict[int, Generation] = {}
    n_batches = -(-len(prompts) // batch_size)
    with torch.inference_mode():
        for b, lo in enumerate(range(0, len(order), batch_size)):
            idx = order[lo : lo + batch_size]
            label = f"{desc} [{len(prompts)} problems" + (
                f", batch {b + 1}/{n_batches}]" if n_batches > 1 else "]"
            )
            bar = tqdm(total=max_new_tokens, desc=label, unit="tok", leave=False)
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            rows, batch_slots = decode(model, tokenizer, enc, max_new_tokens, bar)
            bar.close()
            slots += batch_slots
            for ids, i in zip(rows, idx, strict=True):
                n = ids.index(eos) + 1 if eos in ids else len(ids)
                text = tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
                results[i] = Generation(text, n, truncated=eos not in ids[:n])
                useful += n
    stats = GenStats(useful, slots, time.perf_counter() - start)
    return [results[i] for i in range(len(prompts))], stats
