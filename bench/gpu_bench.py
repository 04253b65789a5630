"""The Mistral-7B path on a GPU against plain transformers + peft, every change measured on its own, in one run.

Random weights in Mistral-7B's exact shape (speed and memory depend on shapes, not values), bf16, LoRA r=16 on
all seven projections with the configs' own dropout (0.05). Rows are as long as real chain-of-thought rows:
(prompt, target) token counts of GSM8K train rows from bench/gsm8k_train_lengths.json (bench/gsm8k_lengths.py),
filled with random token ids. Training phases, each a fresh adapter on the same base, the same rows:

- ``baseline_hf``: plain ``transformers.Trainer`` + peft with defaults: random batches of 8 right-padded to
  the longest row, the model's own loss over full-vocabulary logits, gradient checkpointing on.
- ``project``: the project's trainer (CompletionTrainer: target-only logits, left padding, length-grouped
  batches of 8), gradient checkpointing on, as experiments/mistral7b_lora.yaml runs today.
- ``project_no_gc``: the same, checkpointing off when run.py's memory estimate fits the card (else skipped).
- ``project_token_budget``: batches filled up to ``--token-budget`` padded tokens instead of 8 rows.
- ``project_liger``: + Liger kernels (RMSNorm, RoPE, SwiGLU) via ``mathgpt.model.apply_liger`` (CUDA only).
- ``project_all``: token budget + no checkpointing + Liger together.

Timing is honest: a callback synchronizes the device after every optimizer step; the timed window runs from
the end of the last warm-up step to the end of the last step, and exactly the real (non-pad) tokens of the
steps inside it are counted. MFU = 4 x parameters x real tokens/s over the card's dense bf16 peak (LoRA on a
frozen base: forward plus the input-gradient half of backward; attention, recomputation and padding are not
credited, so it is a floor).

Generation: the random model never stops, so a hook on the model's logits makes row i emit EOS after exactly
its GSM8K target length (and never earlier), the way a fine-tuned model stops. ``static_b64`` is today's
``model.generate`` with batches of 64 (the config's eval batch); ``drop_b64`` and ``drop_bN`` mathgpt.generate's
continuous batch (``mode="drop"``: preallocated slot cache, finished rows leave, no row-step wasted) with 64
and N slots; ``fixed_eager`` / ``fixed_compiled`` compare a static cache +
torch.compile against eager at a fixed length. A global ``--budget-s`` skips the phases that no longer fit.

Needs on the GPU machine (no network): torch with CUDA, transformers, peft, accelerate, and the wheel in .whl/
(``pip download --no-deps liger-kernel -d .whl``; carry ``.whl``). Run:

    pip install --no-deps .whl/liger_kernel-*.whl; python bench/gpu_bench.py        # < 8 min on H100/H200
    python bench/gpu_bench.py --tiny    # every code path on CPU with a tiny random model, seconds

Prints one JSON line per phase and writes them all to ``$OUT/gpu_bench.json`` (or bench/gpu_bench.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

# This checkout's mathgpt, even where the GPU machine has no installed copy; then the sibling gpu_gen module.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]
from gpu_gen import fixed_phase, gen_phase  # noqa: E402

from mathgpt.config import LoraSettings, TrainConfig  # noqa: E402
from mathgpt.model import KNOWN_CONFIGS, add_lora, apply_liger  # noqa: E402
from mathgpt.run import lora_settings, trainer_settings  # noqa: E402
from mathgpt.train import IGNORE, CompletionTrainer, LeftPadCollator, Tokenized, training_args  # noqa: E402

LENGTHS = Path(__file__).with_name("gsm8k_train_lengths.json")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = lora_settings(
    LoraSettings(r=16, alpha=32, dropout=0.05, target_modules=TARGETS)
)  # experiments/mistral7b_lora.yaml
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity
EOS = PAD = 2  # Mistral's </s>; random rows use ids >= 3
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


class Bench:
    """Device, dtype, rows and the results list shared by the phases."""

    def __init__(self, a: argparse.Namespace):
        self.a, self.start, self.results = a, time.perf_counter(), []
        self.cuda = torch.cuda.is_available() and not a.tiny
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = "bfloat16" if self.cuda else "float32"
        self.out = Path(os.environ.get("OUT", Path(__file__).parent))
        pairs = json.loads(LENGTHS.read_text())["prompt_target"]
        self.pairs = [tuple(p) for p in pairs]

    def emit(self, r: dict) -> None:
        r["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.results.append(r)
        print(json.dumps(r), flush=True)
        (self.out / "gpu_bench.json").write_text(json.dumps(self.results, indent=1))

    def attempt(self, name: str, fn, *args, need_s: float = 0, **kw) -> dict | None:
        """One phase; a failure is recorded and the next phase still runs (device time is scarce)."""
        left = self.a.budget_s - (time.perf_counter() - self.start)
        if left < need_s:
            self.emit({"phase": name, "skipped": f"time budget: {left:.0f} s left, needs ~{need_s:.0f} s"})
            return None
        try:
            r = {"phase": name, **fn(*args, **kw)}
        except Exception as err:  # noqa: BLE001
            r = {"phase": name, "error": f"{type(err).__name__}: {str(err)[:300]}"}
        self.emit(r)
        return r

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def make_model(b: Bench):
    from transformers import AutoConfig, MistralForCausalLM

    shape = dict(KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"])
    if b.a.tiny:
        shape.update(TINY, num_key_value_heads=2, vocab_size=512)
    torch.manual_seed(0)
    with torch.device(b.device):
        model = MistralForCausalLM(AutoConfig.for_model(**shape))
    return model.to(getattr(torch, b.dtype)).eval()


def train_rows(b: Bench, n: int, vocab: int) -> list[Tokenized]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        p, t = b.pairs[i % len(b.pairs)]
        ids = [1] + [rng.randrange(3, vocab) for _ in range(p + t - 2)] + [EOS]
        rows.append(Tokenized(input_ids=ids, n_prompt=p))
    return rows


class StepClock(TrainerCallback):
    def __init__(self, b: Bench):
        self.b, self.times = b, []

    def on_step_end(self, args, state, control, **kwargs):
        self.b.sync()
        self.times.append(time.perf_counter())


class Counting:
    """Wraps a collator and records the real (non-pad) tokens of every batch, in the order steps consume them."""

    def __init__(self, collate):
        self.collate, self.tokens, self.rows = collate, [], []

    def __call__(self, rows):
        batch = self.collate(rows)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.rows.append(len(rows))
        return batch


def right_pad(rows: list[dict]) -> dict[str, torch.Tensor]:
    """What a plain HF recipe does: pad to the longest row on the right, labels -100 on prompt and padding."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n, k = len(r["input_ids"]), r["n_prompt"]
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, k:n] = ids[i, k:n]
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class TokenBudgetTrainer(CompletionTrainer):
    """Batches of length-sorted rows filled up to ``budget`` padded tokens (rows x longest row)."""

    budget = 4096

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader

        lengths = [len(r["input_ids"]) for r in self.train_dataset]
        rng = random.Random(self.args.seed)
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for lo in range(0, len(order), 256):  # sort within random mega-batches, like group_by_length
            cur: list[int] = []
            for i in sorted(order[lo : lo + 256], key=lambda i: -lengths[i]):
                if cur and (len(cur) + 1) * lengths[cur[0]] > self.budget:
                    batches.append(cur)
                    cur = []
                cur.append(i)
            batches.append(cur)
        rng.shuffle(batches)
        dl = DataLoader(self.train_dataset, batch_sampler=batches, collate_fn=self.data_collator)
        return self.accelerator.prepare(dl)


