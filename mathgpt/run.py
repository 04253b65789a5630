"""One experiment, top to bottom: data -> base model -> evaluate -> LoRA fine-tune (evaluating at each point) ->
files.

This is the recipe a sweep trial runs in its own process. Everything it writes is described in
docs/CONTRACTS.md; `epochs.jsonl` gets one line per evaluation point, appended and flushed at once so a sweep
(or a person) can follow a run while it trains, and a killed run keeps what it had finished.

Evaluation never changes the weights that training continues from: the adapter is never merged in place (a
bf16 merge/unmerge is not an exact round trip), and the random state is restored after every evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import set_seed

from mathgpt import budget, contamination, data, general, multiple_choice
from mathgpt.config import (
    ConfigError,
    EvalConfig,
    LoraSettings,
    ModelConfig,
    RunConfig,
    TrainConfig,
    dump_config,
)
from mathgpt.evaluate import EvalSet, evaluate
from mathgpt.generate import fits_window, slot_cache_bytes, slots_within
from mathgpt.machine import describe, machine_info, native_bf16
from mathgpt.model import (
    add_lora,
    cast_weights,
    load_model,
    load_tokenizer,
    meta_model,
    model_config,
    resolve_device,
    weights_in,
)
from mathgpt.prompts import format_prompt, resolved_format
from mathgpt.record import Point, knob_values
from mathgpt.scored import Scored, point_line, prediction_rows, sum_gen, summary
from mathgpt.track import start_run
from mathgpt.train import tokenize, train, training_args

# Largest model whose adapter is merged into a copy for evaluation. 0: never (no extra memory). On this CPU,
# under load, SmolLM2-135M evaluating 24 problems x 48 tokens took 52.6 s from a merged deepcopy against 10.6 s
# unmerged in one run, and in a second run (16 problems) the merged copy ran 2.4 s/step against 3.0 unmerged:
# not settled by these noisy measurements (bench/bench_train.py --eval-merge); rerun on a quiet machine.
COPY_MERGE_MAX_BYTES = 0


# --- data ------------------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """What a run trains and evaluates on. ``report`` and ``select`` hold one EvalSet per ``data.eval`` name."""

    train: list[data.Example]
    report: list[EvalSet]
    select: list[EvalSet]  # empty when data.select_size is 0
    choices: dict[str, tuple[general.ChoiceItem, ...]]  # the eval.general slices by set name
    dropped: int = 0  # training rows dropped as contaminated
    n_train_by_source: dict[str, int] = field(default_factory=dict)
    shots: list[data.Example] = field(
        default_factory=list
    )  # eval.few_shot's solved examples, in prompt order

    def fingerprints(self) -> dict[str, str | None]:
        sel = [ex for s in self.select for ex in s.examples]
        return {
            "train": data.fingerprint(self.train) if self.train else None,
            "eval": data.fingerprint([ex for s in self.report for ex in s.examples]),
            "select": data.fingerprint(sel) if sel else None,
        }


def eval_slices(cfg: RunConfig) -> tuple[list[EvalSet], list[EvalSet]]:
    """(report slices, selection slices), drawn with ``data.eval_seed`` only: the training seed never picks them.

    The selection slice comes from what the report slice left, with its own seed (eval_seed + 1), so the two
    are disjoint and a study optimises on problems it never makes claims on.
    """
    d = cfg.data
    report, select = [], []
    for name in d.eval:
        pool = data.load(name, d.data_dir)
        if d.eval_size > len(pool):  # never clamped: the report would claim a slice it did not score
            raise data.DataError(
                f"{name}: data.eval_size {d.eval_size} is more than its {len(pool)} problems"
            )
        rep = data.held_out_slice(pool, d.eval_size, d.eval_seed)
        report.append(EvalSet(name, rep))
        if d.select_size:
            taken = {ex.id for ex in rep}
            rest = [ex for ex in pool if ex.id not in taken]
            if d.select_size > len(rest):
                raise data.DataError(
                    f"{name}: data.select_size {d.select_size} is more than the {len(rest)} problems "
                    f"data.eval_size {d.eval_size} leaves of {len(pool)}"
                )
            select.append(EvalSet(name, data.held_out_slice(rest, d.select_size, d.eval_seed + 1)))
    return report, select


def few_shot_examples(cfg: RunConfig, held: list[data.Example]) -> list[data.Example]:
    """``eval.few_shot`` solved examples from the training pool, drawn with ``data.eval_seed`` (never the
    training seed: every trial's baseline shows the same ones), none of them an evaluation problem or a
    near-copy of one (the training set's contamination check)."""
    d, k = cfg.data, cfg.eval.few_shot
    pool = data.load(d.train, d.data_dir, sources=d.sources)
    ids = {ex.id for ex in held}
    bad = contamination.contaminated_ids(pool, held)
    clean = [ex for ex in pool if ex.id not in ids and ex.id not in bad and ex.solution.strip()]
    if k > len(clean):
        raise data.DataError(f"{d.train}: eval.few_shot {k} is more than its {len(clean)} clean examples")
    return data.held_out_slice(clean, k, d.eval_seed)


def load_data(cfg: RunConfig) -> RunData:
    """Evaluation slices, the few-shot examples and the training subset (a nested prefix under ``seed``)."""
    report, select = eval_slices(cfg)
    d = cfg.data
    e = cfg.eval  # the general sets are read now: an unknown set fails before any file is written
    choices = multiple_choice.general_slices(e.general, e.general_size, d.eval_seed, d.data_dir)
    held = [ex for s in report + select for ex in s.examples]
    shots = few_shot_examples(cfg, held) if e.few_shot else []
    if d.train_size == 0 or cfg.train.epochs == 0:
        return RunData([], report, select, choices, shots=shots)
    pool = data.load(d.train, d.data_dir, sources=d.sources)
    dropped = 0
    if d.drop_contaminated:
        bad = contamination.contaminated_ids(pool, held)
        dropped = len(bad)
        pool = [ex for ex in pool if ex.id not in bad]
    rows = general.mix_train_set(pool, d.train_size, cfg.seed, d.mix, d.data_dir)
    return RunData(rows, report, select, choices, dropped, general.count_by_source(rows), shots)


# --- the recipe unpacks its config: library functions below take plain arguments -----------------------------


def model_settings(model: ModelConfig) -> dict:
    """``load_model``'s keyword arguments from a run's ``model`` section (the device is resolved apart)."""
    return {
        "dtype": model.dtype,
        "quantization": model.quantization,
        "adapter": model.adapter,
        "gradient_checkpointing": model.gradient_checkpointing,
    }


def lora_settings(lora: LoraSettings) -> dict:
    """``add_lora``'s keyword arguments from a run's ``lora`` section (alpha resolved: null means 2r)."""
    return {
        "r": lora.r,
        "alpha": lora.lora_alpha,
        "dropout": lora.dropout,
        "target_modules": lora.target_modules,
    }


def trainer_settings(train: TrainConfig) -> dict:
    """``training_args``' keyword arguments from a run's ``train`` section (order and precision go to ``train``)."""
    return train.model_dump(exclude={"min_steps", "order", "mixed_precision"})


def resolved_precision(setting: str, device: str) -> str:
    """``train.mixed_precision`` as it runs on ``device``: "auto" is bf16 where bf16 is native, else "no"."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device) else "no"


def resolved_eval_dtype(setting: str, device: str, model: ModelConfig) -> str:
    """``eval.dtype`` as it runs: "auto" is bfloat16 for an unquantized fp32 model on a CPU with native bf16,
    else the model's own dtype."""
    if setting != "auto":
        return setting
    bf16 = (
        device == "cpu" and model.dtype == "float32" and model.quantization == "none" and native_bf16(device)
    )
    return "bfloat16" if bf16 else model.dtype


def resolve_precision(cfg: RunConfig, device: str) -> RunConfig:
    """``cfg`` with ``train.mixed_precision`` (``resolved_precision``) and ``eval.dtype``
    (``resolved_eval_dtype``) resolved for ``device``, so config.yaml, the point records and the dry run's
    probe all carry the values that run."""
    mixed = resolved_precision(cfg.train.mixed_precision, device)
    decode = resolved_eval_dtype(cfg.eval.dtype, device, cfg.model)
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"mixed_precision": mixed}),
            "eval": cfg.eval.model_copy(update={"dtype": decode}),
        }
    )


