"""LoRA fine-tuning with a completion-only loss, through transformers' Trainer.

Prompt tokens are masked out of the loss, and the end-of-sequence token is appended to every target and kept
in it: the tokenizer's pad token equals EOS, so a collator that masks pad tokens would also stop the model from
learning to stop. Batches are left-padded so that every target sits at the end of the row; the model then
computes logits only for the positions of the longest target (``logits_to_keep``), which skips most of the
vocabulary projection for prompt tokens, and uses them without a slice copy.
bench/bench_train.py measures each of these choices against a plain transformers + peft loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler, SequentialSampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from mathgpt.config import TrainConfig
from mathgpt.data import Example
from mathgpt.model import left_padded
from mathgpt.prompts import format_prompt, format_target

IGNORE = -100


class Tokenized(TypedDict):
    """A training row; a plain dict so a sampler can read ``input_ids``."""

    input_ids: list[int]
    n_prompt: int  # the first n_prompt tokens are masked out of the loss


def tokenize(examples: list[Example], tokenizer, prompt_format: str, max_len: int) -> list[Tokenized]:
    """Prompt + target + EOS per example; the prompt is cut from the left when a row is too long."""
    rows = []
    for ex in examples:
        prompt = tokenizer(format_prompt(ex.question, prompt_format, tokenizer))["input_ids"]
        target = tokenizer(format_target(ex.solution), add_special_tokens=False)["input_ids"]
        target = target[: max_len - 1] + [tokenizer.eos_token_id]
        prompt = prompt[-(max_len - len(target)) :] if len(prompt) + len(target) > max_len else prompt
        rows.append(Tokenized(input_ids=prompt + target, n_prompt=len(prompt)))
    return rows


class LeftPadCollator:
    """Left-pads a batch and builds labels, attention mask and positions (positions skip the padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[Tokenized]) -> dict[str, torch.Tensor]:
        ids, mask, positions = left_padded([r["input_ids"] for r in rows], self.pad_id)
        labels = torch.full_like(ids, IGNORE)
        width = ids.shape[1]
        for i, r in enumerate(rows):
            n, k = len(r["input_ids"]), r["n_prompt"]
            labels[i, width - n + k :] = torch.tensor(r["input_ids"][k:])
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


class WholeSetLengthSampler(Sampler[int]):
    """Batches of similar length over the whole set, in a seeded random batch order (a new one each epoch).

    Trainer's LengthGroupedSampler sorts only within random groups of 50 batches and puts the longest batch
    first; sorting the whole set pads least (bench/bench_train.py measures it).
    """

    def __init__(self, lengths: list[int], batch: int, seed: int):
        self.lengths, self.batch, self.seed, self.epoch = lengths, batch, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches = [order[i : i + self.batch] for i in range(0, len(order), self.batch)]
        rng.shuffle(batches)
        return iter([i for b in batches for i in b])


def completion_loss(model, inputs: dict[str, torch.Tensor], *, use_cache: bool = False) -> torch.Tensor:
    """Summed cross-entropy over target tokens, with logits only for the positions of the longest target.

    ``logits_to_keep`` is an int (a slice of the hidden states): an index tensor, or a boolean mask picking
    each row's exact target positions, makes the backward an index_put with accumulation, measured several
    times slower per step on CPU (bench/bench_train.py). The kept logits are used whole, contiguous, with an
    ignored target for the last position, instead of being sliced and reshaped (a copy of B x T x vocab).
    """
    labels = inputs["labels"]
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    # use_cache=False: without it every training forward also builds a KV cache nobody reads.
    fwd["use_cache"] = use_cache
    # Targets are right-aligned: the longest target bounds the positions we need. Position j predicts j + 1.
    start = max(1, int((labels != IGNORE).int().argmax(dim=1).min()))
    logits = model(**fwd, logits_to_keep=labels.shape[1] - start + 1).logits
    if logits.dtype != torch.float32:  # a 16-bit softmax loses precision; fp32 logits need no copy
        logits = logits.float()
    targets = F.pad(labels[:, start:], (0, 1), value=IGNORE)  # the last position predicts nothing
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")


