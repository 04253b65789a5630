"""CPU LoRA training: the project's Trainer path against a plain transformers + peft loop, side by side.

The reference is the loop a careful person writes by hand: peft LoRA (no dropout), rows sorted by length in
batches of 8, taken in the project's batch order (``WholeSetLengthSampler``, same seed: with a batch order of its
own, step k of each trains on other rows and the per-step losses do not compare), left padding, logits only for the positions of the longest target
(``logits_to_keep`` as an int, then the usual ``logits[:, :-1].float()`` slice), AdamW, gradient clipping,
constant learning rate, fp32 throughout (as plain code runs by default), and the model's default ``use_cache``.
The project runs ``mathgpt.train`` with the same optimizer settings and the default run's
``train.mixed_precision: auto``: bf16 autocast around the forward (weights, adapter and AdamW stay fp32) on a CPU
with native bf16 (AMX/AVX512-BF16), fp32 on one without (where bf16 is emulated: ~27x slower per step on an
AVX2-only AMD EPYC). Each ablation puts back one old behaviour of the project's training:

- ``fp32``: no autocast (``train.mixed_precision: no``; only where ``auto`` picks bf16);

- ``+use_cache``: the forward also builds a KV cache (``use_cache`` left on);
- ``+logits copy``: as before this change: logits for the longest target plus one extra position, sliced and
  reshaped (a copy);
- ``+trainer grouping``: transformers' LengthGroupedSampler (sorts within groups of 50 batches, longest first)
  instead of sorting the whole set;

Every variant trains a fresh adapter (same seed) on the same rows of the real model (``--model``: SmolLM2-135M
by default, or Qwen2.5-Coder-0.5B; ``--data gsm8k:train`` for GSM8K's longer solutions) for one epoch; the
reference and the project run twice, interleaved, and ratios use the mean of both. Tokens/s counts real
(unpadded) tokens over the whole training call, first step included; the first step and the median step are
printed apart, since a first step that is slow only moves cost around. Writes its section of bench/RESULTS.md.

    python bench/bench_train.py [--examples 96] [--model M] [--data synthetic|gsm8k:train] [--pairs N]
        [--ablate-grouping] [--eval-merge] [--section NAME]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mathgpt, not whichever one the environment installed

from mathgpt.config import LoraSettings, TrainConfig  # noqa: E402
from mathgpt.data import load  # noqa: E402
from mathgpt.machine import describe, machine_info  # noqa: E402
from mathgpt.model import add_lora, load_model, load_tokenizer  # noqa: E402
from mathgpt.run import lora_settings, resolved_precision, trainer_settings  # noqa: E402
from mathgpt.synthetic import make_problems as synthetic  # noqa: E402
from mathgpt.train import (  # noqa: E402
    IGNORE,
    CompletionTrainer,
    LeftPadCollator,
    WholeSetLengthSampler,
    completion_loss,
    tokenize,
    training_args,
)

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval_long import DATA_DIR  # noqa: E402
from results import write_section  # noqa: E402

BATCH, LR, SEED = 8, 1e-3, 0
PRECISION = resolved_precision("auto", "cpu")  # what the default run's train.mixed_precision resolves to here
LORA = lora_settings(LoraSettings(r=16, dropout=0.0, target_modules="all-linear"))


def old_loss(model, inputs, *, use_cache: bool | None) -> torch.Tensor:
    """The previous compute_loss (mean over target tokens): longest-target logits, sliced and reshaped."""
    labels = inputs["labels"]
    first = int((labels != IGNORE).int().argmax(dim=1).min())
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    if use_cache is not None:
        fwd["use_cache"] = use_cache
    keep = labels.shape[1] - first + 1
    logits = model(**fwd, logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, -keep + 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def reference_loop(model, rows, pad_id: int) -> tuple[list[float], list[float]]:
    """Plain loop: (per-step seconds, per-step losses)."""
    order = list(WholeSetLengthSampler([len(r["input_ids"]) for r in rows], BATCH, SEED))
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    collate = LeftPadCollator(pad_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    model.train()
    secs, losses = [], []
    for b in batches:
        t = time.perf_counter()
        loss = old_loss(model, collate([rows[i] for i in b]), use_cache=None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        secs.append(time.perf_counter() - t)
        losses.append(loss.item())
    return secs, losses


class StepClock(TrainerCallback):
    def __init__(self):
        self.secs: list[float] = []
        self.losses: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.secs.append(time.perf_counter() - self._t)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def project(
    model,
    tok,
    rows,
    out: Path,
    *,
    use_cache=False,
    copy_logits=False,
    trainer_grouping=False,
    precision=PRECISION,
    release_heap=True,
):
    """mathgpt.train's trainer, optionally with one old behaviour put back; (step seconds, losses, total s)."""

    class Variant(CompletionTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (copy_logits or use_cache):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                if copy_logits:
                    return old_loss(model, inputs, use_cache=False)
                n = (inputs["labels"] != IGNORE).sum()
                return completion_loss(model, inputs, use_cache=use_cache) / n

        def _get_train_sampler(self, train_dataset=None):
            if trainer_grouping:
                self.args.train_sampling_strategy = "group_by_length"
                return Trainer._get_train_sampler(self, train_dataset)
            return super()._get_train_sampler(train_dataset)

    cfg = TrainConfig(epochs=1, learning_rate=LR, batch_size=BATCH, lr_scheduler="constant", logging_steps=1)
    args = training_args(out_dir=out, seed=SEED, device="cpu", dtype="float32", **trainer_settings(cfg))
    args.disable_tqdm = True
    clock = StepClock()
    trainer = Variant(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=LeftPadCollator(tok.pad_token_id),
        callbacks=[clock],
        mixed_precision=precision,
        release_heap=release_heap,
    )
    t = time.perf_counter()
    trainer.train()
    return clock.secs, clock.losses, time.perf_counter() - t


def measure_eval_merge(base, tok, n: int, max_new: int) -> str:
    """Evaluation of a trained-shape adapter: merged into a copy (copy time included) vs unmerged."""
    from mathgpt.generate import generate
    from mathgpt.prompts import format_prompt

    model = add_lora(copy.deepcopy(base), **LORA)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)  # a non-zero adapter, as after training
    prompts = [format_prompt(ex.question, "chat", tok) for ex in synthetic("test", n)]
    model.eval()
    times: dict[str, list[float]] = {"copy+merge": [], "unmerged": []}
    for _ in range(2):
        for how in times:
            t = time.perf_counter()
            view = copy.deepcopy(model).merge_and_unload() if how == "copy+merge" else model
            generate(view, tok, prompts, max_new_tokens=max_new, batch_size=n, desc=how)
            times[how].append(time.perf_counter() - t)
    m = {k: statistics.mean(v) for k, v in times.items()}
    return (
        f"evaluation, {n} problems x {max_new} new tokens: copy+merge {m['copy+merge']:.1f} s, unmerged adapter "
        f"{m['unmerged']:.1f} s (mean of 2 interleaved): copy+merge is {m['unmerged'] / m['copy+merge']:.2f}x"
    )


