"""The dropping decode loop against transformers' static generate, on the tiny random model."""

from __future__ import annotations

import io

import pytest
import torch
from tqdm.std import tqdm as tqdm_std
from transformers import AutoModelForCausalLM

from mathgpt import generate as generate_mod
from mathgpt.generate import GenStats, generate
from mathgpt.model import add_lora, load_tokenizer


def _model(tiny_model_dir, eos_bias: float):
    """The tiny model with a bias towards EOS, so rows finish at different steps (a random model rarely stops)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        model.lm_head.weight[2] += eos_bias * model.model.norm.weight.sign()
    return model


PROMPTS = [f"Question {i}: what is {i} + {3 * i}? " + "x" * (i % 5) for i in range(12)]


@pytest.mark.parametrize("eos_bias", [0.0, 0.01, 0.05])
@pytest.mark.parametrize("batch_size", [12, 5])
def test_drop_matches_static_generate(tiny_model_dir, eos_bias, batch_size):
    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, eos_bias)
    kw = dict(max_new_tokens=24, batch_size=batch_size)
    static, s_stats = generate(model, tok, PROMPTS, mode="static", **kw)
    drop, d_stats = generate(model, tok, PROMPTS, mode="drop", **kw)
    assert drop == static  # text, n_tokens and truncated, row by row
    assert d_stats.useful_tokens == s_stats.useful_tokens == sum(g.n_tokens for g in drop)
    # Every row-step of the dropping loop is kept; the static path pays for finished rows.
    assert d_stats.slot_tokens == d_stats.useful_tokens
    assert s_stats.slot_tokens >= s_stats.useful_tokens


def test_rows_finish_at_different_steps_and_truncation_is_flagged(tiny_model_dir):
    """Guards the test above: with a bias, rows stop at different steps, and some hit the cap."""
    tok = load_tokenizer(str(tiny_model_dir))
    kw = dict(max_new_tokens=24, batch_size=12, mode="static")
    varied, stats = generate(_model(tiny_model_dir, 0.05), tok, PROMPTS, **kw)
    assert len({g.n_tokens for g in varied}) > 2 and stats.useful_fraction < 0.8
    capped, _ = generate(_model(tiny_model_dir, 0.01), tok, PROMPTS, **kw)
    assert {g.truncated for g in capped} == {True, False}
    assert all(g.truncated == (g.n_tokens == 24) for g in varied + capped)


def test_drop_matches_static_with_a_peft_model(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    model = add_lora(_model(tiny_model_dir, 0.05), r=4, alpha=8.0, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():  # a non-zero adapter, so the LoRA path changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    kw = dict(max_new_tokens=16, batch_size=12)
    assert (
        generate(model, tok, PROMPTS, mode="drop", **kw)[0]
        == generate(model, tok, PROMPTS, mode="static", **kw)[0]
    )


def test_stats_record():
    s = GenStats(useful_tokens=80, slot_tokens=100, wall_s=2.0)
    assert s.as_dict() == {
        "useful_tokens": 80,
        "slot_tokens": 100,
        "useful_fraction": 0.8,
        "useful_tokens_per_s": 40.0,
        "slot_tokens_per_s": 50.0,
        "rows": 0,
    }


def test_bad_mode_is_refused(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match="mode"):
        generate(None, tok, ["a"], max_new_tokens=1, batch_size=1, mode="beam")


def test_evaluate_reports_generation_stats(tiny_model_dir):
    from mathgpt.evaluate import EvalSet, evaluate
    from mathgpt.synthetic import make_problems as synthetic

    tok = load_tokenizer(str(tiny_model_dir))
    res = evaluate(
        _model(tiny_model_dir, 0.05),
        tok,
        [EvalSet("synthetic:test", synthetic("test", 6))],
        prompt_format="plain",
        max_new_tokens=12,
        batch_size=6,
        desc="eval",
    )
    assert set(res.gen) == {
        "useful_tokens",
        "slot_tokens",
        "useful_fraction",
        "useful_tokens_per_s",
        "slot_tokens_per_s",
        "rows",
    }
    assert res.gen["rows"] == 6
    assert res.gen["useful_tokens"] == res.gen["slot_tokens"] == sum(r["n_tokens"] for r in res.records)
    assert res.tokens_per_s == pytest.approx(res.gen["useful_tokens_per_s"], rel=1e-3)
    assert all(isinstance(r["truncated"], bool) for r in res.records)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_refilled_slots_match_static_generate_and_shift_the_window(tiny_model_dir, batch_size, monkeypatch):
    """Fewer slots than prompts: rows end, prompts from the queue take their slots, and the cache window
    shifts left when its columns run out; every completion is still the static path's."""
    from mathgpt import generate as gen

    shifts = []
    make_room = gen._Slots.make_room

    def counting(self, keep):
        n = self.n
        make_room(self, keep)
        if self.n < n and self.rows:
            shifts.append(n - self.n)

    monkeypatch.setattr(gen._Slots, "make_room", counting)
    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, 0.01)  # rows of 1-24 tokens: they end at different steps, some at the cap
    static, _ = generate(model, tok, PROMPTS, mode="static", max_new_tokens=24, batch_size=12)
    drop, stats = generate(model, tok, PROMPTS, mode="drop", max_new_tokens=24, batch_size=batch_size)
    assert drop == static
    assert stats.slot_tokens == stats.useful_tokens == sum(g.n_tokens for g in drop)
    if batch_size == 2:  # six prompts pass through each slot: more columns than a window holds
        assert shifts