class CompletionTrainer(Trainer):
    """Trainer with the completion loss, the run's sample order and counters of what it has trained on."""

    order: str = "grouped"

    def __init__(self, *args, order: str = "grouped", mixed_precision: str = "no", **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order
        self.mixed_precision = mixed_precision
        self.seen_rows = 0
        # Device tensors, read only at evaluation points: a .item() per step would sync a GPU every step.
        self._tokens: torch.Tensor | int = 0
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_n: torch.Tensor | int = 0

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.order == "sequential":
            return SequentialSampler(dataset)
        per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return WholeSetLengthSampler([len(r["input_ids"]) for r in dataset], per_step, self.args.data_seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # bf16 autocast around this forward only (the backward follows the forward's dtypes). Trainer's own
        # bf16 flag is not used for it: accelerate would wrap model.forward itself in the autocast, and every
        # evaluation point (and the final evaluation) would then decode in bf16 too.
        with torch.autocast(
            inputs["input_ids"].device.type, torch.bfloat16, enabled=self.mixed_precision == "bf16"
        ):
            loss = completion_loss(model, inputs)
        n = num_items_in_batch if num_items_in_batch is not None else (inputs["labels"] != IGNORE).sum()
        loss = loss / n
        if model.training:
            self.seen_rows += int(inputs["labels"].shape[0])
            self._tokens = self._tokens + inputs["attention_mask"].sum()
            n_here = (inputs["labels"] != IGNORE).sum()
            self._loss_sum = self._loss_sum + loss.detach() * n
            self._loss_n = self._loss_n + n_here
        return (loss, None) if return_outputs else loss

    @property
    def seen_tokens(self) -> int:
        """Tokens trained on so far (padding excluded)."""
        return int(self._tokens)

    def take_loss(self) -> float | None:
        """Mean loss per target token since the previous call."""
        n = int(self._loss_n)
        mean = float(self._loss_sum) / n if n else None
        self._loss_sum, self._loss_n = 0.0, 0
        return mean


class PointHook(TrainerCallback):
    """Calls ``on_point(model, info)`` after the listed optimizer steps and at the listed epoch ends.

    ``info`` holds ``optimizer_steps``, ``train_examples``, ``train_tokens`` and ``loss`` (mean per target
    token since the previous point). ``on_log(logs, step, examples_seen)`` gets every Trainer log with the
    rows trained on so far.
    """

    def __init__(self, on_point: Callable | None, on_log: Callable | None, steps: set[int], epochs: set[int]):
        self._point_fn, self._log_fn = on_point, on_log
        self.steps, self.epochs = steps, epochs
        self.trainer: CompletionTrainer | None = None
        self._last_step = -1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._log_fn and logs:
            self._log_fn(logs, state.global_step, self.trainer.seen_rows if self.trainer else 0)

    def _point(self, state, model) -> None:
        if self._point_fn is None or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        t = self.trainer
        info = {
            "optimizer_steps": state.global_step,
            "train_examples": t.seen_rows,
            "train_tokens": t.seen_tokens,
            "loss": t.take_loss(),
        }
        was_training = model.training
        self._point_fn(model, info)
        model.train(was_training)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self._point(state, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch) in self.epochs:
            self._point(state, model)


def training_args(
    cfg: TrainConfig, *, out_dir: Path, seed: int, device: str, dtype: str
) -> TrainingArguments:
    """Trainer arguments from the run's ``train`` section.

    ``train.mixed_precision`` is not here: ``train`` applies it around the loss only (CompletionTrainer).
    """
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a fraction of all steps
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",  # tracking goes through mathgpt.track, fed by PointHook
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        optim="adamw_torch",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def train(
    model,
    tokenizer,
    rows: list[Tokenized],
    args: TrainingArguments,
    *,
    order: str = "grouped",
    mixed_precision: str = "no",
    on_point: Callable | None = None,
    point_steps: set[int] | None = None,
    point_epochs: set[int] | None = None,
    on_log: Callable | None = None,
) -> dict:
    """Fine-tune ``model`` (a peft model) in place; returns Trainer's final metrics.

    ``on_point(model, info)`` runs after each optimizer step in ``point_steps`` and at the end of each epoch
    in ``point_epochs`` (default: every epoch), at most once per step.
    """
    if point_epochs is None:
        point_epochs = set(range(1, int(args.num_train_epochs) + 1))
    hook = PointHook(on_point, on_log, set(point_steps or ()), point_epochs)
    trainer = CompletionTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=LeftPadCollator(tokenizer.pad_token_id),
        callbacks=[hook],
        order=order,
        mixed_precision=mixed_precision,
    )
    hook.trainer = trainer
    result = trainer.train()
    return dict(result.metrics)
