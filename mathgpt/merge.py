"""Combine LoRA adapters trained on the same base model into one, with peft's own ``add_weighted_adapter``.

Methods (peft's names): ``linear`` (weighted sum of the A and B factors; equal ranks), ``cat`` (the factors
concatenated: the update is exactly sum_i w_i B_i A_i, rank = sum of ranks), ``ties`` / ``dare_linear`` /
``dare_ties`` (TIES sign election and DARE random drop-and-rescale, keeping ``density`` of each factor;
equal ranks). DARE draws at random: the draw is seeded (``seed``), so a merge is reproducible.

The result is a plain adapter folder; ``model.adapter: DIR`` with ``train.epochs: 0`` evaluates it like any run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mathgpt.config import ConfigError, ModelConfig
from mathgpt.model import adapter_base, check_adapter_base, load_model, reason

METHODS = ("linear", "cat", "ties", "dare_linear", "dare_ties")
NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties")


def merge_adapters(
    base: str,
    adapters: list[str | Path],
    weights: list[float],
    method: str,
    out: str | Path,
    density: float | None = None,
    seed: int = 0,
) -> Path:
    """Write the merged adapter to ``out`` (adapter_config.json, adapter_model.safetensors, merge.json)."""
    from peft import PeftModel

    if method not in METHODS:
        raise ConfigError(f"merge method '{method}' unknown; known: {', '.join(METHODS)}")
    if len(adapters) < 2:
        raise ConfigError("merge needs at least two adapters")
    if len(weights) != len(adapters):
        raise ConfigError(f"{len(adapters)} adapters but {len(weights)} weights")
    if method in NEEDS_DENSITY and (density is None or not 0 < density <= 1):
        raise ConfigError(f"merge method '{method}' needs --density in (0, 1] (got {density})")
    for a in adapters:
        check_adapter_base(a, base)  # one line for an adapter of another base, before any weight is read
    names = [f"a{i}" for i in range(len(adapters))]
    model = load_model(ModelConfig(name=base), "cpu")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
        for name, path in zip(names[1:], adapters[1:], strict=True):
            peft_model.load_adapter(str(path), adapter_name=name)
        torch.manual_seed(seed)  # DARE's random drop
        # Named "default" so save_pretrained writes it at the folder's top level, like a run's adapter/.
        peft_model.add_weighted_adapter(
            names, list(weights), "default", combination_type=method, density=density
        )
    except (RuntimeError, ValueError) as err:  # shapes of another model, unequal ranks for linear/ties/dare
        raise ConfigError(f"cannot merge {[str(a) for a in adapters]}: {reason(err)}") from None
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    peft_model.save_pretrained(out, selected_adapters=["default"])
    provenance = {
        "base": base,
        "base_model_name_or_path": adapter_base(adapters[0]),
        "adapters": [str(a) for a in adapters],
        "weights": list(weights),
        "method": method,
        "density": density,
        "seed": seed,
    }
    (out / "merge.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out