def test_slots_within_a_cache_budget(tiny_model_dir):
    """The budget buys whole slots at the cache's own size: every slot without a queue, fewer with one
    (1.5x columns for refills), never under one."""
    from mathgpt.generate import slot_cache_bytes, slots_within

    config = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config
    text = config.get_text_config()
    # one slot, one column: K and V of every layer, kv heads x head dim, fp32
    column = (
        2
        * text.num_hidden_layers
        * text.num_key_value_heads
        * (text.hidden_size // text.num_attention_heads)
        * 4
    )
    assert slot_cache_bytes(config, 1, 1, 4, False) == column
    span, queued = 40, slot_cache_bytes(config, 1, 40, 4, True)
    assert queued == column * (40 + 20 + 1)
    assert slots_within(config, 12, 12, span, 4, None) == 12
    assert slots_within(config, 50, 12, span, 4, None) == 12  # never more slots than prompts
    assert slots_within(config, 12, 12, span, 4, 12 * 40 * column) == 12  # all fit, no queue: span columns
    assert slots_within(config, 12, 12, span, 4, 12 * 40 * column - 1) == 11 * 40 * column // queued
    assert slots_within(config, 12, 30, span, 4, 5 * queued) == 5
    assert slots_within(config, 12, 30, span, 4, 5 * queued - 1) == 4
    assert slots_within(config, 12, 30, span, 4, 1) == 1
    for budget in (1, 3 * queued, 7 * queued + 5, 12 * queued):
        k = slots_within(config, 12, 30, span, 4, budget)
        assert k == 1 or slot_cache_bytes(config, k, span, 4, True) <= budget


def test_a_cache_budget_decodes_fewer_rows_with_the_same_answers(tiny_model_dir):
    """Under a budget of a few slots the continuous batch decodes fewer rows (recorded in the stats), and the
    completions are still the static path's."""
    from mathgpt.generate import slot_cache_bytes

    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, 0.01)
    kw = dict(max_new_tokens=24, batch_size=12)
    static, _ = generate(model, tok, PROMPTS, mode="static", **kw)
    span = max(len(tok(p)["input_ids"]) for p in PROMPTS) + 24
    budget = slot_cache_bytes(model.config, 3, span, 4, True)
    drop, stats = generate(model, tok, PROMPTS, mode="drop", cache_budget=budget, **kw)
    assert stats.rows == 3 and drop == static
    assert generate(model, tok, PROMPTS, mode="drop", **kw)[1].rows == 12


@pytest.mark.parametrize("max_new_tokens", [1, 2])
def test_rows_that_end_at_their_first_tokens(tiny_model_dir, max_new_tokens):
    """A row can end at the prefill's token (EOS, or a 1-token cap) and never take a decoding slot."""
    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, 0.05)
    kw = dict(max_new_tokens=max_new_tokens, batch_size=4)
    drop, stats = generate(model, tok, PROMPTS, mode="drop", **kw)
    assert drop == generate(model, tok, PROMPTS, mode="static", **kw)[0]
    assert stats.slot_tokens == stats.useful_tokens
    assert any(g.n_tokens == 1 and not g.truncated for g in drop)  # an EOS first
    if max_new_tokens == 1:
        assert all(g.n_tokens == 1 for g in drop)