def check_steps(cfg: RunConfig, n_train: int) -> None:
    """Refuse a run whose epoch has fewer than ``train.min_steps`` optimizer steps (never re-batch it)."""
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    steps = n_train // per_step
    if n_train and cfg.train.epochs and steps < cfg.train.min_steps:
        raise ConfigError(
            f"{n_train} training examples at train.batch_size {cfg.train.batch_size} x grad_accum "
            f"{cfg.train.grad_accum} give {steps} optimizer steps per epoch, fewer than train.min_steps "
            f"{cfg.train.min_steps}; lower the batch size or train.min_steps"
        )


# --- evaluation that leaves the trained weights alone -----------------------------------------------------------


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's random state afterwards: evaluation must not move training's."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@contextlib.contextmanager
def eval_view(model, quantization: str, dtype: str) -> Iterator[object]:
    """The model to generate with, its weights in ``dtype`` (``weights_in``): the adapter merged into a copy
    (small full-precision models), else the peft model itself with the adapter unmerged. The trained weights
    are never written to either way."""
    merge = (
        hasattr(model, "merge_and_unload")
        and quantization == "none"
        and _param_bytes(model) <= COPY_MERGE_MAX_BYTES
    )
    if not merge:
        with weights_in(model, getattr(torch, dtype)) as view:
            yield view
        return
    merged = copy.deepcopy(model).merge_and_unload()
    cast_weights(merged, getattr(torch, dtype))  # as weights_in casts: parameters only
    try:
        yield merged
    finally:
        del merged


