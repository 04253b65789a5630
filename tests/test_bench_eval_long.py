"""bench/bench_eval_long.py: its FLOP arithmetic by hand, and one whole run on the tiny model (2 problems, 8 tokens)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

from bench.bench_eval_long import decode_flops_per_s, decode_params, decoding, main, matmul_fraction
from tests.conftest import data_root, need_data


def _by_hand(c) -> int:
    """Mistral without biases: q, k, v, o, the gated MLP and two norms per layer, the final norm, the head."""
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    layer = (
        2 * c.hidden_size**2
        + 2 * c.hidden_size * kv
        + 3 * c.hidden_size * c.intermediate_size
        + 2 * c.hidden_size
    )
    return c.num_hidden_layers * layer + c.hidden_size + c.vocab_size * c.hidden_size


def test_decode_params_leave_out_the_embedding_and_count_the_head(tiny_model_dir):
    untied = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert decode_params(untied) == _by_hand(untied.config)
    assert (
        sum(p.numel() for p in untied.parameters()) == _by_hand(untied.config) + untied.config.vocab_size * 32
    )
    # Tied: the table is stored once, but every token still multiplies it as the output head.
    tied = MistralForCausalLM(MistralConfig(**{**untied.config.to_dict(), "tie_word_embeddings": True}))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert decode_params(tied) == _by_hand(tied.config) == sum(p.numel() for p in tied.parameters())


def test_matmul_fraction_by_hand():
    # Qwen2.5-0.5B's 494M decoding parameters at 100 slot tokens/s: 2 x 494e6 x 100 = 98.8 GFLOP/s.
    assert decode_flops_per_s(494_000_000, 100.0) == pytest.approx(98.8e9)
    assert matmul_fraction(494_000_000, 100.0, 247e9) == pytest.approx(0.4)


def test_paths_are_named_and_unknown_ones_refused():
    assert decoding("drop@8", 40).slots == 8 and "8 slots" in decoding("drop@8", 40).label
    assert decoding("one-prefill", 40).prefill_rows > 40 and decoding("bf16", 40).bf16
    assert decoding("mode:fast", 40).mode == "fast"
    with pytest.raises(SystemExit, match="unknown path 'beam'"):
        decoding("beam", 40)


def test_main_on_the_tiny_model_writes_every_path(tiny_model_dir, tmp_path):
    data = need_data(data_root() / "gsm8k" / "test.jsonl").parents[1]
    results = tmp_path / "RESULTS.md"
    argv = ["--models", str(tiny_model_dir), "--problems", "2", "--caps", "8", "--paths", "static", "drop",
            "one-prefill", "drop@1", "--bf16", "--square", "64", "--stream-mb", "1", "--repeats", "1",
            "--data-dir", str(data), "--results", str(results)]  # fmt: skip
    main(argv)
    doc = results.read_text()
    assert "<!-- begin eval-long -->" in doc and "<!-- end eval-long -->" in doc
    rows = [
        line.split(" | ") for line in doc.splitlines() if line.startswith(f"| {tiny_model_dir.name} | 8 |")
    ]
    assert [r[2] for r in rows] == [
        "static `model.generate`, batches of 2",
        "continuous batch, 2 slots (`mode='drop'`)",
        "continuous batch, 2 slots, one padded prefill (no length groups)",
        "continuous batch, 1 slot (`mode='drop'`)",
        "continuous batch, 2 slots, bf16 weights",
    ]
    static = rows[0]
    for fp32 in rows[1:4]:  # the fp32 continuous paths compute the static path's tokens
        assert fp32[3] == static[3] and fp32[-1] == "2/2 |" and fp32[-2] == "2/2"
    assert all(0 < float(r[11]) < float(r[14]) for r in rows)  # decoding GFLOP/s, then with the prompts added
    assert "min in all" in doc and "partial" not in doc  # the last write replaced the per-path ones
    assert "--paths static drop one-prefill drop@1 --bf16" in doc
