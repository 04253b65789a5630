"""Prompt formats: one function turns a question into the text the model sees, at training and evaluation alike.

Using the same function on both sides is the point: a fine-tuned model scored with a different prompt than it
was trained with measures the mismatch, not the fine-tuning.
"""

from __future__ import annotations

from typing import Literal

from mathgpt.config import ConfigError

# "auto": the model's own chat template when its tokenizer has one, else "plain", so a study whose model axis
# mixes instruct models (templates) and base models (none) resolves the format per model.
PromptFormat = Literal["plain", "alpaca", "chat", "auto"]

# The Alpaca-style template MAmmoTH was trained with (its published prompt text).
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{question}\n\n### Response:\n"
)
PLAIN = "Question: {question}\nAnswer: "


def format_prompt(question: str, fmt: PromptFormat, tokenizer=None) -> str:
    """The prompt text, ending where the model's answer begins."""
    if fmt == "auto":
        fmt = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if fmt == "plain":
        return PLAIN.format(question=question)
    if fmt == "alpaca":
        return ALPACA.format(question=question)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "data.prompt_format 'chat' needs a tokenizer with a chat template; use 'auto', 'alpaca' or 'plain'"
        )
    # An explicit empty system turn keeps templates from injecting their default system prompt, which costs
    # tokens on every example (measured ~1.3x slower on CPU for SmolLM2). Templates that reject a system role
    # (some Mistral ones) get the user turn alone.
    user = {"role": "user", "content": question}
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": ""}, user], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - jinja raises its own exception types for unsupported roles
        return tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)


def format_target(solution: str) -> str:
    """The training target; the end-of-sequence token is appended as an id, not as text."""
    return solution.strip()
