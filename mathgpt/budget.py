"""Wall time before a run starts: a short timed probe on this machine, and the arithmetic that extrapolates it.

The dry run (``mathgpt run --dry-run``, ``mathgpt sweep --dry-run``) loads the run's real model, times a few
training steps on the run's own tokenized rows (batch size, sequence lengths, autocast) and a few decoding steps
of the continuous batch at the run's slot count and a mid-answer context, then scales them to the run:

- training: padded tokens of one epoch in the run's batching (``padded_tokens``) x epochs / probed padded
  tokens per second (a step's cost follows its padded shape, not its real tokens);
- evaluation, per point: prompt tokens / probed prefill tokens per second + decoding steps x probed seconds
  per step, with ``problems x tokens per answer / slots`` steps. Tokens per answer are the cap
  (``eval.max_new_tokens``: an upper bound, as every row then stays live to the end) unless predictions of the
  same model at the same cap are already on disk, whose mean is used (rows that end early leave the batch
  emptier, so its tail decodes fewer rows per step than the probe: a lower side of the truth).

``wall_time`` and ``padded_tokens`` are pure (tests/test_budget.py checks them against hand arithmetic);
``probe`` is the only part that loads a model. Library code: plain arguments, the recipe (``mathgpt.run``)
unpacks the config.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mathgpt.generate import PREFILL_ROWS, time_decode_steps, time_prefill
from mathgpt.jsonl import read_jsonl
from mathgpt.model import add_lora, load_model, weights_in
from mathgpt.train import IGNORE, LeftPadCollator, Tokenized, completion_loss

# Timed steps after one untimed warm-up each. On the 2-core AMD EPYC (2026-12-02) SmolLM2-135M's probe with
# these counts took about 30 s in all for experiments/cpu_smollm2.yaml (see README, "Dry run").
PROBE_TRAIN_STEPS = 3
PROBE_DECODE_STEPS = 3
# Seconds after which a phase (training, each decoding) stops adding timed steps (it keeps at least one): on a
# busy machine (load average 6 on 2 cores, 2026-12-02) one SmolLM2 decoding step of 150 slots took 10 s and a
# training step of 8 rows 38 s, and the full counts made a 349 s probe.
PROBE_PHASE_S = 10.0
# Above this many parameters the dry run does not probe (it says so): the probe's cost grows with the model,
# and a 7B model in fp32 on a CPU would need ~29 GB and minutes per training step.
PROBE_MAX_PARAMS = 1_000_000_000


@dataclass(frozen=True)
class Rates:
    """What the probe measured on this machine."""

    train_tok_per_s: float | None  # padded tokens per second of training steps; None: no training probed
    prefill_tok_per_s: float  # prompt tokens per second of one prefill group
    decode_step_s: dict[str, float]  # "base" / "finetuned" (adapter attached): seconds per decoding step
    slots: int  # live rows of the timed decoding steps
    context: int  # cache columns of the timed decoding steps
    load_s: float  # loading the model (a run pays it once)
    probe_s: float  # the whole probe, loading included
    train_rows: int  # rows per timed training step
    train_steps: int  # timed training steps (one more ran as warm-up)
    decode_steps: dict[str, int]  # timed decoding steps by kind (one more each ran as warm-up)
    prefill_rows: int  # prompts in the timed prefill
    load_avg: float  # the 1-minute load average when the probe started: other work on the CPU slows it


@dataclass(frozen=True)
class WallTime:
    """Estimated seconds of one run, by part."""

    train_s: float
    eval_s: float
    load_s: float
    eval_point_s: dict[str, float]  # one evaluation point of each kind ("base", "finetuned")

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.load_s


def padded_tokens(lengths: list[int], batch: int, order: str) -> int:
    """Tokens one epoch computes once every batch is left-padded to its longest row.

    ``order`` "sequential" batches the rows as listed; "grouped" batches them sorted by length, as
    ``train.WholeSetLengthSampler`` does (its random tie-breaking and batch order do not change the sum).
    """
    rows = sorted(lengths) if order == "grouped" else list(lengths)
    return sum(max(rows[i : i + batch]) * len(rows[i : i + batch]) for i in range(0, len(rows), batch))


def wall_time(
    *,
    train_padded_tokens: int,
    epochs: int,
    train_tok_per_s: float | None,
    points: dict[str, int],
    n_problems: int,
    prompt_tokens: int,
    tokens_per_answer: dict[str, float],
    slots: int,
    decode_step_s: dict[str, float],
    prefill_tok_per_s: float,
    load_s: float,
    static_cap: int | None = None,
) -> WallTime:
    """A run's wall time from probed rates (pure arithmetic; see the module docstring for the model).

    ``points`` counts evaluation points by kind ("base", "finetuned"); each scores ``n_problems`` (report and
    selection slices together) whose prompts hold ``prompt_tokens`` in all. ``static_cap``: evaluation decodes
    in static batches of ``slots`` (a sliding-window model whose prompt + cap exceed the window), each batch
    taken to that cap, since a batch runs to its longest row (an upper bound).

    Example: 2048 padded tokens x 2 epochs at 512 tok/s = 8 s of training; a fine-tuned point of 100 problems x
    64 tokens on 50 slots is 128 steps x 0.25 s = 32 s plus 6000 prompt tokens at 1000 tok/s = 6 s.
    """
    train_s = 0.0
    if train_padded_tokens and epochs:
        if not train_tok_per_s:
            raise ValueError("a run that trains needs a probed training rate")
        train_s = train_padded_tokens * epochs / train_tok_per_s
    per_point = {}
    for kind, n in points.items():
        if not n:
            continue
        if static_cap:
            steps = math.ceil(n_problems / slots) * static_cap
        else:
            steps = n_problems * tokens_per_answer[kind] / slots
        per_point[kind] = prompt_tokens / prefill_tok_per_s + steps * decode_step_s[kind]
    eval_s = sum(points[kind] * s for kind, s in per_point.items())
    return WallTime(train_s, eval_s, load_s, per_point)


def recorded_tokens_per_answer(
    root: Path, model_name: str, max_new_tokens: int
) -> dict[str, tuple[float, int]]:
    """Mean generated tokens per answer, by kind ("base" / "finetuned"), over the predictions already under
    ``root`` (a run folder or a study's) of runs of ``model_name`` at this ``max_new_tokens``; with the number
    of answers each mean is over. Runs at another cap or of another model are left out (their lengths would
    not be this run's)."""
    sums: dict[str, list[int]] = {}
    if not root.is_dir():
        return {}
    for pred in sorted(root.rglob("predictions.jsonl")):
        cfg_path = pred.parent / "config.yaml"
        if not cfg_path.is_file():
            continue
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        model = (cfg.get("model") or {}).get("name")
        cap = (cfg.get("eval") or {}).get("max_new_tokens")
        if model != model_name or cap != max_new_tokens:
            continue
        for row in read_jsonl(pred):
            if isinstance(row.get("n_tokens"), int) and row.get("model") in ("base", "finetuned"):
                total = sums.setdefault(row["model"], [0, 0])
                total[0] += row["n_tokens"]
                total[1] += 1
    return {kind: (s / n, n) for kind, (s, n) in sums.items() if n}


def time_training(
    model,
    batches: list[list[Tokenized]],
    *,
    pad_id: int,
    mixed_precision: str,
    max_grad_norm: float,
    budget_s: float = float("inf"),
) -> tuple[float, int]:
    """(padded tokens per second, steps timed) of optimizer steps on ``batches``: the first one untimed
    (warm-up), then the others until ``budget_s`` has passed (at least one).

    Each step is what CompletionTrainer runs: the completion loss under the run's autocast, backward, gradient
    clipping, an AdamW step on the trainable (LoRA) parameters.
    """
    collate = LeftPadCollator(pad_id)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    model.train()
    warm = 1 if len(batches) > 1 else 0  # a single batch is timed cold
    start, tokens, timed = time.perf_counter(), 0, 0
    for i, rows in enumerate(batches):
        if i == warm:
            start = time.perf_counter()
        elif timed and time.perf_counter() - start >= budget_s:
            break
        inputs = {k: v.to(device) for k, v in collate(rows).items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=mixed_precision == "bf16"):
            loss = completion_loss(model, inputs)
        (loss / (inputs["labels"] != IGNORE).sum()).backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warm:
            tokens += inputs["input_ids"].numel()
            timed += 1
    model.eval()
    return tokens / (time.perf_counter() - start), timed


def probe_batches(rows: list[Tokenized], batch: int, order: str, steps: int) -> list[list[Tokenized]]:
    """``steps`` + 1 batches of the run's own rows as its order forms them: the first ones of a sequential
    run, and for a grouped run batches spread evenly over the length-sorted list (short to long)."""
    if order == "grouped":
        rows = sorted(rows, key=lambda r: len(r["input_ids"]))
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    if order == "grouped" and len(batches) > steps + 1:
        stride = (len(batches) - 1) / steps
        batches = [batches[round(k * stride)] for k in range(steps + 1)]
    return batches[: steps + 1]


def probe(
    model_name: str,
    *,
    device: str,
    model_settings: dict,
    lora_settings: dict,
    train_batches: list[list[Tokenized]],
    mixed_precision: str,
    max_grad_norm: float,
    prompt_ids: list[list[int]],
    pad_id: int,
    slots: int,
    context: int,
    eval_dtype: str = "float32",
    decode_steps: int = PROBE_DECODE_STEPS,
) -> Rates:
    """Load ``model_name`` as the run does and time its prefill and its decoding steps with the weights in
    ``eval_dtype`` (base, then with a fresh LoRA adapter attached, as fine-tuned points decode) and its
    training steps (``train_batches``; none: the run does not train)."""
    t0, load_avg = time.perf_counter(), os.getloadavg()[0]
    model = load_model(model_name, device=device, **model_settings)
    load_s = time.perf_counter() - t0
    by_length = sorted(prompt_ids, key=len, reverse=True)
    mid = max(0, len(by_length) // 2 - PREFILL_ROWS // 2)
    group = by_length[mid : mid + PREFILL_ROWS]
    decode = getattr(torch, eval_dtype)
    with weights_in(model, decode):
        time_prefill(model, group[:2], pad_id)  # warm-up
        prefill_rate = sum(map(len, group)) / time_prefill(model, group, pad_id)
        step_s, n_decode = {}, {}
        step_s["base"], n_decode["base"] = time_decode_steps(
            model, rows=slots, context=context, steps=decode_steps, budget_s=PROBE_PHASE_S
        )
    train_rate, n_train = None, 0
    if train_batches:
        model = add_lora(model, **lora_settings)
        with weights_in(model, decode):
            step_s["finetuned"], n_decode["finetuned"] = time_decode_steps(
                model, rows=slots, context=context, steps=decode_steps, budget_s=PROBE_PHASE_S
            )
        train_rate, n_train = time_training(
            model,
            train_batches,
            pad_id=pad_id,
            mixed_precision=mixed_precision,
            max_grad_norm=max_grad_norm,
            budget_s=PROBE_PHASE_S,
        )
    del model
    return Rates(
        train_tok_per_s=train_rate,
        prefill_tok_per_s=prefill_rate,
        decode_step_s=step_s,
        slots=slots,
        context=context,
        load_s=load_s,
        probe_s=time.perf_counter() - t0,
        train_rows=len(train_batches[0]) if train_batches else 0,
        train_steps=n_train,
        decode_steps=n_decode,
        prefill_rows=len(group),
        load_avg=load_avg,
    )


def fmt_duration(seconds: float) -> str:
    """``~45 s``, ``~12 min``, ``~3.4 h``: an estimate's precision, not a stopwatch's."""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def fmt_bytes(n: float) -> str:
    """``3.2 GiB``, ``12.5 MiB``: one decimal in the largest unit under 1024."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_count(n: float) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:.0f}"