def score(model, tokenizer, cfg: RunConfig, rd: RunData, desc: str) -> Scored:
    """Report and selection slices in one generate call (one batch fills better than two), leaving the
    model's weights and the random state exactly as they were."""
    with preserved_rng(), eval_view(model, cfg.model.quantization, cfg.eval.dtype) as view:
        res = evaluate(
            view,
            tokenizer,
            rd.report + rd.select,
            prompt_format=cfg.data.prompt_format,
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            desc=desc,
            shots=[(ex.question, ex.solution) for ex in rd.shots],
            cache_budget=cache_budget_bytes(cfg.eval),
        )
    n_rep = sum(len(s.examples) for s in rd.report)
    return Scored(res.records[:n_rep], res.records[n_rep:], res)


# --- the run ----------------------------------------------------------------------------------------------------


class RunFiles:
    """The run directory's files; appends are flushed at once."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        for name in ("epochs.jsonl", "predictions.jsonl"):
            (out / name).write_text("")

    def append(self, name: str, rows: list[dict]) -> None:
        with open(self.out / name, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def write_json(self, name: str, obj: dict) -> None:
        (self.out / name).write_text(json.dumps(obj, indent=2) + "\n")


def point_schedule(cfg: RunConfig) -> tuple[set[int], set[int]]:
    """(optimizer steps, epoch ends) after which a point is evaluated."""
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    if cfg.eval.at_examples:
        # One epoch (checked in config.py); its end is a point too, so the saved adapter is the last point's.
        return {k // per_step for k in cfg.eval.at_examples}, {1}
    epochs = range(1, cfg.train.epochs + 1) if cfg.eval.every_epoch else [cfg.train.epochs]
    return set(), set(epochs)


def available_memory_bytes(device: str) -> int:
    """Memory a new allocation can take now: free accelerator memory, or the kernel's MemAvailable."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62  # no /proc (not Linux): no bound from here


def dtype_bytes(m: ModelConfig) -> int:
    """Bytes per element the model trains in: activations (NF4 computes in 16 bits)."""
    return 2 if m.quantization == "nf4" else {"float32": 4, "bfloat16": 2, "float16": 2}[m.dtype]


def cache_dtype_bytes(cfg: RunConfig) -> int:
    """Bytes per element of the slot cache: keys and values come out in the decoding dtype (``eval.dtype``,
    resolved by ``resolve_precision``; NF4 computes in 16 bits)."""
    if cfg.model.quantization == "nf4":
        return 2
    if cfg.eval.dtype == "auto":
        raise ValueError("cache_dtype_bytes needs eval.dtype resolved (resolve_precision)")
    return {"float32": 4, "bfloat16": 2, "float16": 2}[cfg.eval.dtype]


def cache_budget_bytes(e: EvalConfig) -> int | None:
    """``eval.slot_cache_gib`` in bytes (``None``: no ceiling)."""
    return None if e.slot_cache_gib is None else int(e.slot_cache_gib * 2**30)


def check_generation(cfg: RunConfig, rd: RunData, device: str) -> None:
    """Refuse (one line) an ``eval.max_new_tokens`` beyond the model's context or whose slot cache cannot fit.

    The cache estimate counts only ``max_new_tokens`` columns (the prompts add more), so it is a lower
    bound: a refused run would have been killed for memory once generation started.
    """
    e = cfg.eval
    config = meta_model(cfg.model.name).config
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context and e.max_new_tokens >= context:
        raise ConfigError(
            f"eval.max_new_tokens {e.max_new_tokens} does not fit the context of {context} tokens of "
            f"{cfg.model.name} (with the prompt); use fewer"
        )
    n_prompts = sum(len(s.examples) for s in rd.report + rd.select)
    db = cache_dtype_bytes(cfg)
    slots = slots_within(config, e.batch_size, n_prompts, e.max_new_tokens, db, cache_budget_bytes(e))
    need = slot_cache_bytes(config, slots, e.max_new_tokens, db, n_prompts > slots)
    free = available_memory_bytes(device)
    if need > free:
        raise ConfigError(
            f"eval.max_new_tokens {e.max_new_tokens} x {slots} rows needs a slot cache of at least "
            f"{need / 2**30:.1f} GiB; {free / 2**30:.1f} GiB is free on {device}: lower eval.max_new_tokens, "
            "eval.batch_size or eval.slot_cache_gib"
        )


