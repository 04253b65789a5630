"""GPU check of the Mistral-7B path: a LoRA (bf16) and a QLoRA (NF4) training slice and a batched generation pass.

Random weights in Mistral-7B's exact shape: speed and memory depend on shapes, not values. Training goes
through the project's own ``mathgpt.train.train`` (CompletionTrainer, left-padded completion-only loss) and the
QLoRA model through ``mathgpt.model.load_model`` (bitsandbytes NF4, prepared for k-bit training), so this
exercises the code a real run uses. Prints one JSON line per phase and writes them to ``$OUT/gpu_bench.json``
(or ``bench/gpu_bench.json``); bench/RESULTS.md records them with the card's name.

Run on a CUDA machine:  python bench/gpu_bench.py [--steps 12] [--seq 512] [--batch 8]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from mathgpt.config import LoraSettings, ModelConfig, TrainConfig
from mathgpt.model import KNOWN_CONFIGS, add_lora, count_parameters, load_model
from mathgpt.train import Tokenized, train, training_args

LORA = LoraSettings(
    r=16,
    alpha=32,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


class _Tok:
    """The two tokenizer attributes the trainer needs; token ids are random, so no vocabulary file is needed."""

    pad_token_id = 2
    eos_token_id = 2


def rows(n: int, seq: int, vocab: int, prompt: int) -> list[Tokenized]:
    rng = random.Random(0)
    return [
        Tokenized(input_ids=[1] + [rng.randrange(3, vocab) for _ in range(seq - 1)], n_prompt=prompt)
        for _ in range(n)
    ]


def reset_peak() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


def train_slice(model, name: str, a: argparse.Namespace, vocab: int) -> dict:
    model = add_lora(model, LORA)
    trainable, total = count_parameters(model)
    data = rows(a.batch * (a.steps + a.warmup), a.seq, vocab, prompt=a.seq // 4)
    times: list[float] = []

    def on_log(logs, step):
        torch.cuda.synchronize()
        times.append(time.perf_counter())

    args = training_args(
        TrainConfig(
            epochs=1, learning_rate=2e-4, batch_size=a.batch, lr_scheduler="constant", logging_steps=1
        ),
        out_dir=Path(tempfile.mkdtemp()),
        seed=0,
        device="cuda",
        dtype="bfloat16",
    )
    reset_peak()
    train(model, _Tok(), data, args, on_log=on_log)
    # Steps after the warm-up ones, timed between log callbacks (each fires after an optimizer step).
    timed = times[a.warmup :]
    steps = len(timed) - 1
    tok_s = steps * a.batch * a.seq / (timed[-1] - timed[0])
    return {
        "phase": name,
        "tokens_per_s": round(tok_s),
        "peak_gib": round(peak_gib(), 2),
        "steps_timed": steps,
        "batch": a.batch,
        "seq": a.seq,
        "trainable_params": trainable,
        "total_params": total,
        "gradient_checkpointing": True,
    }


@torch.inference_mode()
def generation(model, name: str, a: argparse.Namespace, vocab: int) -> dict:
    model.eval()
    ids = torch.randint(3, vocab, (a.gen_batch, a.gen_prompt), device="cuda")
    kw = dict(max_new_tokens=a.gen_new, min_new_tokens=a.gen_new, do_sample=False, pad_token_id=2)
    model.generate(ids[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=2)  # warm-up
    reset_peak()
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {
        "phase": name,
        "tokens_per_s": round(a.gen_batch * a.gen_new / dt),
        "peak_gib": round(peak_gib(), 2),
        "batch": a.gen_batch,
        "prompt": a.gen_prompt,
        "new_tokens": a.gen_new,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gen-batch", type=int, default=64)
    p.add_argument("--gen-prompt", type=int, default=256)
    p.add_argument("--gen-new", type=int, default=128)
    a = p.parse_args()
    from transformers import AutoConfig, MistralForCausalLM

    out = Path(os.environ.get("OUT", "bench"))
    results = [{"phase": "device", "name": torch.cuda.get_device_name(), "torch": torch.__version__}]

    def emit(r: dict) -> None:
        results.append(r)
        print(json.dumps(r), flush=True)
        (out / "gpu_bench.json").write_text(json.dumps(results, indent=1))

    emit(results.pop())

    def attempt(name: str, fn, *args) -> None:
        """One phase; a failure is recorded and the next phase still runs (device time is scarce)."""
        try:
            emit(fn(*args))
        except Exception as err:  # noqa: BLE001
            emit({"phase": name, "error": f"{type(err).__name__}: {str(err)[:300]}"})

    cfg = AutoConfig.for_model(**KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"])
    vocab = cfg.vocab_size
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg).to(torch.bfloat16)
    emit(
        {
            "phase": "init_random_bf16",
            "s": round(time.perf_counter() - t, 1),
            "peak_gib": round(peak_gib(), 2),
        }
    )
    attempt("generate_bf16", generation, model, "generate_bf16", a, vocab)

    path = Path(tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP", "/tmp")))
    t = time.perf_counter()
    model.save_pretrained(path)  # for the NF4 load below: bitsandbytes quantizes while loading weights
    emit({"phase": "save_safetensors", "s": round(time.perf_counter() - t, 1)})
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    attempt("train_lora_bf16", train_slice, model, "train_lora_bf16", a, vocab)
    del model
    reset_peak()

    t = time.perf_counter()
    qmodel = load_model(
        ModelConfig(
            name=str(path), dtype="bfloat16", quantization="nf4", device="cuda", gradient_checkpointing=True
        ),
        "cuda",
    )
    emit({"phase": "load_nf4", "s": round(time.perf_counter() - t, 1), "weights_gib": round(peak_gib(), 2)})
    attempt("generate_nf4", generation, qmodel, "generate_nf4", a, vocab)
    attempt("train_qlora_nf4", train_slice, qmodel, "train_qlora_nf4", a, vocab)


if __name__ == "__main__":
    main()
