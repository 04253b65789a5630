"""Shared fixtures: a tiny random Mistral with a character tokenizer, saved like any local model directory.

It goes through exactly the code path of a real model (``model.name: <dir>``), loads in well under a second,
and needs no network. W&B is disabled unless a test asks otherwise.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DATA_MISSING = "../shared/data missing"  # every data-dependent skip carries this reason: one summary line


def need_data(path: Path) -> Path:
    """``path`` when it exists. Otherwise the test fails under CI (``CI=true``: the suite must see real data)
    and is skipped elsewhere, counted in one summary line."""
    if path.exists():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{path} not found: CI runs with ../shared/data (or MATHGPT_DATA_DIR) present", pytrace=False
        )
    pytest.skip(DATA_MISSING)


def data_root() -> Path:
    """$MATHGPT_DATA_DIR, else ../shared/data next to the repo."""
    return Path(os.environ.get("MATHGPT_DATA_DIR") or SHARED_DATA)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per skip reason with its count (pyproject's -rfE lists failures only), data first."""
    reasons: dict[str, int] = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: DATA_MISSING not in kv[0]):
        tail = " (CI=true fails them)" if DATA_MISSING in reason else ""
        terminalreporter.write_line(f"{n} test(s) skipped: {reason}{tail}")


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save a ~100k-parameter MistralForCausalLM and a character-level tokenizer (pad == eos) to ``path``."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = sorted(set(string.printable) - set("\r\x0b\x0c"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    MistralForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(autouse=True)
def _quiet_tracking(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", os.environ.get("MATHGPT_TEST_WANDB_MODE", "disabled"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def tiny_run_config(model_dir: Path, **sections) -> dict:
    """A raw run config for the tiny model on synthetic data, small enough to run in seconds."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "model": {"name": str(model_dir)},
        "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
        "data": {"train_size": 32, "eval_size": 8, "max_seq_len": 256, "prompt_format": "plain"},
        "train": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 2},
        "eval": {"max_new_tokens": 8, "batch_size": 8},
        "tracking": {"mode": "disabled"},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


@pytest.fixture
def write_config(tmp_path):
    def write(raw: dict, name: str = "run.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