def run_experiment(cfg: RunConfig, out_dir: Path) -> dict:
    """Run ``cfg`` and write its files to ``out_dir``; returns what metrics.json holds."""
    t0 = time.perf_counter()
    device = resolve_device(
        cfg.model.device, cfg.model.dtype, cfg.model.quantization
    )  # refuse CUDA-only settings before touching any file
    cfg = resolve_precision(cfg, device)
    set_seed(cfg.seed)  # Python, NumPy and torch (and CUDA) generators
    rd = load_data(cfg)
    check_steps(cfg, len(rd.train))
    tokenizer = load_tokenizer(cfg.model.name)  # a bad model name fails here, before any file is written
    check_generation(cfg, rd, device)  # before any file, not minutes into the first evaluation
    files = RunFiles(Path(out_dir))
    # the numbers depend on where they ran (training is not bit-reproducible across CPU models)
    machine = machine_info() | {
        "dtype": cfg.model.dtype,
        "mixed_precision": cfg.train.mixed_precision,
        "eval_dtype": cfg.eval.dtype,
    }
    (files.out / "config.yaml").write_text(  # the config that runs: nothing is re-batched
        f"# machine: {describe(machine)}\n" + dump_config(cfg)
    )
    fingerprint = rd.fingerprints()
    tracker = start_run(
        project=cfg.tracking.project,
        name=cfg.name,
        group=cfg.tracking.group,
        dir=files.out,
        config={
            **cfg.model_dump(mode="json"),
            "fingerprint": fingerprint,
            "n_train": len(rd.train),
            "contaminated_dropped": rd.dropped,
            "machine": machine,
        },
        mode=cfg.tracking.mode,
    )
    try:
        metrics = _run(cfg, files, device, tokenizer, rd, tracker, machine)
        metrics.update(
            n_train=len(rd.train),
            n_train_by_source=rd.n_train_by_source,
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            grad_accum=cfg.train.grad_accum,
            fingerprint=fingerprint,
            contaminated_dropped=rd.dropped,
            wall_s=round(time.perf_counter() - t0, 2),
            device=device,
            peak_rss_mb=peak_rss_mb(),
            machine=machine,
        )
        files.write_json("metrics.json", metrics)
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        Console(highlight=False, soft_wrap=True).print(results_table(metrics))
        return metrics
    finally:
        tracker.finish()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux's ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _log_point(
    tracker, files: RunFiles, line: Point, scored: Scored, model_name: str, table_rows: int
) -> None:
    files.append("epochs.jsonl", [line.dump()])
    tracker.log_eval(line)  # x-axes: line.train_examples and line.epoch
    if table_rows:
        cols = ["model", "point", "id", "eval_set", "question", "gold", "output", "extracted", "correct"]
        rows = [[model_name, line.point] + [r[c] for c in cols[2:]] for r in scored.report[:table_rows]]
        tracker.log_table(f"predictions/{model_name}_point{line.point}", cols, rows)


