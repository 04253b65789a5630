"""Prompt formats: one function turns a question into the text the model sees, at training and evaluation alike.

Using the same function on both sides is the point: a fine-tuned model scored with a different prompt than it
was trained with measures the mismatch, not the fine-tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
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


# A solved example is (question, solution): what a k-shot prompt shows before the question it asks.
Shot = tuple[str, str]

# Plain and Alpaca k-shot prompts separate solved examples with a blank line; a model that goes on to invent
# the next example is cut where that example would start (chat turns end on their own end-of-turn token).
SHOT_SEPARATOR = "\n\n"
_NEXT_SHOT = {"plain": "\nQuestion:", "alpaca": "\nBelow is an instruction"}


def resolved_format(fmt: PromptFormat, tokenizer=None) -> str:
    """ "auto" resolved for this tokenizer: the model's own chat template when it has one, else "plain"."""
    if fmt == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return fmt


def format_prompt(question: str, fmt: PromptFormat, tokenizer=None, shots: Sequence[Shot] = ()) -> str:
    """The prompt text, ending where the model's answer begins; ``shots`` are solved examples shown first."""
    fmt = resolved_format(fmt, tokenizer)
    if fmt in ("plain", "alpaca"):
        template = PLAIN if fmt == "plain" else ALPACA
        solved = "".join(template.format(question=q) + format_target(a) + SHOT_SEPARATOR for q, a in shots)
        return solved + template.format(question=question)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "data.prompt_format 'chat' needs a tokenizer with a chat template; use 'auto', 'alpaca' or 'plain'"
        )
    # An explicit empty system turn keeps templates from injecting their default system prompt, which costs
    # tokens on every example (measured ~1.3x slower on CPU for SmolLM2). Templates that reject a system role
    # (some Mistral ones) get the user turns alone. Solved examples are earlier user/assistant turns.
    turns = []
    for q, a in shots:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": format_target(a)}]
    turns.append({"role": "user", "content": question})
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": ""}, *turns], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - jinja raises its own exception types for unsupported roles
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def cut_invented_shot(text: str, fmt: PromptFormat, tokenizer=None) -> tuple[str, bool]:
    """(answer, cut): a k-shot answer up to where the model starts inventing another solved example."""
    marker = _NEXT_SHOT.get(resolved_format(fmt, tokenizer))
    at = text.find(marker) if marker else -1
    return (text[:at].rstrip(), True) if at >= 0 else (text, False)


def format_target(solution: str) -> str:
    """The training target; the end-of-sequence token is appended as an id, not as text."""
    return solution.strip()
