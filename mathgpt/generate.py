"""Batched greedy generation that only pays for kept tokens: a continuous batch over a preallocated cache.

transformers' static ``model.generate`` keeps decoding a row after its EOS until the longest row of the
batch ends: in the fine-tuned CPU evaluations only 36-59% of the decoded row-steps produced kept tokens
(issue 13), and its ``DynamicCache`` grows by ``torch.cat``, copying the whole cache every step. The default
path here (``mode="drop"``) is its own greedy loop:

- keys and values live in preallocated ``[slots, kv_heads, columns, head_dim]`` buffers (``_SlotLayer``);
  a step writes one column in place;
- a row that emits EOS (or reaches ``max_new_tokens``) leaves its slot at once: a live row from the tail
  moves into it, so live rows stay in front and no row-step is spent on a finished row;
- when there are more prompts than slots, freed slots are refilled from the queue: the new prompts are
  prefilled together and copied in, right-aligned to the current column, with their own positions.

Each row computes with its own positions and a mask over its own columns, so its greedy tokens are the
static path's (tests/test_generate.py checks identity on the tiny model; bench/bench_eval.py counts
identical texts on SmolLM2). transformers' own continuous batching (``model.generate_batch``, paged
attention) also ran on CPU with the same text but was slower than the earlier version of this loop, with a
13 GB resident process for a 135M model (bench/RESULTS.md, 2026-11-28). ``mode="static"`` keeps the old
``model.generate`` path as the reference the tests and benchmarks compare against.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicLayer

from mathgpt.model import left_padded


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens, EOS included
    truncated: bool  # hit max_new_tokens without emitting EOS


@dataclass(frozen=True)
class GenStats:
    """What one ``generate`` call computed: kept tokens against decoded row-steps."""

    useful_tokens: int  # tokens kept in the outputs, EOS included
    slot_tokens: int  # row-steps computed (one per row per decoding step, the prefill's token included)
    wall_s: float
    rows: int = (
        0  # rows decoded together: the continuous batch's slots (after the cache budget) or the static batch
    )

    @property
    def useful_fraction(self) -> float:
        return self.useful_tokens / self.slot_tokens if self.slot_tokens else 1.0

    @property
    def useful_tokens_per_s(self) -> float:
        return self.useful_tokens / max(self.wall_s, 1e-9)

    @property
    def slot_tokens_per_s(self) -> float:
        return self.slot_tokens / max(self.wall_s, 1e-9)

    def as_dict(self) -> dict:
        """The ``gen`` record of epochs.jsonl / metrics.json (docs/CONTRACTS.md)."""
        return {
            "useful_tokens": self.useful_tokens,
            "slot_tokens": self.slot_tokens,
            "useful_fraction": round(self.useful_fraction, 4),
            "useful_tokens_per_s": round(self.useful_tokens_per_s, 2),
            "slot_tokens_per_s": round(self.slot_tokens_per_s, 2),
            "rows": self.rows,
        }


class Progress:
    """One bar per ``generate`` call that moves with every kept token, not only with every finished problem.

    Its unit is generated tokens: tqdm shows tokens/s and an ETA. The total starts at every problem's budget
    (problems x ``max_new_tokens``) and drops by what a row leaves unused when it ends on EOS, so it closes on
    the tokens actually kept and the ETA is an upper bound that tightens; finished problems are in the postfix.
    (A 60-problem base evaluation at a 320-token cap showed 0/60 for over ten minutes when the bar counted
    finished problems only: issue 18.)
    """

    def __init__(self, bar, n_problems: int, max_new_tokens: int):
        self.bar, self.n_problems, self.max_new_tokens, self.done = bar, n_problems, max_new_tokens, 0
        bar.reset(total=n_problems * max_new_tokens)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"{self.done}/{self.n_problems} problems", refresh=False)

    def tokens(self, n: int) -> None:
        """``n`` more kept tokens (one per live row per step)."""
        self.bar.update(n)

    def finished(self, n_tokens: list[int]) -> None:
        """Rows that ended, with their kept token counts: their unused budget leaves the total."""
        if not n_tokens:
            return
        self.done += len(n_tokens)
        self.bar.total -= sum(self.max_new_tokens - n for n in n_tokens)
        self._postfix()
        self.bar.refresh()


class _StaticProgress(StoppingCriteria):
    """Feeds ``Progress`` from inside transformers' ``generate``: after each step every row that had not yet
    emitted EOS kept one token. Never stops anything (EOS handling stays with ``generate``)."""

    def __init__(self, progress: Progress, rows: int, eos: int, max_new_tokens: int):
        self.progress, self.eos, self.max_new_tokens = progress, eos, max_new_tokens
        self.live = torch.ones(rows, dtype=torch.bool)
        self.steps = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.steps += 1
        live = self.live.to(input_ids.device)
        self.progress.tokens(int(live.sum()))
        ended = live & (input_ids[:, -1] == self.eos)
        self.live = (live & ~ended).cpu()
        self.progress.finished([self.steps] * int(ended.sum()))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def close(self) -> None:
        """The rows still live when ``generate`` returned stopped at the cap (or the batch's end)."""
        self.progress.finished([self.max_new_tokens] * int(self.live.sum()))


def _static_batch(
    model, tokenizer, enc, max_new_tokens: int, progress: Progress
) -> tuple[list[list[int]], int]:
    """transformers' ``generate``: every row decodes until the batch's longest row ends."""
    ticks = _StaticProgress(progress, enc["input_ids"].shape[0], tokenizer.eos_token_id, max_new_tokens)
    seqs = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([ticks]),
    )
    ticks.close()
    new = seqs[:, enc["input_ids"].shape[1] :]
    return new.tolist(), new.shape[0] * new.shape[1]