class PointRecorder:
    """Evaluates and records each point of one run: both slices in one generate call, the general sets, then the
    epochs.jsonl line, its predictions and its W&B rows. The time it spends is evaluation time, kept apart from
    training time (``train_wall``). Called by ``train`` at each scheduled point (``on_point``)."""

    def __init__(self, cfg: RunConfig, files: RunFiles, tracker, tokenizer, rd: RunData, machine: dict):
        self.cfg, self.files, self.tracker, self.tokenizer, self.rd = cfg, files, tracker, tokenizer, rd
        self.machine = machine  # where it ran (mathgpt.machine): every point carries it
        self.steps = {ex.id: ex.steps for s in rd.report + rd.select for ex in s.examples}
        self.fingerprints = rd.fingerprints()
        self.knobs = knob_values(cfg)
        self.lines: list[Point] = []
        self.eval_s = 0.0
        self.t_train = time.perf_counter()

    def train_wall(self) -> float:
        return time.perf_counter() - self.t_train - self.eval_s

    def base(self, model) -> Point:
        info = {"train_examples": 0, "optimizer_steps": 0, "train_tokens": 0, "loss": None}
        scored = score(model, self.tokenizer, self.cfg, self.rd, "base model")
        return self._record(scored, "base", info, 0.0, self._general(model))

    def __call__(self, model, info: dict) -> None:
        t, train_wall = time.perf_counter(), self.train_wall()
        model.eval()
        scored = score(model, self.tokenizer, self.cfg, self.rd, f"{info['train_examples']} examples")
        general_scores = self._general(model)
        self.eval_s += time.perf_counter() - t  # general scoring is evaluation time, not training time
        line = self._record(scored, "finetuned", info, train_wall, general_scores)
        print(
            f"{line.train_examples} examples (epoch {line.epoch:.2f}, {line.optimizer_steps} steps): "
            f"accuracy {line.accuracy:.3f} [{line.ci95[0]:.3f}, {line.ci95[1]:.3f}]",
            flush=True,
        )

    def _general(self, model) -> dict:
        """General-ability multiple choice (forgetting) at this point; {} when eval.general is empty."""
        if not self.rd.choices:
            return {}
        with preserved_rng():
            return multiple_choice.evaluate_general(
                model, self.tokenizer, self.rd.choices, self.cfg.eval.batch_size
            )

    def _record(self, scored: Scored, model_name: str, info: dict, train_wall: float, general: dict) -> Point:
        line = point_line(
            len(self.lines) + (0 if self.cfg.eval.base else 1),
            scored,
            info,
            n_train=len(self.rd.train),
            fingerprints=self.fingerprints,
            train_wall_s=train_wall,
            knobs=self.knobs,
            machine=self.machine,
            general=general,
            prompt={
                "format": resolved_format(self.cfg.data.prompt_format, self.tokenizer),
                "few_shot": len(self.rd.shots),
                "shot_ids": [ex.id for ex in self.rd.shots],
                "max_new_tokens": self.cfg.eval.max_new_tokens,
            },
        )
        _log_point(
            self.tracker, self.files, line, scored, model_name, self.cfg.tracking.predictions_table_rows
        )
        self.files.append("predictions.jsonl", prediction_rows(line, scored, model_name, self.steps))
        self.lines.append(line)
        return line


def _run(
    cfg: RunConfig, files: RunFiles, device: str, tokenizer, rd: RunData, tracker, machine: dict
) -> dict:
    model = load_model(cfg.model.name, device=device, **model_settings(cfg.model))
    if not rd.train and not cfg.eval.general and cfg.model.quantization == "none":
        # Nothing trains (a baseline): the weights can be cast once, in place, to the decoding dtype, and the
        # model.dtype copy that weights_in would keep beside them is not held (2.5 GB for Qwen2.5-0.5B in fp32).
        # The tensors are the ones weights_in would make (cast_weights both), so the answers are the same.
        cast_weights(model, getattr(torch, cfg.eval.dtype))
    points = PointRecorder(cfg, files, tracker, tokenizer, rd, machine)
    base = points.base(model) if cfg.eval.base else None
    out = {"base": summary(base), "finetuned": None, "n_eval": sum(len(s.examples) for s in rd.report)}
    if not rd.train:
        out.update(_totals(points.lines, 0, 0.0))
        return out

    model = add_lora(model, **lora_settings(cfg.lora))
    trainable, total = model.get_nb_trainable_parameters()
    rows = tokenize(rd.train, tokenizer, cfg.data.prompt_format, cfg.data.max_seq_len)
    points.t_train, points.eval_s = time.perf_counter(), 0.0  # training starts now

    def on_log(logs: dict, step: int, examples_seen: int) -> None:
        # the rows the trainer has run (HF's fractional epoch counts batches, not rows)
        tracker.log_train(step, examples_seen, logs)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}")

    if cfg.train.mixed_precision == "bf16" and not native_bf16(device):
        print(
            f"warning: train.mixed_precision bf16 on a {device} without native bf16 (AMX/AVX512-BF16): it is "
            "emulated (~27x slower per step on an AVX2-only CPU, bench/RESULTS.md); 'auto' would pick 'no' here"
        )
    args = training_args(
        out_dir=files.out / "trainer",
        seed=cfg.seed,
        device=device,
        dtype=cfg.model.dtype,
        **trainer_settings(cfg.train),
    )
    point_steps, point_epochs = point_schedule(cfg)
    train(
        model,
        tokenizer,
        rows,
        args,
        order=cfg.train.order,
        mixed_precision=cfg.train.mixed_precision,
        on_point=points,
        point_steps=point_steps,
        point_epochs=point_epochs,
        on_log=on_log,
    )
    train_wall = points.train_wall()
    model.save_pretrained(files.out / "adapter")
    if cfg.tracking.log_adapter:
        tracker.log_artifact(files.out / "adapter", name=f"{cfg.name}-adapter", type="lora-adapter")
    lines = points.lines
    out["finetuned"] = summary(lines[-1])
    out.update(
        trainable_params=trainable,
        total_params=total,
        **_totals(lines, lines[-1].train_tokens, train_wall),
    )
    return out