def train_phase(
    b: Bench, base, kind: str, *, gc_on: bool, liger: bool = False, need_liger: bool = True, budget: int = 0
) -> dict:
    """One training slice with a fresh adapter on ``base``; the adapter is removed again whatever happens."""
    model = add_lora(base, **LORA)
    try:
        return _train(b, base, model, kind, gc_on=gc_on, liger=liger, need_liger=need_liger, budget=budget)
    finally:
        model.unload()


def _train(
    b: Bench, base, model, kind: str, *, gc_on: bool, liger: bool, need_liger: bool, budget: int
) -> dict:
    a = b.a
    if gc_on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.disable_input_require_grads()  # one hook, not one per phase
        base.enable_input_require_grads()
    else:
        base.gradient_checkpointing_disable()
        base.disable_input_require_grads()
    liger_on = apply_liger(model) if liger else False
    if liger and need_liger and not liger_on:
        return {"skipped": "Liger needs CUDA and liger-kernel (the gpu extra)"}
    steps = a.warmup + a.steps
    rows = train_rows(b, max(steps * 8 * 4, 512), base.config.vocab_size)
    clock = StepClock(b)
    out_dir = Path(tempfile.mkdtemp())
    if kind == "baseline_hf":
        collate = Counting(right_pad)
        args = TrainingArguments(
            output_dir=str(out_dir),
            per_device_train_batch_size=8,
            learning_rate=2e-4,
            max_steps=steps,
            gradient_checkpointing=gc_on,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            bf16=b.cuda,
            use_cpu=not b.cuda,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock]
        )
    else:
        collate = Counting(LeftPadCollator(PAD))
        cfg = TrainConfig(
            epochs=1, learning_rate=2e-4, batch_size=8, lr_scheduler="constant", logging_steps=10_000
        )
        args = training_args(out_dir=out_dir, seed=0, device=b.device, dtype=b.dtype, **trainer_settings(cfg))
        args.max_steps, args.disable_tqdm = steps, True
        cls = CompletionTrainer
        if budget:
            cls = TokenBudgetTrainer
            cls.budget = budget
        trainer = cls(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock])
    b.reset_peak()
    trainer.train()
    # times[i] ends step i+1; the window (times[w-1], times[-1]] holds steps w+1..S, i.e. batches w..S-1.
    t0, t1 = clock.times[a.warmup - 1], clock.times[-1]
    timed = len(clock.times) - a.warmup
    tokens = sum(collate.tokens[a.warmup : a.warmup + timed])
    tok_s = tokens / (t1 - t0)
    total = base.num_parameters()
    peak = (
        next((v for k, v in PEAK_BF16.items() if k in torch.cuda.get_device_name()), None) if b.cuda else None
    )
    trainable, _ = model.get_nb_trainable_parameters()
    return {
        "tokens_per_s": round(tok_s, 1),
        "peak_gib": b.peak_gib(),
        "mfu": round(4 * total * tok_s / peak, 4) if peak else None,
        "steps_timed": timed,
        "tokens_timed": tokens,
        "rows_per_step": round(sum(collate.rows[a.warmup : a.warmup + timed]) / timed, 1),
        "gradient_checkpointing": gc_on,
        "liger": liger_on,
        "token_budget": budget or None,
        "trainable_params": trainable,
    }


