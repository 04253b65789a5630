"""Token lengths of real chain-of-thought training rows, for bench/gpu_bench.py's synthetic batches.

The GPU benchmark uses random weights and random token ids, but its rows must be as long as real ones: the
row length sets padding waste, attention cost and how much target-only logits save. This samples GSM8K train
rows from ``../shared/data``, formats them as the Mistral configs do (Alpaca prompt, solution + EOS, 1024-token
cap) and writes (prompt tokens, target tokens) pairs to bench/gsm8k_train_lengths.json, which travels with the
repository to the GPU machine (it has no network and no copy of the data).

The counts come from the embedded SmolLM2 tokenizer: Mistral's is not available offline here. Mistral splits
numbers into single digits, so its GSM8K rows are somewhat longer; the benchmark's absolute tokens/s are for
these lengths, and its ratios compare paths on the very same rows.

    python bench/gsm8k_lengths.py [--rows 2000] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from mathgpt.data import load
from mathgpt.model import load_tokenizer
from mathgpt.train import tokenize

OUT = Path(__file__).with_name("gsm8k_train_lengths.json")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    a = p.parse_args()
    examples = load("gsm8k:train", a.data_dir)
    random.Random(0).shuffle(examples)
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    rows = tokenize(examples[: a.rows], tok, "alpaca", 1024)
    pairs = [[r["n_prompt"], len(r["input_ids"]) - r["n_prompt"]] for r in rows]
    OUT.write_text(
        json.dumps(
            {
                "source": f"gsm8k:train, {len(pairs)} rows (seed 0 shuffle) of {len(examples)}",
                "tokenizer": "SmolLM2-135M-Instruct (embedded)",
                "format": "alpaca prompt; solution + EOS; max_seq_len 1024",
                "prompt_target": pairs,
            },
            separators=(",", ":"),
        )
    )
    total = [sum(x) for x in pairs]
    print(f"{OUT}: {len(pairs)} rows, mean {sum(total) / len(total):.0f} tokens, max {max(total)}")


if __name__ == "__main__":
    main()
