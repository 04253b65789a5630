"""Valid point records (``mathgpt.record.Point``) for tests: every field present, the asked ones set."""

from __future__ import annotations

from typing import Any

KNOBS = {
    "model": "tiny",
    "seed": 0,
    "train_size": 8,
    "epochs": 1,
    "lora_r": 8,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "learning_rate": 1e-3,
    "batch_size": 8,
    "mix_fraction": 0.0,
}


def select(
    correct: list[int], fingerprint: str = "fp-select", accuracy: float | None = None
) -> dict[str, Any]:
    n, k = len(correct), sum(correct)
    acc = k / n if accuracy is None else accuracy
    return {"accuracy": acc, "ci95": [0.0, 1.0], "n_eval": n, "n_correct": k, "fingerprint": fingerprint,
            "ids": None, "correct": correct}  # fmt: skip


def point(correct: list[int], knobs: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """An epochs.jsonl line scored ``correct`` on the report slice; ``fields`` override the rest."""
    n, k = len(correct), sum(correct)
    line = {
        "point": 1, "epoch": 1.0, "train_examples": 8, "optimizer_steps": 1, "train_tokens": 100,
        "train_wall_s": 1.0, "eval_wall_s": 1.0, "loss": None, "accuracy": k / n if n else 0.0,
        "ci95": [0.0, 1.0], "n_eval": n, "n_correct": k, "strict_accuracy": k / n if n else 0.0,
        "n_answered": n, "n_truncated": 0, "n_no_answer": 0, "n_ungradable": 0, "ids": None,
        "correct": correct, "answered": [1] * n, "status": ["correct" if c else "wrong" for c in correct],
        "fingerprint": "fp", "by_set": {}, "select": None, "general": {}, "checker_version": "3", "gen": None,
        "knobs": {**KNOBS, **(knobs or {})}, "machine": None,
    }  # fmt: skip
    return line | fields
