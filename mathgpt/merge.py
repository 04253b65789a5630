"""Combine LoRA adapters trained on the same base model into one, with peft's own ``add_weighted_adapter``.

Methods (peft's names): ``linear`` (weighted sum of the A and B factors; equal ranks), ``cat`` (the factors
concatenated: the update is exactly sum_i w_i B_i A_i, rank = sum of ranks), ``ties`` / ``dare_linear`` /
``dare_ties`` (TIES sign election and DARE random drop-and-rescale, keeping ``density`` of each factor;
equal ranks). DARE draws at random: the draw is seeded (``seed``), so a merge is reproducible.

The result is a plain adapter folder; ``model.adapter: DIR`` with ``train.epochs: 0`` evaluates it like any run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mathgpt.config import ConfigError
from mathgpt.model import adapter_base, check_adapter_base, load_model, reason

METHODS = ("linear", "cat", "ties", "dare_linear", "dare_ties")
NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties")
# What a merge writes (peft's save_pretrained adds README.md): a folder holding only these is an earlier merge's
# output and is overwritten file by file; anything else in --out is the user's and makes the merge refuse.
MERGE_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "merge.json")


def check_out(out: Path, adapters: list[str | Path]) -> None:
    """Refuse an ``--out`` that would overwrite anything the merge did not write itself (one line)."""
    target = out.resolve()
    for a in adapters:
        src = Path(a).resolve()
        if target == src or target in src.parents or src in target.parents:
            raise ConfigError(f"--out {out} holds or lies inside the input adapter {a}; pick a new folder")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {out} is a file; pick a new folder")
    if not target.is_dir():
        return
    names = {p.name for p in target.iterdir()}
    if names and ("merge.json" not in names or not names <= set(MERGE_FILES)):
        raise ConfigError(
            f"--out {out} is a non-empty folder that is not an earlier merge's output; pick a new folder"
        )


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
    out = Path(out)
    check_out(out, adapters)  # before any weight is read, and nothing is ever deleted
    names = [f"a{i}" for i in range(len(adapters))]
    model = load_model(base, device="cpu")
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