def memory_allows_no_gc(b: Bench, model) -> tuple[bool, float]:
    """run.py's first-order estimate, for the longest batch of 8 rows, against 90% of the card."""
    from mathgpt.config import RunConfig
    from mathgpt.run import estimate_peak_memory_gib

    longest = max(p + t for p, t in b.pairs)
    cfg = RunConfig.model_validate(
        {
            "model": {"name": "x", "dtype": b.dtype, "gradient_checkpointing": False},
            "data": {"max_seq_len": longest},
            "train": {"batch_size": 8},
        }
    )
    c = model.config
    est = estimate_peak_memory_gib(
        cfg, model.num_parameters(), 42_000_000, c.hidden_size, c.num_hidden_layers, c.vocab_size
    )["total"]
    card = torch.cuda.get_device_properties(0).total_memory / 2**30 if b.cuda else float("inf")
    return est < 0.9 * card, round(est, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="every code path on CPU with a tiny random model")
    p.add_argument("--steps", type=int, default=12, help="timed optimizer steps per training phase")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--token-budget", type=int, default=4096, help="padded tokens per token-budget batch")
    p.add_argument(
        "--gen-new", type=int, default=512, help="max_new_tokens (experiments/mistral7b_lora.yaml)"
    )
    p.add_argument("--gen-static", type=int, default=64, help="problems for the static / drop batch-64 pair")
    p.add_argument("--gen-large", type=int, default=512, help="problems (= batch) for the large drop batch")
    p.add_argument("--gen-batch", type=int, default=64)
    p.add_argument("--fixed-new", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=450, help="skip phases that would end past this")
    a = p.parse_args()
    if a.tiny:
        a.steps, a.warmup, a.token_budget = 3, 2, 1024
        a.gen_new, a.gen_static, a.gen_large, a.gen_batch, a.fixed_new = 160, 12, 24, 8, 8
    b = Bench(a)
    dev = torch.cuda.get_device_name() if b.cuda else "cpu (tiny random model)"
    b.emit({"phase": "device", "name": dev, "torch": torch.__version__, "dtype": b.dtype})
    t = time.perf_counter()
    base = make_model(b)
    b.emit({"phase": "init_random", "s": round(time.perf_counter() - t, 1), "params": base.num_parameters()})
    no_gc, est = memory_allows_no_gc(b, base)
    b.emit({"phase": "memory_estimate", "no_checkpointing_gib": est, "checkpointing_needed": not no_gc})

    need = 20 if a.tiny else 45  # seconds a training phase takes on an H200 (with warm-up), to budget
    b.attempt("baseline_hf", train_phase, b, base, "baseline_hf", need_s=need, gc_on=True)
    b.attempt("project", train_phase, b, base, "project", need_s=need, gc_on=True)
    if no_gc:
        b.attempt("project_no_gc", train_phase, b, base, "project", need_s=need, gc_on=False)
    budget = dict(budget=a.token_budget)
    b.attempt("project_token_budget", train_phase, b, base, "project", need_s=need, gc_on=True, **budget)
    gen_model = add_lora(base, **LORA).eval()  # evaluation runs the unmerged adapter, as run.py does
    gen_need = 10 if a.tiny else 75  # a 64-row batch to ~450 tokens at ~0.1-0.15 s per step
    b.attempt("static_b64", gen_phase, b, gen_model, "static", a.gen_static, a.gen_batch, need_s=gen_need)
    b.attempt("drop_b64", gen_phase, b, gen_model, "drop", a.gen_static, a.gen_batch, need_s=gen_need)
    b.attempt(
        f"drop_b{a.gen_large}", gen_phase, b, gen_model, "drop", a.gen_large, a.gen_large, need_s=gen_need
    )
    gen_model.unload()
    # Liger patches the base in place, so its phases come after every phase that must run without it.
    b.attempt("project_liger", train_phase, b, base, "project", need_s=need, gc_on=True, liger=True)
    b.attempt(
        "project_all",
        train_phase,
        b,
        base,
        "project",
        need_s=need,
        gc_on=not no_gc,
        liger=True,
        need_liger=False,
        **budget,
    )
    b.attempt("fixed_eager", fixed_phase, b, base, False, need_s=20)
    b.attempt("fixed_compiled", fixed_phase, b, base, True, need_s=150 if not a.tiny else 30)
    summarize(b)


def summarize(b: Bench) -> None:
    r = {x["phase"]: x for x in b.results}
    ref = r.get("baseline_hf", {}).get("tokens_per_s")
    ratios = {
        k: round(v["tokens_per_s"] / ref, 2)
        for k, v in r.items()
        if ref and k.startswith("project") and "tokens_per_s" in v
    }
    static = r.get("static_b64", {}).get("useful_tokens_per_s")
    gen = {
        k: round(v["useful_tokens_per_s"] / static, 2)
        for k, v in r.items()
        if static and "useful_tokens_per_s" in v
    }
    b.emit({"phase": "summary", "train_x_baseline_hf": ratios, "gen_useful_x_static_b64": gen})


if __name__ == "__main__":
    main()