def _totals(lines: list[Point], train_tokens: int, train_wall: float) -> dict:
    eval_s = sum(ln.eval_wall_s for ln in lines)
    return {
        "points": [ln.summary_line() for ln in lines],
        "train_tokens": train_tokens,
        "train_tokens_per_s": round(train_tokens / train_wall, 2) if train_tokens else None,
        "train_wall_s": round(train_wall, 2),
        "eval_wall_s": round(eval_s, 2),
        "gen": sum_gen(lines),
        "checker_version": lines[-1].checker_version if lines else None,
    }


def results_table(m: dict) -> Table:
    """The run's last lines on the console: base and fine-tuned accuracy with their intervals, and the run."""

    def cell(s: dict | None) -> str:
        return f"{s['accuracy']:.3f}  [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s else "-"

    caption = (
        f"n_eval={m.get('n_eval')} n_train={m.get('n_train')} epochs={m.get('epochs')} batch={m.get('batch_size')} "
        f"train tok/s={m.get('train_tokens_per_s')} wall={m.get('wall_s')}s"
    )
    table = Table("model", "accuracy  [95% CI]", box=None, caption=caption, caption_justify="left")
    table.add_row("base", cell(m.get("base")))
    table.add_row("fine-tuned", cell(m.get("finetuned")))
    return table


# --- dry run: size a config without weights ------------------------------------------------------------------


def estimate_peak_memory_gib(
    cfg: RunConfig, n_params: int, n_trainable: int, hidden: int, layers: int, vocab: int
) -> dict[str, float]:
    """A first-order estimate of peak accelerator memory for one training step, in GiB.

    weights (bytes per parameter: 2 for bf16/fp16, 4 for fp32, ~0.56 for NF4 with double quantization)
    + LoRA weights, gradients and AdamW moments in fp32 (16 bytes per trainable parameter)
    + activations kept for backward: ~34 * seq * batch * hidden bytes per layer in 16-bit without
      checkpointing (Korthikanti et al. 2022, attention scores excluded as SDPA does not store them),
      2 * seq * batch * hidden per layer with checkpointing
    + logits of the target positions in fp32 (seq * batch * vocab * 4, twice for the softmax gradient).
    """
    bytes_per = dtype_bytes(cfg.model)
    weight_bytes = 0.5625 * n_params if cfg.model.quantization == "nf4" else bytes_per * n_params
    tokens = cfg.data.max_seq_len * cfg.train.batch_size
    act_per_layer = (2 if cfg.model.gradient_checkpointing else 34) * tokens * hidden * (bytes_per / 2)
    gib = 2**30
    parts = {
        "weights": weight_bytes / gib,
        "lora_and_optimizer": 16 * n_trainable / gib,
        "activations": act_per_layer * layers / gib,
        "logits": 2 * 4 * tokens * vocab / gib,
    }
    parts["total"] = sum(parts.values())
    return parts


def dry_run(cfg: RunConfig, *, probe: bool = True, runs_dir: Path | None = None) -> str:
    """Trainable parameters and a memory estimate from the architecture alone (meta device: no weights), and
    with ``probe`` a wall-time estimate from a short timed probe on this machine (``wall_time_estimate``);
    ``runs_dir`` is where earlier predictions of this run may lie (default ``runs/<name>``)."""
    model = meta_model(cfg.model.name)
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    peft_model = add_lora(model, **lora_settings(cfg.lora))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    mem = estimate_peak_memory_gib(cfg, total, trainable, c.hidden_size, c.num_hidden_layers, c.vocab_size)
    mixed, decode = cfg.train.mixed_precision, cfg.eval.dtype
    autocast = _auto_line(cfg, mixed, lambda d: resolved_precision(mixed, d))
    decoding = _auto_line(cfg, decode, lambda d: resolved_eval_dtype(decode, d, cfg.model))
    lines = [
        f"model          {cfg.model.name} ({c.model_type}, {c.num_hidden_layers} layers, hidden {c.hidden_size})",
        f"parameters     {total:,} total, {trainable:,} trainable LoRA ({100 * trainable / total:.3f}%)",
        f"lora           r={cfg.lora.r} alpha={cfg.lora.lora_alpha:g} targets={cfg.lora.target_modules}",
        f"precision      {cfg.model.dtype}, quantization {cfg.model.quantization}, "
        f"training autocast {autocast}, decoding {decoding}",
        f"batch          {cfg.train.batch_size} x {cfg.data.max_seq_len} tokens, grad_accum {cfg.train.grad_accum}",
        "peak memory    ~{total:.1f} GiB (weights {weights:.1f}, LoRA+AdamW {lora_and_optimizer:.2f}, "
        "activations {activations:.1f}, logits {logits:.1f}) - an estimate".format(**mem),
    ]
    if probe:
        _, wall_lines = wall_time_estimate(cfg, runs_dir or Path("runs") / cfg.name, n_params=total)
        lines += wall_lines
    return "\n".join(lines)


