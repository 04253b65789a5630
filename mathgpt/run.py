"""One experiment, top to bottom: data -> base model -> evaluate -> LoRA fine-tune (evaluating each epoch) -> files.

This is the recipe a sweep trial runs in its own process. Everything it writes is described in
docs/CONTRACTS.md; `epochs.jsonl` is appended and flushed after every evaluation so a sweep (or a person) can
follow a run while it trains, and a killed run keeps what it had finished.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from mathgpt import contamination, data, general, multiple_choice
from mathgpt.config import ConfigError, RunConfig, dump_config
from mathgpt.evaluate import EvalResult, EvalSet, evaluate
from mathgpt.model import add_lora, count_parameters, load_model, load_tokenizer, meta_model, resolve_device
from mathgpt.track import start_run
from mathgpt.train import tokenize, train, training_args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg: RunConfig) -> tuple[list[data.Example], list[EvalSet], int]:
    """(training subset, evaluation slices, training rows dropped as contaminated)."""
    d = cfg.data
    multiple_choice.prepare_general(cfg)  # an unknown eval.general set fails here, before any file is written
    evals = [EvalSet(n, data.held_out_slice(data.load(n, d.data_dir), d.eval_size, cfg.seed)) for n in d.eval]
    if d.train_size == 0 or cfg.train.epochs == 0:
        return [], evals, 0
    pool = data.load(d.train, d.data_dir, sources=d.sources)
    dropped = 0
    if d.drop_contaminated:
        bad = contamination.contaminated_ids(pool, [ex for s in evals for ex in s.examples])
        dropped = len(bad)
        pool = [ex for ex in pool if ex.id not in bad]
    return general.mix_train_set(pool, d.train_size, cfg.seed, d.mix, d.data_dir), evals, dropped


def effective_batch_size(cfg: RunConfig, n_train: int) -> int:
    """The configured batch, capped so every epoch takes at least ``train.min_steps`` optimizer steps.

    Few optimizer steps at a high learning rate were seen to collapse the model, and a size sweep should not
    need a hand-tuned batch per size; the cap is printed and recorded in metrics.json.
    """
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    if n_train // per_step >= cfg.train.min_steps:
        return cfg.train.batch_size
    capped = max(1, n_train // (cfg.train.min_steps * cfg.train.grad_accum))
    if n_train // (capped * cfg.train.grad_accum) < cfg.train.min_steps:
        raise ConfigError(
            f"data.train_size {n_train} cannot give train.min_steps {cfg.train.min_steps} optimizer steps per "
            f"epoch even at batch size 1 with grad_accum {cfg.train.grad_accum}"
        )
    return min(capped, cfg.train.batch_size)


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


def epoch_line(
    epoch: int, res: EvalResult, *, n_train: int, train_tokens: int, train_wall_s: float, loss: float | None
) -> dict:
    return {
        "epoch": epoch,
        "accuracy": res.accuracy,
        "ci95": list(res.ci95),
        "n_eval": len(res.records),
        "n_correct": res.n_correct,
        "ids": res.ids,
        "correct": res.correct,
        "by_set": res.by_set(),
        "train_examples": n_train * epoch,
        "train_tokens": train_tokens,
        "train_wall_s": round(train_wall_s, 3),
        "eval_wall_s": round(res.wall_s, 3),
        "loss": loss,
    }


def _summary(res: EvalResult | None) -> dict | None:
    if res is None:
        return None
    return {"accuracy": res.accuracy, "ci95": list(res.ci95), "n_correct": res.n_correct}


def run_experiment(cfg: RunConfig, out_dir: Path) -> dict:
    """Run ``cfg`` and write its files to ``out_dir``; returns what metrics.json holds."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.model)  # refuse CUDA-only settings before touching any file
    seed_everything(cfg.seed)
    train_set, eval_sets, dropped = load_data(cfg)
    n_train = len(train_set)
    batch = effective_batch_size(cfg, n_train) if n_train else cfg.train.batch_size
    if batch != cfg.train.batch_size:
        print(f"mathgpt: batch size capped at {batch} so each epoch has >= {cfg.train.min_steps} steps")

    tokenizer = load_tokenizer(cfg.model.name)  # a bad model name fails here, before any file is written
    files = RunFiles(Path(out_dir))
    (files.out / "config.yaml").write_text(dump_config(cfg))
    all_eval = [ex for s in eval_sets for ex in s.examples]
    fingerprint = {
        "train": data.fingerprint(train_set) if train_set else None,
        "eval": data.fingerprint(all_eval),
    }
    tracker = start_run(
        project=cfg.tracking.project,
        name=cfg.name,
        group=cfg.tracking.group,
        dir=files.out,
        config={
            **cfg.model_dump(mode="json"),
            "fingerprint": fingerprint,
            "n_train": n_train,
            "contaminated_dropped": dropped,
            "effective_batch_size": batch,
        },
        mode=cfg.tracking.mode,
    )
    try:
        metrics = _run(cfg, files, device, tokenizer, train_set, eval_sets, batch, tracker)
        metrics.update(
            n_train=n_train,
            n_train_by_source=general.count_by_source(train_set),
            epochs=cfg.train.epochs,
            fingerprint=fingerprint,
            contaminated_dropped=dropped,
            effective_batch_size=batch,
            wall_s=round(time.perf_counter() - t0, 2),
            device=device,
        )
        files.write_json("metrics.json", metrics)
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        print(results_table(metrics))
        return metrics
    finally:
        tracker.finish()


