"""Batched evaluation against a plain per-problem ``generate`` loop, and training tokens/s, side by side.

Both generation paths run in this one process on the same problems with the same model and the same
``max_new_tokens`` (machines here are noisy: only ratios measured together mean something). The per-problem
loop runs first so the batched path gets no warm-cache advantage. Target: batched >= 5x the loop in generated
tokens/s. Writes its section of bench/RESULTS.md.

    python bench/bench_eval.py [--problems 32] [--max-new-tokens 96]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from mathgpt.config import LoraSettings, ModelConfig, TrainConfig
from mathgpt.generate import generate
from mathgpt.model import add_lora, load_model, load_tokenizer
from mathgpt.prompts import format_prompt
from mathgpt.synthetic import generate as synthetic
from mathgpt.train import tokenize, train, training_args

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

EMBEDDED = "embedded:smollm2-135m-instruct"


def per_problem_loop(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[float, int]:
    """The naive evaluation: one unpadded ``generate`` call per problem."""
    n_tokens, t = 0, time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            new = out[0, enc["input_ids"].shape[1] :].tolist()
            n_tokens += new.index(tok.eos_token_id) + 1 if tok.eos_token_id in new else len(new)
    return n_tokens / (time.perf_counter() - t), n_tokens


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problems", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--train-examples", type=int, default=64)
    a = p.parse_args()
    torch.manual_seed(0)
    tok = load_tokenizer(EMBEDDED)
    model = load_model(ModelConfig(name=EMBEDDED), "cpu")
    problems = synthetic("test", a.problems)
    prompts = [format_prompt(ex.question, "chat", tok) for ex in problems]

    loop_tok_s, loop_n = per_problem_loop(model, tok, prompts, a.max_new_tokens)
    gens, batch_tok_s = generate(
        model, tok, prompts, max_new_tokens=a.max_new_tokens, batch_size=len(prompts)
    )
    batch_n = sum(g.n_tokens for g in gens)
    ratio = batch_tok_s / loop_tok_s

    rows = tokenize(synthetic("train", a.train_examples), tok, "chat", 384)
    n_train_tokens = sum(len(r["input_ids"]) for r in rows)
    peft_model = add_lora(model, LoraSettings(r=16))
    args = training_args(
        TrainConfig(epochs=1, learning_rate=1e-3, batch_size=4, logging_steps=100),
        out_dir=Path(tempfile.mkdtemp()),
        seed=0,
        device="cpu",
        dtype="float32",
    )
    t = time.perf_counter()
    train(peft_model, tok, rows, args)
    train_tok_s = n_train_tokens / (time.perf_counter() - t)

    lines = [
        "## Evaluation and training speed (CPU)",
        "",
        f"`python bench/bench_eval.py --problems {a.problems} --max-new-tokens {a.max_new_tokens} "
        f"--train-examples {a.train_examples}` on "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, SmolLM2-135M-Instruct fp32, "
        f"{a.problems} synthetic test problems, greedy.",
        "",
        "| path | generated tokens | tokens/s |",
        "| --- | --- | --- |",
        f"| per-problem `generate` loop | {loop_n} | {loop_tok_s:.1f} |",
        f"| batched (one left-padded batch of {len(prompts)}) | {batch_n} | {batch_tok_s:.1f} |",
        "",
        f"**Batched / loop: {ratio:.1f}x** in generated tokens/s (target >= 5x).",
        "",
        f"Training (LoRA r=16 all-linear, dropout 0, batch 4, {a.train_examples} examples, "
        f"{n_train_tokens} tokens): **{train_tok_s:.0f} tokens/s**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("eval", text)


if __name__ == "__main__":
    main()