def _auto_line(cfg: RunConfig, setting: str, resolve: Callable[[str], str]) -> str:
    """A dry-run value as set, or "auto -> what it resolves to on this device" (``resolve(device)``)."""
    if setting != "auto":
        return setting
    try:
        device = resolve_device(cfg.model.device, cfg.model.dtype, cfg.model.quantization)
    except ConfigError:
        return "auto"
    return f"auto -> {resolve(device)} on {device}"


def finetuned_points(cfg: RunConfig, n_train: int) -> int:
    """Evaluation points after training starts: one per scheduled step or epoch end, at most one per step."""
    if not n_train or not cfg.train.epochs:
        return 0
    steps, epochs = point_schedule(cfg)
    if cfg.eval.at_examples:
        # Trainer's optimizer steps per epoch: its batches (the last one partial) per grad_accum, at least 1
        per_epoch = max(1, math.ceil(n_train / cfg.train.batch_size) // cfg.train.grad_accum)
        return len(steps | {per_epoch})
    return len(epochs)


def wall_time_estimate(
    cfg: RunConfig, runs_dir: Path, *, n_params: int, rates_cache: dict | None = None
) -> tuple[budget.WallTime | None, list[str]]:
    """The run's estimated wall time on this machine and the dry run's lines saying how it was made.

    Loads the run's data and tokenizer, tokenizes its training rows and evaluation prompts, and probes the
    model (``budget.probe``; a ``rates_cache`` shares one probe between runs that differ only in what the
    probe does not time, e.g. a sweep's seeds and data sizes). Returns (None, one line) when it cannot probe
    here: CUDA-only settings on this machine, or a model above ``budget.PROBE_MAX_PARAMS``.
    """
    try:
        device = resolve_device(cfg.model.device, cfg.model.dtype, cfg.model.quantization)
    except ConfigError as err:
        return None, [f"wall time      not probed here: {err}"]
    cfg = resolve_precision(cfg, device)
    if n_params > budget.PROBE_MAX_PARAMS:
        return None, [
            f"wall time      not probed: {n_params / 1e9:.1f}B parameters is more than the probe's "
            f"{budget.PROBE_MAX_PARAMS / 1e9:.1f}B"
        ]
    rd = load_data(cfg)
    tokenizer = load_tokenizer(cfg.model.name)
    d, e, t = cfg.data, cfg.eval, cfg.train
    rows = tokenize(rd.train, tokenizer, d.prompt_format, d.max_seq_len) if rd.train else []
    problems = [ex for s in rd.report + rd.select for ex in s.examples]
    shots = [(ex.question, ex.solution) for ex in rd.shots]  # a k-shot baseline's prompts are longer
    prompt_ids = [
        tokenizer(format_prompt(ex.question, d.prompt_format, tokenizer, shots))["input_ids"]
        for ex in problems
    ]
    prompt_tokens = sum(map(len, prompt_ids))
    config = model_config(cfg.model.name)
    span = max(map(len, prompt_ids)) + e.max_new_tokens
    static = not fits_window(config, span)
    # The continuous batch sizes its slots to the cache budget; static batches (beyond a sliding window) do not.
    ceiling = None if static else cache_budget_bytes(e)
    slots = slots_within(config, e.batch_size, len(problems), span, cache_dtype_bytes(cfg), ceiling)
    # A row's cache holds its prompt and its answer so far: time the steps at the middle of a capped answer.
    context = round(prompt_tokens / len(problems)) + e.max_new_tokens // 2
    points = {"base": int(e.base), "finetuned": finetuned_points(cfg, len(rows))}
    key = (cfg.model.model_dump_json(), cfg.lora.model_dump_json(), t.batch_size, t.order, t.mixed_precision,
           e.dtype, d.max_seq_len, slots, context, bool(points["finetuned"]))  # fmt: skip
    cache = rates_cache if rates_cache is not None else {}
    if not points["finetuned"] and key[:-1] + (True,) in cache:  # a probe that trained also timed the base
        key = key[:-1] + (True,)
    fresh = key not in cache
    if fresh:
        cache[key] = budget.probe(
            cfg.model.name,
            device=device,
            model_settings=model_settings(cfg.model),
            lora_settings=lora_settings(cfg.lora),
            train_batches=budget.probe_batches(rows, t.batch_size, t.order, budget.PROBE_TRAIN_STEPS)
            if points["finetuned"]
            else [],
            mixed_precision=t.mixed_precision,
            max_grad_norm=t.max_grad_norm,
            prompt_ids=prompt_ids,
            pad_id=tokenizer.pad_token_id,
            slots=slots,
            context=context,
            eval_dtype=e.dtype,
        )
    rates = cache[key]
    recorded = budget.recorded_tokens_per_answer(runs_dir, cfg.model.name, e.max_new_tokens)
    per_answer = {k: recorded[k][0] if k in recorded else float(e.max_new_tokens) for k in points}
    padded = budget.padded_tokens([len(r["input_ids"]) for r in rows], t.batch_size, t.order)
    wt = budget.wall_time(
        train_padded_tokens=padded,
        epochs=t.epochs,
        train_tok_per_s=rates.train_tok_per_s,
        points=points,
        n_problems=len(problems),
        prompt_tokens=prompt_tokens,
        tokens_per_answer=per_answer,
        slots=slots,
        decode_step_s=rates.decode_step_s,
        prefill_tok_per_s=rates.prefill_tok_per_s,
        load_s=rates.load_s,
        static_cap=e.max_new_tokens if static else None,
    )
    m = machine_info()
    where = f"{m['cpu'] if not m['gpu'] else m['gpu']}, {m['torch_threads']} torch threads"
    fmt, n = budget.fmt_duration, budget.fmt_count
    lines = [
        f"wall time      {fmt(wt.total_s)} on {where} (training {fmt(wt.train_s)}, evaluation "
        f"{fmt(wt.eval_s)}, model load {fmt(wt.load_s)}), extrapolated from a timed probe"
    ]
    if padded:
        real = sum(len(r["input_ids"]) for r in rows)
        lines.append(
            f"  training     {len(rows)} examples x {t.epochs} epoch{'s' if t.epochs > 1 else ''}: {n(real * t.epochs)} tokens "
            f"({n(padded * t.epochs)} padded, {t.order} batches of {t.batch_size}) at "
            f"{rates.train_tok_per_s:.0f} padded tok/s probed"
        )
    for kind, label in (("base", "base model"), ("finetuned", "fine-tuned")):
        if not points[kind]:
            continue
        if static:
            answers = (
                f"static batches of {slots}, each to the {e.max_new_tokens}-token cap (prompt + cap exceed the "
                "model's sliding window, so the continuous batch is not used; timed with the continuous batch's "
                "step, which is cheaper than a static one, so this runs low)"
            )
        elif kind in recorded:
            mean, count = recorded[kind]
            answers = f"{mean:.0f} tokens each (mean of {count} recorded answers of this model in {runs_dir})"
        else:
            answers = f"<= {e.max_new_tokens} tokens each (the cap: no recorded answers of this model)"
        step = rates.decode_step_s[kind]
        lines.append(
            f"  evaluation   {points[kind]} {label} point{'s' if points[kind] > 1 else ''} x {len(problems)} problems {fmt(wt.eval_point_s[kind])} "
            f"each: {answers}, {slots} slots at {step:.2f} s/step ({slots / step:.0f} slot tok/s probed), "
            f"prefill {n(prompt_tokens)} prompt tokens at {rates.prefill_tok_per_s:.0f} tok/s"
        )
    if not static:
        queued = len(problems) > slots
        cache = slot_cache_bytes(config, slots, span, cache_dtype_bytes(cfg), queued)
        lines.append(
            f"  slot cache   {budget.fmt_bytes(cache)} of keys and values: {slots} slots x {span} columns (longest "
            f"prompt + cap{', x1.5 for refills' if queued else ''}); eval.batch_size {e.batch_size} and "
            f"eval.slot_cache_gib {e.slot_cache_gib} size it"
        )
    if e.general:
        lines.append(f"  not counted  eval.general {e.general} (multiple-choice scoring at every point)")
    if not fresh:
        lines.append(
            "  probe        shared with another run listed here (the same model, LoRA, batch and slot settings)"
        )
        return wt, lines
    cores = m["cpu_count"] or 1
    busy = (
        f"; the load average was {rates.load_avg:.1f} on {cores} cores when it started: other work shared the "
        "CPU, so these rates (and the estimate) are a busy machine's"
        if rates.load_avg > cores
        else f"; load average {rates.load_avg:.1f} on {cores} cores"
    )
    timed = f"{rates.train_steps} training steps of {rates.train_rows} rows, " if rates.train_steps else ""
    kinds = {"base": "base", "finetuned": "with the adapter"}
    decoded = ", ".join(f"{n} {kinds[k]}" for k, n in rates.decode_steps.items())
    lines.append(
        f"  probe        {rates.probe_s:.0f} s (load {rates.load_s:.0f} s; {timed}decoding steps of "
        f"{rates.slots} slots at {rates.context} columns: {decoded}; one prefill of {rates.prefill_rows} "
        f"prompts; one warm-up each){busy}; --no-probe skips it"
    )
    return wt, lines