def _log_eval(
    tracker, files: RunFiles, line: dict, res: EvalResult, model_name: str, epoch: int, table_rows: int
) -> None:
    files.append("epochs.jsonl", [line])
    tracker.log(
        {
            "eval/accuracy": line["accuracy"],
            "eval/ci95_lo": line["ci95"][0],
            "eval/ci95_hi": line["ci95"][1],
            "epoch": epoch,
            **{f"eval/{k}/accuracy": v["accuracy"] for k, v in line["by_set"].items()},
        }
    )
    if table_rows:
        cols = ["model", "epoch", "id", "eval_set", "question", "gold", "output", "extracted", "correct"]
        rows = [[model_name, epoch] + [r[c] for c in cols[2:]] for r in res.records[:table_rows]]
        tracker.log_table(f"predictions/{model_name}_epoch{epoch}", cols, rows)


def _run(
    cfg: RunConfig, files: RunFiles, device: str, tokenizer, train_set, eval_sets, batch: int, tracker
) -> dict:
    model = load_model(cfg.model, device)

    def run_eval(m, desc: str) -> EvalResult:
        return evaluate(
            m,
            tokenizer,
            eval_sets,
            prompt_format=cfg.data.prompt_format,
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            desc=desc,
        )

    base = None
    eval_tok_s: list[float] = []
    if cfg.eval.base:
        base = run_eval(model, "base model")
        eval_tok_s.append(base.tokens_per_s)
        line = epoch_line(0, base, n_train=len(train_set), train_tokens=0, train_wall_s=0.0, loss=None)
        line["general"] = multiple_choice.evaluate_general(model, tokenizer, cfg, cfg.eval.batch_size)
        _log_eval(tracker, files, line, base, "base", 0, cfg.tracking.predictions_table_rows)
        files.append("predictions.jsonl", [{"model": "base", "epoch": 0, **r} for r in base.records])
    if not train_set:
        return {
            "base": _summary(base),
            "finetuned": None,
            "n_eval": len(base.records) if base else 0,
            "per_epoch": [],
            "train_tokens": 0,
            "train_tokens_per_s": None,
            "eval_tokens_per_s": _mean(eval_tok_s),
        }

    model = add_lora(model, cfg.lora)
    trainable, total = count_parameters(model)
    rows = tokenize(train_set, tokenizer, cfg.data.prompt_format, cfg.data.max_seq_len)
    tokens_per_epoch = sum(len(r["input_ids"]) for r in rows)
    state = {"eval_s": 0.0, "last": None, "per_epoch": []}
    t_train = time.perf_counter()
    merge = cfg.model.quantization == "none"  # merging into 4-bit weights would round the adapter away

    def on_epoch(epoch: int, m, loss: float | None) -> None:
        if not cfg.eval.every_epoch and epoch < cfg.train.epochs:
            return
        t = time.perf_counter()
        train_wall = t - t_train - state["eval_s"]
        m.eval()
        if merge:
            m.merge_adapter()  # one dense matmul per layer during generation instead of three
        try:
            res = run_eval(m, f"epoch {epoch}")
        finally:
            if merge:
                m.unmerge_adapter()
        general_scores = multiple_choice.evaluate_general(m, tokenizer, cfg, cfg.eval.batch_size)
        state["eval_s"] += time.perf_counter() - t  # general scoring is evaluation time, not training time
        eval_tok_s.append(res.tokens_per_s)
        line = epoch_line(
            epoch,
            res,
            n_train=len(train_set),
            train_tokens=tokens_per_epoch * epoch,
            train_wall_s=train_wall,
            loss=loss,
        )
        line["general"] = general_scores
        _log_eval(tracker, files, line, res, "finetuned", epoch, cfg.tracking.predictions_table_rows)
        state["last"] = (epoch, res)
        state["per_epoch"].append(
            {"epoch": epoch, "accuracy": res.accuracy, "ci95": list(res.ci95), "loss": loss}
        )
        print(
            f"epoch {epoch}: accuracy {res.accuracy:.3f} [{res.ci95[0]:.3f}, {res.ci95[1]:.3f}]", flush=True
        )

    def on_log(logs: dict, step: int) -> None:
        tracker.log({f"train/{k}": v for k, v in logs.items() if isinstance(v, int | float)}, step=None)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}")

    args = training_args(
        cfg.train,
        out_dir=files.out / "trainer",
        seed=cfg.seed,
        device=device,
        dtype=cfg.model.dtype,
        batch_size=batch,
    )
    train(model, tokenizer, rows, args, on_epoch=on_epoch, on_log=on_log)
    train_wall = time.perf_counter() - t_train - state["eval_s"]
    model.save_pretrained(files.out / "adapter")
    if cfg.tracking.log_adapter:
        tracker.log_artifact(files.out / "adapter", name=f"{cfg.name}-adapter", type="lora-adapter")
    epoch, final = state["last"]
    files.append("predictions.jsonl", [{"model": "finetuned", "epoch": epoch, **r} for r in final.records])
    train_tokens = tokens_per_epoch * cfg.train.epochs
    return {
        "base": _summary(base),
        "finetuned": _summary(final),
        "n_eval": len(final.records),
        "per_epoch": state["per_epoch"],
        "trainable_params": trainable,
        "total_params": total,
        "train_tokens": train_tokens,
        "train_tokens_per_s": round(train_tokens / max(train_wall, 1e-9), 2),
        "train_wall_s": round(train_wall, 2),
        "eval_tokens_per_s": _mean(eval_tok_s),
    }


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


