"""Generation phases of bench/gpu_bench.py: random weights made to stop like a fine-tuned model.

A random model never emits EOS, so every static batch would run to the cap and the continuous batch would
have nothing to save. ``ForcedStops`` makes row r stop after exactly its GSM8K target length instead, so both
paths decode the same number of tokens and differ only in what they pay for finished rows.
"""

from __future__ import annotations

import inspect
import random
import time

import torch

from mathgpt.generate import generate
from mathgpt.model import left_padded

EOS = PAD = 2


class ForcedStops:
    """Makes row r of a generation stop after exactly ``lengths[r]`` tokens (EOS suppressed before that).

    Row identity travels in the tokens themselves: the prompt's first real token is 3 + r, and every token
    the hook lets row r generate before its EOS is 3 + r again. A decoding step's input token therefore names
    its row, whichever slot the row sits in: this follows static batches (finished rows are fed EOS/PAD and
    left alone), the continuous batch's moved and refilled slots, and prefills of any group of prompts.
    """

    def __init__(self, model, lengths: list[int]):
        self.model, self.lengths, self.orig = model, lengths, model.forward
        self.made = [0] * len(lengths)  # tokens generated so far, per row
        self.__signature__ = inspect.signature(self.orig)  # generate() reads the forward's argument names
        model.forward = self

    def __call__(self, *args, **kw):
        out = self.orig(*args, **kw)
        ids, mask = kw["input_ids"], kw["attention_mask"]
        if ids.shape[1] > 1:  # prefill: the first real token of each prompt
            tok = ids[torch.arange(len(ids)), mask[:, -ids.shape[1] :].argmax(dim=1)]
        else:
            tok = ids[:, 0]
        logits = out.logits[:, -1]
        lo, hi = logits.min() - 10, logits.max() + 10
        for i, t in enumerate(tok.tolist()):
            r = t - 3
            if t == EOS:  # a finished row of a static batch: keep it finished
                logits[i, EOS] = hi
                continue
            self.made[r] += 1
            logits[i] = lo
            logits[i, EOS if self.made[r] >= self.lengths[r] else t] = hi
        return out

    def close(self) -> None:
        del self.model.forward


class IdTokenizer:
    """Prompts are space-separated token ids: enough tokenizer for mathgpt.generate on random weights."""

    eos_token_id = pad_token_id = EOS
    padding_side = "left"

    def __call__(self, texts: str | list[str], return_tensors: str | None = None, padding: bool = False):
        from transformers import BatchEncoding

        if isinstance(texts, str):  # one prompt: a list of ids, as a transformers tokenizer returns
            return {"input_ids": [int(x) for x in texts.split()]}

        ids, mask, _ = left_padded([[int(x) for x in t.split()] for t in texts], PAD)
        return BatchEncoding({"input_ids": ids, "attention_mask": mask})

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids if i != EOS)


def gen_phase(b, model, mode: str, n: int, batch: int) -> dict:
    rng = random.Random(1)
    vocab = model.config.vocab_size
    pairs = b.pairs[:n]
    prompts = [
        " ".join(map(str, [3 + r] + [rng.randrange(3, vocab) for _ in range(p - 1)]))
        for r, (p, _) in enumerate(pairs)
    ]
    hook = ForcedStops(model.get_base_model(), [t for _, t in pairs])
    try:
        generate(
            model, IdTokenizer(), prompts[: min(8, n)], max_new_tokens=4, batch_size=8, mode=mode
        )  # warm-up
        hook.made = [0] * len(hook.made)
        b.reset_peak()
        b.sync()
        gens, s = generate(
            model, IdTokenizer(), prompts, max_new_tokens=b.a.gen_new, batch_size=batch, mode=mode
        )
        b.sync()
    finally:
        hook.close()
    want = [min(t, b.a.gen_new) for _, t in pairs]
    return {
        "mode": mode,
        "batch": batch,
        "problems": n,
        "max_new_tokens": b.a.gen_new,
        **s.as_dict(),
        "lengths_as_forced": [g.n_tokens for g in gens] == want,
        "peak_gib": b.peak_gib(),
    }


def fixed_phase(b, model, compiled: bool) -> dict:
    """Fixed-length decoding (no EOS), eager dynamic cache against static cache + torch.compile."""
    ids = torch.randint(3, model.config.vocab_size, (b.a.gen_batch, 128), device=b.device)
    kw = dict(max_new_tokens=b.a.fixed_new, min_new_tokens=b.a.fixed_new, do_sample=False, pad_token_id=PAD)
    if compiled:
        kw["cache_implementation"] = "static"
    with torch.inference_mode():
        for _ in range(2 if compiled else 1):  # compiled: the first call compiles, the second warms graphs
            model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        b.sync()
        t = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        b.sync()
    dt = time.perf_counter() - t
    return {
        "batch": b.a.gen_batch,
        "new_tokens": b.a.fixed_new,
        "tokens_per_s": round(ids.shape[0] * b.a.fixed_new / dt, 1),
        "ms_per_step": round(1000 * dt / b.a.fixed_new, 2),
    }
