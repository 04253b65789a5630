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


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens, EOS included


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int,
             desc: str = "generating") -> tuple[list[Generation], float]:  # fmt: skip
    """Greedy completions of ``prompts`` (in order) and the generated tokens per second."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    out: list[Generation] = []
    n_tokens, start = 0, time.perf_counter()
    # Longest prompts first: rows of similar length waste less padding; the original order is restored below.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: dict[int, Generation] = {}
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="problem", leave=False) as bar:
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = seqs[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                n = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
                results[i] = Generation(tokenizer.decode(ids[:n], skip_special_tokens=True).strip(), n)
                n_tokens += n
            bar.update(len(idx))
    out = [results[i] for i in range(len(prompts))]
    return out, n_tokens / max(time.perf_counter() - start, 1e-9)