def matmul_ratio(reps: int = 50, budget_s: float = 5.0) -> tuple[float, float]:
    """GFLOP/s of one SmolLM2-sized matmul (2048 tokens x 576 -> 1536) in fp32 and in bf16 on this CPU: ``reps``
    products, or fewer once ``budget_s`` has passed (emulated bf16 took ~3 s per product on an AVX2-only CPU)."""
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(2048, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        a @ w.T
        t, done = time.perf_counter(), 0
        while done < reps and (done == 0 or time.perf_counter() - t < budget_s):
            a @ w.T
            done += 1
        rates.append(2 * 2048 * 576 * 1536 * done / (time.perf_counter() - t) / 1e9)
    return rates[0], rates[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct", help="a local dir for a smoke test")
    p.add_argument("--eval-problems", type=int, default=48)
    p.add_argument("--pairs", type=int, default=0, help="only reference/project, interleaved N times")
    p.add_argument("--ablate-grouping", action="store_true", help="also run with Trainer's length grouping")
    p.add_argument(
        "--ablate-heap", action="store_true", help="with --pairs: also train without the heap trim"
    )
    p.add_argument("--eval-merge", action="store_true", help="also time evaluation: merged copy vs unmerged")
    p.add_argument("--data", default="synthetic", help="synthetic, or a dataset such as gsm8k:train")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--section", help="bench/RESULTS.md section (default train / train-pairs)")
    a = p.parse_args(argv)
    tok = load_tokenizer(a.model)
    base = load_model(a.model, device="cpu")
    examples = (
        synthetic("train", a.examples) if a.data == "synthetic" else load(a.data, a.data_dir)[: a.examples]
    )
    rows = tokenize(examples, tok, "chat", 384 if a.data == "synthetic" else 512)
    tokens = sum(len(r["input_ids"]) for r in rows)

    def fresh():
        torch.manual_seed(SEED)
        return add_lora(copy.deepcopy(base), **LORA)

    results: dict[str, list[tuple[list[float], list[float], float]]] = {}
    plan = [
        ("reference", {}),
        ("project", {}),
        *([("project fp32 (no autocast)", {"precision": "no"})] if PRECISION == "bf16" else []),
        ("project +use_cache", {"use_cache": True}),
        ("project +logits copy", {"copy_logits": True}),
        ("project, no heap trim", {"release_heap": False}),
        ("reference", {}),
        ("project", {}),
    ]
    if a.pairs:  # only the headline ratio: reference and project interleaved, a ratio per adjacent pair
        trim = [("project, no heap trim", {"release_heap": False})] if a.ablate_heap else []
        plan = [("reference", {}), ("project", {}), *trim] * a.pairs
    elif a.ablate_grouping:  # identical batches below 50 batches (400 rows); only the batch order differs
        plan.insert(4, ("project +trainer grouping", {"trainer_grouping": True}))
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in plan:
            model = fresh()
            if name == "reference":
                t = time.perf_counter()
                secs, losses = reference_loop(model, rows, tok.pad_token_id)
                total = time.perf_counter() - t
            else:
                secs, losses, total = project(model, tok, rows, Path(tmp), **kw)
            results.setdefault(name, []).append((secs, losses, total))
            print(f"{name}: {tokens / total:.0f} tok/s ({total:.1f} s)", flush=True)
            del model

    fp32_rate, bf16_rate = matmul_ratio()
    ref_tps = statistics.mean(tokens / r[2] for r in results["reference"])
    lines = [
        f"`python bench/bench_train.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (this process alone holds it near 2). Machine: {describe(machine_info())}. "
        f"{a.model}, fp32 weights, LoRA r=16 all-linear, {a.examples} {a.data} rows ({tokens:,} tokens), batch "
        f"{BATCH}, lr {LR} constant, one epoch; the project's autocast: {PRECISION} (train.mixed_precision auto).",
        "",
        "| variant | tokens/s | vs reference | first step s | median step s | mean loss, first half | "
        "mean loss, second half | max step loss diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ref_losses = results["reference"][0][1]
    for name, runs in results.items():
        tps = statistics.mean(tokens / r[2] for r in runs)
        first = statistics.mean(r[0][0] for r in runs)
        med = statistics.mean(statistics.median(r[0]) for r in runs)
        losses = runs[0][1]
        h = len(losses) // 2
        lines.append(
            f"| {name}{' (x2)' if len(runs) > 1 else ''} | {tps:.0f} | {tps / ref_tps:.2f}x | {first:.2f} | "
            f"{med:.2f} | {statistics.mean(losses[:h]):.3f} | {statistics.mean(losses[h:]):.3f} | "
            f"{max(abs(x - y) for x, y in zip(losses, ref_losses, strict=True)):.3f} |"
        )
    pair_ratios = [
        (tokens / p[2]) / (tokens / r[2])
        for r, p in zip(results["reference"], results["project"], strict=True)
    ]
    lines += [
        "",
        "Project / reference per interleaved pair (each pair ran back to back, so it shares the load): "
        + ", ".join(f"{x:.2f}x" for x in pair_ratios)
        + f"; median {statistics.median(pair_ratios):.2f}x.",
        "",
        "Max step loss diff: the largest gap between a variant's loss at step k and the first reference run's "
        "(same rows at every step).",
        "",
        f"Why autocast {'pays' if PRECISION == 'bf16' else 'is off'} here: a 2048x576 by 576x1536 matmul ran at "
        f"{fp32_rate:.0f} GFLOP/s in fp32 and {bf16_rate:.1f} in bf16 ({bf16_rate / fp32_rate:.2f}x) on this CPU, "
        "same run.",
    ]
    if a.eval_merge:
        lines += ["", measure_eval_merge(base, tok, a.eval_problems, 48)]
    text = "\n".join(lines)
    print(text)
    title = "## CPU training vs a plain transformers + peft loop" + (
        " (interleaved pairs)" if a.pairs else ""
    )
    write_section(a.section or ("train-pairs" if a.pairs else "train"), title + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