def results_table(m: dict) -> str:
    def cell(s: dict | None) -> str:
        return f"{s['accuracy']:.3f}  [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s else "-"

    lines = [
        f"{'model':<12}{'accuracy  [95% CI]':<30}",
        f"{'base':<12}{cell(m.get('base')):<30}",
        f"{'fine-tuned':<12}{cell(m.get('finetuned')):<30}",
        f"n_eval={m.get('n_eval')} n_train={m.get('n_train')} epochs={m.get('epochs')} "
        f"train tok/s={m.get('train_tokens_per_s')} eval tok/s={m.get('eval_tokens_per_s')} wall={m.get('wall_s')}s",
    ]
    return "\n".join(lines)


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
    bytes_per = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}[cfg.model.dtype]
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


def dry_run(cfg: RunConfig) -> str:
    """Trainable parameters and a memory estimate from the architecture alone (meta device: no weights)."""
    model = meta_model(cfg.model.name)
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    peft_model = add_lora(model, cfg.lora)
    trainable, _ = count_parameters(peft_model)
    mem = estimate_peak_memory_gib(cfg, total, trainable, c.hidden_size, c.num_hidden_layers, c.vocab_size)
    lines = [
        f"model          {cfg.model.name} ({c.model_type}, {c.num_hidden_layers} layers, hidden {c.hidden_size})",
        f"parameters     {total:,} total, {trainable:,} trainable LoRA ({100 * trainable / total:.3f}%)",
        f"lora           r={cfg.lora.r} alpha={cfg.lora.lora_alpha:g} targets={cfg.lora.target_modules}",
        f"precision      {cfg.model.dtype}, quantization {cfg.model.quantization}",
        f"batch          {cfg.train.batch_size} x {cfg.data.max_seq_len} tokens, grad_accum {cfg.train.grad_accum}",
        "peak memory    ~{total:.1f} GiB (weights {weights:.1f}, LoRA+AdamW {lora_and_optimizer:.2f}, "
        "activations {activations:.1f}, logits {logits:.1f}) - an estimate".format(**mem),
    ]
    return "\n".join(lines)
