"""LoRA fine-tuning with a completion-only loss, through transformers' Trainer.

Prompt tokens are masked out of the loss, and the end-of-sequence token is appended to every target and kept
in it: the tokenizer's pad token equals EOS, so a collator that masks pad tokens would also stop the model from
learning to stop. Batches are left-padded so that every target sits at the end of the row. The loss projects
to the vocabulary only at target positions and a chunk at a time (``completion_loss``), so a 151,936-token
vocabulary never materialises full logits.
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

from mathgpt.data import Example
from mathgpt.machine import release_free_memory
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


# Logits computed at once by the loss: 2**24 (64 MiB in fp32), i.e. 110 target tokens of Qwen2.5's
# 151,936-token vocabulary or 341 of SmolLM2's 49,152. Full logits for 8 rows x 512 positions of Qwen2.5 are
# 2.5 GB in fp32, and the softmax and its gradient each need as much again (issue 18: a 15 GB peak).
HEAD_CHUNK = 2**24


class _ChunkedHeadLoss(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, holding at most ``chunk`` logits.

    The gradient is computed in the forward, chunk by chunk (softmax minus one-hot, through the projection),
    and only it is kept, so no chunk's logits outlive their chunk; the backward scales it. The operations and
    dtypes are the model head's and autograd's: under bf16 autocast the projections run in bf16, the softmax
    in fp32, as ``F.linear`` then ``.float()`` then ``F.cross_entropy`` do.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        rows = max(1, chunk // weight.shape[0])
        device = hidden.device.type
        # Autocast casts a frozen weight anew at every use (it caches only leaves that require grad): cast the
        # head once, not twice per chunk (measured ~1.6x slower on Qwen2.5's head in 110-row chunks).
        w = weight.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else weight
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for lo in range(0, hidden.shape[0], rows):
            h, t = hidden[lo : lo + rows], targets[lo : lo + rows]
            logits = F.linear(h, w)
            full = logits.float()  # a 16-bit softmax loses precision
            lse = full.logsumexp(-1)
            loss += (lse - full.gather(1, t[:, None]).squeeze(1)).sum()
            g = full.sub_(lse[:, None]).exp_()  # the softmax, in place of the logits it came from
            g[torch.arange(len(t), device=g.device), t] -= 1
            g = g.to(logits.dtype)
            if grad_h is not None:
                grad_h[lo : lo + rows] = g @ w
            if grad_w is not None:
                grad_w += (g.T @ h).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad.to(grad_h.dtype) if grad_h is not None else None,
            grad_w * grad.to(grad_w.dtype) if grad_w is not None else None,
            None,
            None,
        )


def _head(model) -> tuple[torch.nn.Module, torch.Tensor]:
    """(the transformer body that returns hidden states, the output head's weight) of a causal LM or a peft
    model around one; refuses heads the chunked loss would compute differently from the model's forward."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    config = inner.config
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            raise ValueError(
                f"completion loss: {config.model_type} scales its logits ({attr}); not supported"
            )
    if getattr(head, "bias", None) is not None:
        raise ValueError(f"completion loss: {config.model_type}'s output head has a bias; not supported")
    return inner.base_model, head.weight


def completion_loss(
    model, inputs: dict[str, torch.Tensor], *, use_cache: bool = False, chunk: int = HEAD_CHUNK
) -> torch.Tensor:
    """Summed cross-entropy over target tokens, with the vocabulary projection only at target positions and
    at most ``chunk`` logits alive at a time (``_ChunkedHeadLoss``).

    The body's hidden states are picked at the target positions (a boolean index on a B x T x hidden tensor,
    cheap: the index_put of its backward is over hidden-size rows, not vocabulary-size ones), so padding,
    prompt tokens and the positions of shorter targets reach no logits at all.
    """
    labels = inputs["labels"]
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    # use_cache=False: without it every training forward also builds a KV cache nobody reads.
    fwd["use_cache"] = use_cache
    body, weight = _head(model)
    hidden = body(**fwd).last_hidden_state[:, :-1]  # position j predicts token j + 1
    targets = labels[:, 1:]
    keep = targets != IGNORE
    return _ChunkedHeadLoss.apply(hidden[keep], weight, targets[keep], chunk)


class CompletionTrainer(Trainer):
    """Trainer with the completion loss, the run's sample order and counters of what it has trained on."""

    order: str = "grouped"

    def __init__(
        self, *args, order: str = "grouped", mixed_precision: str = "no", release_heap: bool = True, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.order = order
        self.mixed_precision = mixed_precision
        self.release_heap = release_heap
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

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if (
            self.release_heap
        ):  # the step's freed activations, or glibc's heap grows (machine.release_free_memory)
            release_free_memory()
        return loss

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
    *,
    out_dir: Path,
    seed: int,
    device: str,
    dtype: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    lr_scheduler: str,
    weight_decay: float,
    max_grad_norm: float,
    logging_steps: int,
) -> TrainingArguments:
    """Trainer arguments for one run (``run.trainer_settings`` reads them from a run's ``train`` section).

    Mixed precision is not here: ``train`` applies it around the loss only (CompletionTrainer).
    """
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=warmup_ratio,  # a float below 1 is a fraction of all steps
        lr_scheduler_type=lr_scheduler,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        logging_steps=logging_steps,
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