def _cache_kwarg(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40); earlier 5.x
    releases silently drop an unknown ``cache`` argument, so ask the forward which name it takes."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class _SlotLayer(DynamicLayer):
    """One layer's keys and values in preallocated ``[slots, kv_heads, capacity, head_dim]`` buffers.

    A decoding step writes its column in place; ``DynamicLayer`` grows by ``torch.cat``, which copies the whole
    cache every step: on SmolLM2-135M (30 layers, 3 KV heads of 64) that is 46 KB per row and token in fp32,
    ~1.3 GB per step at 150 rows x 190 tokens. The live rows (always the first ones) and the open
    columns are the batch's (``_Slots``), read here, never copied.
    """

    def __init__(self, batch: _Slots, k: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.batch, self.k, self.v = batch, k, v
        self.device, self.is_initialized = k.device, True

    def get_seq_length(self) -> int:
        return self.batch.n

    def update(self, key_states, value_states, *args, **kwargs):
        b, n, t = self.batch.rows, self.batch.n, key_states.shape[-2]
        self.k[:b, :, n : n + t] = key_states
        self.v[:b, :, n : n + t] = value_states
        self.keys, self.values = self.k[:b, :, : n + t], self.v[:b, :, : n + t]
        return self.keys, self.values


class _Slots:
    """A continuous batch: ``slots`` rows decoding together, left-aligned on one cache column counter ``n``.

    Each row's prompt sits right-aligned before column ``n`` with masked columns before it; a row that ends is
    removed by moving a live row from the tail into its slot, and a prompt from the queue is prefilled on its
    own and copied into a free slot. Positions are per row (its own prompt's), so where a row sits in the
    cache does not change what it computes. When the columns run out, the window shifts left past columns
    no live row reads (``capacity`` is 1.5x a row's longest span, so a shift moves at least half a span, and
    happens at most once per half span of steps).
    """

    def __init__(self, model, slots: int, capacity: int):
        self.model, self.slots, self.capacity = model, slots, capacity
        self.cache = DynamicCache(config=model.config)
        self.layers: list[_SlotLayer] = []
        self.rows, self.n = 0, 0
        self.mask = self.feed = self.pos = self.start = None  # allocated with the first prompts

    def _allocate(self, cache: DynamicCache, device) -> None:
        self.layers = []
        for layer in cache.layers:
            _, heads, _, dim = layer.keys.shape
            shape = (self.slots, heads, self.capacity, dim)
            # zeros, not empty: masked columns still enter the attention product, so they must be finite
            k = layer.keys.new_zeros(shape)
            self.layers.append(_SlotLayer(self, k, torch.zeros_like(k)))
        self.cache.layers = self.layers
        self.mask = torch.zeros(self.slots, self.capacity, dtype=torch.long, device=device)
        self.feed = torch.zeros(self.slots, dtype=torch.long, device=device)
        self.pos = torch.zeros(self.slots, dtype=torch.long, device=device)
        self.start = torch.zeros(self.slots, dtype=torch.long, device=device)

    def insert(
        self, cache: DynamicCache, mask: torch.Tensor, first: torch.Tensor, last_pos: torch.Tensor
    ) -> None:
        """Copy a prefilled group (its own DynamicCache, left-padded ``mask``) into the next free slots."""
        g, p = mask.shape
        if not self.layers:
            self._allocate(cache, mask.device)
        if self.rows == 0:
            self.n = p  # nothing live to keep: restart the window
        lo, hi, c0 = self.rows, self.rows + g, self.n - p
        if c0 < 0:  # prompts come longest first and shifts keep room for the next one, so this cannot happen
            raise RuntimeError(f"a {p}-token prompt does not fit the {self.n} open columns")
        for slot, layer in zip(self.layers, cache.layers, strict=True):
            slot.k[lo:hi, :, c0 : self.n] = layer.keys
            slot.v[lo:hi, :, c0 : self.n] = layer.values
        self.mask[lo:hi] = 0
        self.mask[lo:hi, c0 : self.n] = mask
        self.start[lo:hi] = c0 + (mask == 0).sum(1)
        self.feed[lo:hi], self.pos[lo:hi] = first, last_pos + 1
        self.rows = hi

    def remove(self, ended: list[int]) -> list[tuple[int, int]]:
        """Drop the slots in ``ended``; returns the (from, to) moves that keep the live rows in front."""
        gone = set(ended)
        live = self.rows - len(gone)
        holes = [i for i in range(live) if i in gone]
        movers = [i for i in range(live, self.rows) if i not in gone]
        if holes:
            src = torch.tensor(movers, device=self.mask.device)
            dst = torch.tensor(holes, device=self.mask.device)
            for layer in self.layers:
                layer.k[dst, :, : self.n] = layer.k[src, :, : self.n]
                layer.v[dst, :, : self.n] = layer.v[src, :, : self.n]
            for buf in (self.mask, self.feed, self.pos, self.start):
                buf[dst] = buf[src]
        self.rows = live
        return list(zip(movers, holes, strict=True))

    def make_room(self, keep: int) -> None:
        """Shift the window left if the next column would not fit, keeping at least ``keep`` columns."""
        if self.n < self.capacity:
            return
        if self.rows == 0:
            self.n = 0
            return
        s = min(int(self.start[: self.rows].min()), self.n - keep)
        if s <= 0:
            raise RuntimeError(f"generation cache of {self.capacity} columns is full")  # capacity is sized so
        m = self.n - s
        for layer in self.layers:
            layer.k[: self.rows, :, :m] = layer.k[: self.rows, :, s : self.n].clone()
            layer.v[: self.rows, :, :m] = layer.v[: self.rows, :, s : self.n].clone()
        self.mask[: self.rows, :m] = self.mask[: self.rows, s : self.n].clone()
        self.start[: self.rows] -= s
        self.n = m

    def step(self, cache_kw: str) -> torch.Tensor:
        """One decoding step for every live row; returns each row's next token (greedy)."""
        b = self.rows
        self.mask[:b, self.n] = 1
        out = self.model(
            input_ids=self.feed[:b, None],
            attention_mask=self.mask[:b, : self.n + 1],
            position_ids=self.pos[:b, None],
            use_cache=True,
            **{cache_kw: self.cache},
        )
        self.n += 1  # every layer wrote column n during the forward
        self.pos[:b] += 1
        return out.logits[:, -1].argmax(-1)


# Rows per prefill forward. The default run's 150 prompts are 36-88 tokens (mean 58), so one padded batch
# computes 88 x 150 positions for 58 x 150 real ones; groups of 32 of similar length pad each only to its
# own longest prompt, and 32 x ~60 tokens is still a large matmul on CPU. bench/bench_eval.py on 2026-11-28:
# 1.61x the static path with one prefill, 1.96x with groups.
PREFILL_ROWS = 32


def _prefill(model, ids: list[list[int]], pad_id: int, device, cache_kw: str):
    """Left-padded prompts through the model: (their cache, mask, first tokens, last prompt positions)."""
    input_ids, mask, positions = (t.to(device) for t in left_padded(ids, pad_id))
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    return cache, mask, out.logits[:, -1].argmax(-1), positions[:, -1]


def _continuous(
    model,
    tokenizer,
    ids: list[list[int]],
    max_new_tokens: int,
    slots: int,
    progress: Progress,
    cache_budget: int | None = None,
) -> tuple[list[list[int]], int, int]:
    """Greedy decoding of every prompt in ``ids`` through ``slots`` rows (fewer if their cache would exceed
    ``cache_budget`` bytes: ``slots_within``) that are refilled from the queue as rows end (EOS or
    ``max_new_tokens``); a row-step is only ever spent on a kept token. Returns each prompt's tokens, in the
    order of ``ids``, the row-steps computed and the slots used."""
    eos, device, cache_kw = tokenizer.eos_token_id, next(model.parameters()).device, _cache_kwarg(model)
    # Longest prompt (in tokens) first: the window opened by the first group then holds every later prompt.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    span = max(len(x) for x in ids) + max_new_tokens
    slots = slots_within(model.config, slots, len(ids), span, _compute_bytes(model), cache_budget)
    batch = _Slots(model, slots, span if len(ids) <= slots else span + span // 2 + 1)
    tokens: list[list[int]] = [[] for _ in ids]
    owner: list[int] = []  # prompt index per live slot
    queue, slot_steps = 0, 0
    # Refill once a sixteenth of the slots are free: one prefill for several prompts, not one per ended row.
    refill_at = max(1, batch.slots // 16)

    def ended(i: int, tok: int) -> bool:
        tokens[i].append(tok)
        return tok == eos or len(tokens[i]) >= max_new_tokens

    while True:
        free = batch.slots - batch.rows
        if queue < len(ids) and (free >= min(refill_at, len(ids) - queue) or batch.rows == 0):
            # Prefill in groups of similar length: each group is padded only to its own longest prompt.
            group = order[queue : queue + min(free, PREFILL_ROWS)]
            queue += len(group)
            cache, mask, first, last_pos = _prefill(
                model, [ids[i] for i in group], tokenizer.pad_token_id, device, cache_kw
            )
            slot_steps += len(group)
            done = [ended(i, t) for i, t in zip(group, first.tolist(), strict=True)]
            progress.tokens(len(group))
            progress.finished([len(tokens[i]) for i, d in zip(group, done, strict=True) if d])
            keep = [j for j, d in enumerate(done) if not d]
            if keep:
                if len(keep) < len(group):
                    sel = torch.tensor(keep, device=device)
                    cache.batch_select_indices(sel)
                    mask, first, last_pos = mask[sel], first[sel], last_pos[sel]
                batch.make_room(keep=mask.shape[1])
                batch.insert(cache, mask, first, last_pos)
                owner += [group[j] for j in keep]
            continue
        if batch.rows == 0:
            return tokens, slot_steps, batch.slots
        batch.make_room(keep=len(ids[order[queue]]) if queue < len(ids) else 1)  # the next prompt must fit
        next_ids = batch.step(cache_kw)
        slot_steps += batch.rows
        progress.tokens(batch.rows)
        finished = [s for s, (i, t) in enumerate(zip(owner, next_ids.tolist(), strict=True)) if ended(i, t)]
        batch.feed[: batch.rows] = next_ids
        if finished:
            progress.finished([len(tokens[owner[s]]) for s in finished])
            for src, dst in batch.remove(finished):
                owner[dst] = owner[src]
            del owner[batch.rows :]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generating",
    mode: Literal["drop", "static"] = "drop",
    cache_budget: int | None = None,
) -> tuple[list[Generation], GenStats]:
    """Greedy completions of ``prompts`` (in order) and what computing them cost (``GenStats``).

    ``batch_size`` is the number of rows decoded together: static batches of that size, or that many slots
    refilled from the queue of prompts (``mode="drop"``), fewer where their preallocated keys and values would
    exceed ``cache_budget`` bytes (``slots_within``; ``None``: no ceiling). Which rows share a step does not
    change a greedy row's tokens (tests/test_generate.py), so the budget changes speed and memory, not answers.
    """
    if mode not in ("drop", "static"):
        raise ValueError(f"generate mode must be 'drop' or 'static', not {mode!r}")
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    # Longest prompts first: rows of similar length waste less padding (the continuous batch orders its
    # queue by tokens itself); the original order is restored below.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rows: list[list[int]] = []
    slots, n_rows = 0, batch_size
    with torch.inference_mode():
        ids = [tokenizer(prompts[i])["input_ids"] for i in order] if mode == "drop" else []
        if mode == "drop" and not fits_window(model.config, max(len(x) for x in ids) + max_new_tokens):
            print(
                f"{desc}: prompt + max_new_tokens exceed the model's sliding window; decoding in static batches",
                flush=True,
            )
            mode = "static"
        label = f"{desc} [{len(prompts)} problems, {batch_size} rows]"
        with tqdm(desc=label, unit="tok", leave=False, dynamic_ncols=True) as bar:
            progress = Progress(bar, len(prompts), max_new_tokens)
            if mode == "drop":
                rows, slots, n_rows = _continuous(
                    model, tokenizer, ids, max_new_tokens, batch_size, progress, cache_budget
                )
            else:
                for lo in range(0, len(order), batch_size):
                    idx = order[lo : lo + batch_size]
                    enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
                    batch_rows, batch_slots = _static_batch(model, tokenizer, enc, max_new_tokens, progress)
                    rows += batch_rows
                    slots += batch_slots
    results: dict[int, Generation] = {}
    useful = 0
    for ids_out, i in zip(rows, order, strict=True):
        n = ids_out.index(eos) + 1 if eos in ids_out else len(ids_out)
        text = tokenizer.decode(ids_out[:n], skip_special_tokens=True).strip()
        results[i] = Generation(text, n, truncated=eos not in ids_out[:n])
        useful += n
    stats = GenStats(useful, slots, time.perf_counter() - start, rows=min(n_rows, len(prompts)))
    return [results[i] for i in range(len(prompts))], stats


def fits_window(config, span: int) -> bool:
    """The slot cache keeps every column (no sliding window): it agrees with a sliding-window model only while
    a row's prompt and completion fit in the window; beyond it the static path (which keeps one) is used."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    return not (window and span > window and (any("sliding" in t for t in types) or not types))


def slot_cache_bytes(config, slots: int, span: int, dtype_bytes: int, more_prompts: bool) -> int:
    """Bytes ``_Slots`` preallocates: K and V of every layer, ``slots`` rows of ``capacity`` columns.

    The capacity is ``span`` (longest prompt + max_new_tokens), or ``1.5 * span + 1`` when more prompts than
    slots are queued (room for refills before the window shifts), as ``_continuous`` sizes it.
    """
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    capacity = span + span // 2 + 1 if more_prompts else span
    return 2 * text.num_hidden_layers * slots * heads * capacity * head_dim * dtype_bytes


def slots_within(config, slots: int, n_prompts: int, span: int, dtype_bytes: int, budget: int | None) -> int:
    """The continuous batch's slot count: ``slots``, at most one per prompt, and no more than fit ``budget``
    bytes of slot cache (``slot_cache_bytes``); at least one whatever the budget (a single row's cache is what
    any decoding needs)."""
    slots = max(1, min(slots, n_prompts))
    if budget is None or slot_cache_bytes(config, slots, span, dtype_bytes, n_prompts > slots) <= budget:
        return slots
    queued_slot = slot_cache_bytes(
        config, 1, span, dtype_bytes, True
    )  # fewer slots than prompts: x1.5 columns
    return max(1, min(slots - 1, budget // queued_slot))


def _compute_bytes(model) -> int:
    """Bytes per element of the keys and values a forward writes (the model's compute dtype)."""
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return torch.finfo(dtype).bits // 8


def time_decode_steps(
    model, *, rows: int, context: int, steps: int, budget_s: float = float("inf")
) -> tuple[float, int]:
    """(seconds per step, steps timed) of the continuous batch's decoding step with ``rows`` live slots whose
    caches hold ``context`` columns: the step ``_continuous`` runs, on a zero-filled slot cache (shapes decide
    its cost, not values). One untimed step first (kernel set-up); then ``steps`` steps, or fewer once
    ``budget_s`` has passed (at least one). For the dry run's wall-time probe (``mathgpt.budget``).
    """
    device, cache_kw = next(model.parameters()).device, _cache_kwarg(model)
    with torch.inference_mode():
        # one 1-token prefill gives the cache's layer shapes (heads, head_dim, dtype) to allocate from
        cache, _, _, _ = _prefill(model, [[0]], 0, device, cache_kw)
        batch = _Slots(model, rows, context + steps + 2)
        batch._allocate(cache, device)
        batch.rows, batch.n = rows, context
        batch.mask[:, :context] = 1
        batch.pos[:] = context
        batch.step(cache_kw)
        start, done = time.perf_counter(), 0
        while done < steps and (done == 0 or time.perf_counter() - start < budget_s):
            batch.step(cache_kw)
            done += 1
        return (time.perf_counter() - start) / done, done


def time_prefill(model, ids: list[list[int]], pad_id: int) -> float:
    """Seconds of one prefill forward of ``ids`` (left-padded, as ``_continuous`` prefills a group)."""
    device, cache_kw = next(model.parameters()).device, _cache_kwarg(model)
    with torch.inference_mode():
        start = time.perf_counter()
        _prefill(model, ids, pad_id, device, cache_kw)
        return time.perf_counter() - start
