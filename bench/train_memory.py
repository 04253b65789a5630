"""Peak resident memory of one LoRA training step: the chunked completion loss against full-span logits.

One forward and backward (bf16 autocast, LoRA r=16 on all linear layers, no dropout) on the first ``--rows``
GSM8K train examples in the model's prompt format, each loss in its own process (peak RSS is per process):

- ``chunked``: ``mathgpt.train.completion_loss`` (vocabulary projection only at target positions, 2**24
  logits at a time);
- ``full``: logits for every position of the longest target, then ``F.cross_entropy`` (the previous loss,
  ``bench_train.old_loss``).

    python bench/train_memory.py [--model embedded:qwen2.5-coder-0.5b-instruct] [--rows 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mathgpt, not whichever one the environment installed


def step(model_name: str, rows: int, loss_kind: str, threads: int) -> str:
    import torch

    from bench.bench_train import old_loss
    from mathgpt.config import LoraSettings
    from mathgpt.data import load
    from mathgpt.model import add_lora, load_model, load_tokenizer
    from mathgpt.run import lora_settings
    from mathgpt.train import IGNORE, LeftPadCollator, completion_loss, tokenize

    torch.set_num_threads(threads)
    tok = load_tokenizer(model_name)
    lora = LoraSettings(r=16, dropout=0.0, target_modules="all-linear")
    model = add_lora(load_model(model_name, device="cpu"), **lora_settings(lora)).train()
    batch = LeftPadCollator(tok.pad_token_id)(tokenize(load("gsm8k:train")[:rows], tok, "auto", 512))
    n = (batch["labels"] != IGNORE).sum()
    start = time.perf_counter()
    with torch.autocast("cpu", torch.bfloat16):
        if loss_kind == "chunked":
            loss = completion_loss(model, dict(batch)) / n
        else:
            loss = old_loss(model, dict(batch), use_cache=False)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    shape = "x".join(map(str, batch["input_ids"].shape))
    return f"| {loss_kind} | {shape} | {int(n)} | {loss.item():.6f} | {seconds:.1f} | {peak:,.0f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loss", choices=["chunked", "full"], help="one step in this process (internal)")
    a = p.parse_args()
    if a.loss:
        print(step(a.model, a.rows, a.loss, a.threads), flush=True)
        return
    print(
        f"{a.model}, {a.rows} GSM8K train rows, {a.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    print("| loss | batch | target tokens | loss | step s | peak RSS MiB |\n|---|---|---|---|---|---|")
    for kind in ("chunked", "full"):
        cmd = [
            sys.executable,
            __file__,
            "--model",
            a.model,
            "--rows",
            str(a.rows),
            "--threads",
            str(a.threads),
        ]
        out = subprocess.run([*cmd, "--loss", kind], capture_output=True, text=True, check=True).stdout
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
