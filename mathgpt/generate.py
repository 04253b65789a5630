"""Batched greedy generation.

Prompts are left-padded so all rows of a batch start generating at the same position, and a batch stops as
soon as every row has produced EOS. On CPU one batch of all evaluation problems is the fastest setting
measured (bench/bench_eval.py compares it with a per-problem loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList


class _TokenProgress(StoppingCriteria):
    """Ticks a progress bar once per decoding step; never stops anything (EOS handling stays with generate)."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens, EOS included


def generate(
    model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, desc: str = "generating"
) -> tuple[list[Generation], float]:
    """Greedy completions of ``prompts`` (in order) and the generated tokens per second."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    n_tokens, start = 0, time.perf_counter()
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
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_TokenProgress(bar)]),
            )
            bar.close()
            new = seqs[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                n = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
                results[i] = Generation(tokenizer.decode(ids[:n], skip_special_tokens=True).strip(), n)
                n_tokens += n
    out = [results[i] for i in range(len(prompts))]
    return out, n_tokens / max(time.perf_counter() - start, 1e-9)