def test_a_span_past_the_sliding_window_decodes_in_static_batches(tiny_model_dir, capsys):
    """The slot cache keeps no sliding window: past it, generate falls back to the static path (same text)
    instead of failing an evaluation after training."""
    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, 0.0)
    kw = dict(max_new_tokens=24, batch_size=4)
    model.config.sliding_window = 20
    reference = generate(model, tok, PROMPTS, mode="static", **kw)[0]
    capsys.readouterr()
    gens, stats = generate(model, tok, PROMPTS, mode="drop", **kw)
    assert "sliding window" in capsys.readouterr().out
    assert (
        gens == reference and stats.slot_tokens > stats.useful_tokens
    )  # static batches pay for finished rows


def test_the_queue_orders_itself_longest_prompt_first(tiny_model_dir):
    """The window opened by the first group must hold every later prompt: the continuous batch sorts its queue
    by token count itself, whatever order it is handed (here shortest first)."""
    from tqdm.auto import tqdm

    from mathgpt import generate as gen

    tok = load_tokenizer(str(tiny_model_dir))
    model = _model(tiny_model_dir, 0.01)
    # shortest first, and the long ones longer than a short prompt plus its whole completion
    prompts = [f"Q{i}: " + "y" * n for i, n in enumerate([1, 2, 3, 50, 60, 70])]
    ids = [tok(p)["input_ids"] for p in prompts]
    assert len(ids[1]) + 24 < len(ids[3])
    with torch.inference_mode():
        rows, _, _ = gen._continuous(model, tok, ids, 24, 2, gen.Progress(tqdm(disable=True), len(ids), 24))
    static, _ = generate(model, tok, prompts, mode="static", max_new_tokens=24, batch_size=12)
    eos = tok.eos_token_id
    texts = [
        tok.decode(r[: r.index(eos) + 1 if eos in r else len(r)], skip_special_tokens=True).strip()
        for r in rows
    ]
    assert texts == [g.text for g in static]


class _RecordingBar(tqdm_std):
    """A real tqdm bar (into a string buffer) that records (tokens, total, finished problems) as it moves."""

    def __init__(self, *args, **kwargs):
        self.snapshots: list[tuple[int, int, str]] = []
        _RecordingBar.last = self
        super().__init__(*args, file=io.StringIO(), **kwargs)

    def update(self, n=1):
        super().update(n)
        self.snapshots.append((self.n, self.total, self.postfix))

    def refresh(self, *args, **kwargs):
        super().refresh(*args, **kwargs)
        self.snapshots.append((self.n, self.total, self.postfix))


@pytest.mark.parametrize("mode", ["drop", "static"])
@pytest.mark.parametrize("eos_bias", [0.0, 0.01])
def test_the_bar_moves_per_token_before_any_problem_finishes(tiny_model_dir, monkeypatch, mode, eos_bias):
    monkeypatch.setattr(generate_mod, "tqdm", _RecordingBar)
    tok = load_tokenizer(str(tiny_model_dir))
    gens, stats = generate(
        _model(tiny_model_dir, eos_bias), tok, PROMPTS, max_new_tokens=24, batch_size=5, mode=mode
    )
    bar = _RecordingBar.last
    moving = [(n, done) for n, _, done in bar.snapshots if n > 0]
    # It moves while no problem has finished yet, once per decoding step of a batch, not per problem.
    before = [n for n, done in moving if done == "0/12 problems"]
    assert before and before[-1] >= 5 * 2, "the bar did not move before the first problem finished"
    assert len({n for n, _ in moving}) >= 24
    assert all(a[0] <= b[0] for a, b in zip(bar.snapshots, bar.snapshots[1:], strict=False))
    # It ends on the kept tokens: the total shed every early stop's unused budget.
    assert bar.n == bar.total == stats.useful_tokens == sum(g.n_tokens for g in gens)
    assert bar.postfix == "12/12 problems" and "tok/s" in str(bar)
    if eos_bias:
        assert bar.total < 12 * 24  # some rows stopped early (EOS), so the total dropped
