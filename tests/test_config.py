"""Run configs: every shipped config validates; errors are one line naming the key."""

from __future__ import annotations

import pytest

from mathgpt.config import ConfigError, load_config, parse_config, set_dotted
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_alpha_is_tied_to_rank_unless_set():
    assert parse_config({"lora": {"r": 8}}).lora.lora_alpha == 16
    assert parse_config({"lora": {"r": 8, "alpha": 8}}).lora.lora_alpha == 8


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"modle": {}}, "unknown key 'modle'"),
        ({"train": {"epochs": "three"}}, "'train.epochs'"),
        ({"data": {"eval": []}}, "'data.eval'"),
        ({"name": "a/b"}, "'name'"),
        ([1, 2], "mapping"),
    ],
)
def test_errors_are_one_line_and_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_set_dotted_reaches_any_knob_without_mutating():
    raw = {"lora": {"r": 4}}
    out = set_dotted(raw, "lora.r", 32)
    out = set_dotted(out, "train.learning_rate", 1e-4)
    assert raw == {"lora": {"r": 4}}
    cfg = parse_config(out)
    assert cfg.lora.r == 32 and cfg.train.learning_rate == 1e-4
    with pytest.raises(ConfigError):
        set_dotted({"lora": 3}, "lora.r", 1)


def test_auto_prompt_format_follows_the_tokenizer_and_chat_without_template_is_one_line():
    from types import SimpleNamespace

    from mathgpt.config import ConfigError
    from mathgpt.prompts import format_prompt

    bare = SimpleNamespace(chat_template=None)
    assert format_prompt("What is 2+2?", "auto", bare) == format_prompt("What is 2+2?", "plain")
    with pytest.raises(ConfigError, match="prompt_format 'chat' needs"):
        format_prompt("What is 2+2?", "chat", bare)
