"""The sweep YAML: search space, sampler, pruner, seeds and the answer's report settings, validated.

A sweep file names a base run config, dotted ``overrides`` applied to every trial, and ``params`` (the search
space, each mapped to one dotted run-config key). ``seeds`` is a first-class axis: the study adds a categorical
param named ``seed`` over it, mapped to the run's top-level ``seed`` (the training seed). The evaluation slices
have their own fixed seed (``data.eval_seed``), so every trial is scored on the same problems; a param that
would change the slices is refused.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import Field, ValidationError, field_validator, model_validator

from mathgpt.config import (
    ConfigError,
    RunConfig,
    Strict,
    parse_config,
    read_yaml,
    set_dotted,
    validation_line,
)
from mathgpt.data import DataError, check_name
from mathgpt.record import KNOBS, knob_values
from mathgpt.storage import check_study_name

SEED_PARAM = "seed"  # the seeds axis's param name and its run-config key
DESIGN_OVERRIDES = "overrides"  # a "list" design entry's own run-config keys beyond its params
# Keys that choose the evaluation slices: a study that varied them could not pair its trials.
SLICE_KEYS = ("data.eval", "data.eval_seed", "data.eval_size", "data.select_size", "eval.general",
              "eval.general_size", "data.data_dir")  # fmt: skip


class ParamSpec(Strict):
    key: str  # dotted run-config key, e.g. data.train_size, train.epochs, lora.r, model.name
    type: Literal["categorical", "int", "log_int", "float", "log_float"]
    choices: list[int | float | str | bool] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("categorical needs a non-empty 'choices' and no low/high")
        else:
            if self.choices is not None or self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs 'low' and 'high' and no choices")
            if not self.low < self.high or (self.type.startswith("log") and self.low <= 0):
                raise ValueError("needs 0 < low < high for log types, low < high otherwise")
        return self


class SamplerSpec(Strict):
    # "list": exactly the sweep's ``trials`` points, each for its seeds (a design that is not a full grid,
    # e.g. a second rank at one data size); they are queued as fixed trials, so nothing is sampled.
    type: Literal["tpe", "random", "grid", "list"] = "tpe"
    seed: int = 0


class PrunerSpec(Strict):
    type: Literal["none", "median", "hyperband", "wilcoxon"] = "none"
    # median: trials that finish before any pruning and the points a trial always gets.
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    # hyperband: the reported step (epoch, or examples with eval.at_examples) is the resource.
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    # wilcoxon: per-problem paired test against the best trial.
    p_threshold: float = Field(0.1, gt=0, lt=1)


class ReportSpec(Strict):
    """What the answer asks for: the smallest gain (accuracy points as a fraction) worth claiming."""

    delta: float = Field(0.03, ge=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1)
    general_margin: float = Field(0.03, gt=0, lt=1)  # general ability: TOST equivalence margin
    # What the gains are measured against: "strongest" (the baseline with the highest selection-slice
    # accuracy, so the choice never looks at the report slice), "base" (the zero-shot base at the trials' own
    # prompt and cap), or the name of one of the sweep's ``baselines``.
    baseline: str = "strongest"


class BaselineSpec(Strict):
    """The base model scored another way, once per model: the k-shot prompt and/or another token cap."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")  # its run folder: base-<name>
    few_shot: int = Field(0, ge=0, le=16)  # eval.few_shot
    max_new_tokens: int | None = Field(None, ge=1)  # eval.max_new_tokens; null: the trials' cap

    def values(self) -> dict[str, Any]:
        """The run-config keys this baseline sets on top of the base run's."""
        out: dict[str, Any] = {"eval.few_shot": self.few_shot}
        if self.max_new_tokens is not None:
            out["eval.max_new_tokens"] = self.max_new_tokens
        return out


class SweepConfig(Strict):
    study: str
    base_config: str  # a run config YAML, relative to the sweep file
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted keys applied to every trial
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int | None = Field(None, ge=1)  # finished trials the study aims at; grid: the grid size
    timeout_s: float = Field(gt=0)  # each worker's time budget; a trial in progress is finished first
    params: dict[str, ParamSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # training seeds: an axis
    # sampler "list" only: the design's points, {param name: value}, each run for every seed, or for the
    # seeds its own "seed" entry lists (e.g. a second epoch count on two of four seeds).
    trials: list[dict[str, Any]] | None = None
    baselines: list[BaselineSpec] = Field(default_factory=list)
    report: ReportSpec = ReportSpec()

    @field_validator("study")
    @classmethod
    def _study_is_a_folder_name(cls, v: str) -> str:
        try:
            return check_study_name(v)
        except ConfigError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        if self.sampler.type in ("grid", "list"):
            loose = [n for n, p in self.params.items() if p.type != "categorical"]
            if loose:
                raise ValueError(
                    f"the {self.sampler.type} sampler needs categorical params; not: {', '.join(loose)}"
                )
        elif self.n_trials is None:
            raise ValueError(f"the {self.sampler.type} sampler needs 'n_trials'")
        keys = [p.key for p in self.params.values()]
        if len(set(keys)) != len(keys):
            raise ValueError("two params set the same key")
        if SEED_PARAM in self.params or SEED_PARAM in keys or SEED_PARAM in self.overrides:
            raise ValueError("the training seed is the 'seeds' axis, not a param or an override")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("'seeds' repeats a seed")
        self._check_design()
        names = [b.name for b in self.baselines]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError("baseline names must be unique and not 'base' (the study's own base run)")
        if self.report.baseline not in ("strongest", "base", *names):
            raise ValueError(
                f"report.baseline '{self.report.baseline}' is not 'strongest', 'base' or a baselines name"
            )
        varied = [k for k in keys if k in SLICE_KEYS]
        if varied:
            raise ValueError(f"param '{varied[0]}' would change the evaluation slices between trials")
        for p in self.params.values():
            if p.key == "model.name" and p.type != "categorical":
                raise ValueError("a model.name param must be categorical")
        return self

    def _check_design(self) -> None:
        if (self.sampler.type == "list") != (self.trials is not None):
            raise ValueError("'trials' lists a design for sampler type 'list', and only for it")
        space, seen = self.all_params(), set()
        for i, point in enumerate(self.trials or []):
            if set(point) - {SEED_PARAM, DESIGN_OVERRIDES} != set(self.params):
                raise ValueError(
                    f"trials[{i}] must set exactly the params {sorted(self.params)} (and 'seed', 'overrides')"
                )
            for name, value in point.items():
                if name == DESIGN_OVERRIDES:
                    if not isinstance(value, dict) or SEED_PARAM in value:
                        raise ValueError(f"trials[{i}].overrides must map dotted run-config keys to values")
                    if any(k in SLICE_KEYS for k in value):
                        raise ValueError(f"trials[{i}].overrides would change the evaluation slices")
                    continue
                values = value if name == SEED_PARAM and isinstance(value, list) else [value]
                bad = [v for v in values if v not in (space[name].choices or [])]
                if bad:
                    raise ValueError(f"trials[{i}]: {name}={bad[0]} is not among that param's choices")
            key = tuple(sorted((k, repr(point[k])) for k in self.params))
            if key in seen:  # a trial's overrides are found from its params, so each point's must be unique
                raise ValueError(f"trials[{i}] repeats the params of an earlier entry")
            seen.add(key)

    def design_points(self) -> list[dict[str, Any]]:
        """Every trial a "list" design queues, as {param name: value}, seed included, in the listed order."""
        out = []
        for point in self.trials or []:
            seeds = point.get(SEED_PARAM, self.seeds)
            for seed in seeds if isinstance(seeds, list) else [seeds]:
                out.append({**{k: point[k] for k in self.params}, SEED_PARAM: seed})
        return out

    def design_overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """The run-config keys a "list" design's entry sets beyond its params (e.g. a second epoch count on a
        smaller data size), for the trial with these params; {} for any other sampler."""
        for point in self.trials or []:
            if all(point[k] == params.get(k) for k in self.params):
                return dict(point.get(DESIGN_OVERRIDES) or {})
        return {}

    def all_params(self) -> dict[str, ParamSpec]:
        """The search space the study samples: ``params`` plus the ``seed`` axis."""
        seed = ParamSpec(key=SEED_PARAM, type="categorical", choices=list(self.seeds))
        return {**self.params, SEED_PARAM: seed}

    def grid(self) -> dict[str, list[Any]]:
        return {name: list(p.choices or []) for name, p in self.all_params().items()}

    def models(self, base_raw: dict[str, Any]) -> list[str]:
        """Every model the study can sample: a model.name param's choices, else the base config's model."""
        for p in self.params.values():
            if p.key == "model.name":
                return [str(c) for c in p.choices or []]
        return [parse_config(base_raw).model.name]


def load_sweep(path: str | Path) -> tuple[SweepConfig, dict[str, Any], dict[str, Any]]:
    """Read and validate a sweep YAML and its base run config; returns (sweep, sweep as dict, base raw)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {validation_line(err)}") from None
    base_raw = read_yaml((path.parent / sweep.base_config).resolve())
    for key, value in sweep.overrides.items():
        base_raw = set_dotted(base_raw, key, value)
    try:
        check_datasets(parse_config(base_raw))
    except (ConfigError, DataError) as err:
        raise ConfigError(f"{path}: base_config with overrides: {err}") from None
    # A list design's points are probed whole below (a choice may be valid only with its entry's overrides).
    probed = (
        {SEED_PARAM: sweep.all_params()[SEED_PARAM]} if sweep.sampler.type == "list" else sweep.all_params()
    )
    for name, p in probed.items():
        # Every choice, and both ends of a range: a bad later value must not wait for its trial to fail.
        probes = list(p.choices) if p.choices else [p.low, p.high]
        if p.type in ("int", "log_int"):
            probes = [int(v) for v in probes]  # type: ignore[arg-type]
        for probe in probes:
            try:
                check_datasets(parse_config(set_dotted(base_raw, p.key, probe)))
            except (ConfigError, DataError) as err:
                raise ConfigError(f"{path}: param '{name}': {err}") from None
    for i, point in enumerate(sweep.trials or []):  # every listed design point must make a valid run
        probe = base_raw
        for key, value in [*((sweep.params[k].key, point[k]) for k in sweep.params),
                           *(point.get(DESIGN_OVERRIDES) or {}).items()]:  # fmt: skip
            probe = set_dotted(probe, key, value)
        try:
            check_datasets(parse_config(probe))
        except (ConfigError, DataError) as err:
            raise ConfigError(f"{path}: trials[{i}]: {err}") from None
    return sweep, raw, base_raw


def check_datasets(cfg: RunConfig) -> None:
    """Every math dataset the run names exists (by name only: nothing is read), before a study is created."""
    for name in (cfg.data.train, *cfg.data.eval):
        check_name(name)


def make_sampler(spec: SamplerSpec, sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    if spec.type == "grid":
        return optuna.samplers.GridSampler(sweep.grid(), seed=spec.seed)
    if spec.type in ("random", "list"):  # a list design's trials are all queued: nothing is sampled
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.type == "median":
        return optuna.pruners.MedianPruner(spec.n_startup_trials, spec.n_warmup_steps)
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(spec.min_resource, "auto", spec.reduction_factor)
    if spec.type == "wilcoxon":
        with warnings.catch_warnings():  # experimental since Optuna 3.6; the sweep pins its use in tests
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ask the trial for every param; returns {dotted key: value}."""
    out: dict[str, Any] = {}
    for name, p in params.items():
        if p.type == "categorical":
            value: Any = trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
        elif p.type in ("int", "log_int"):
            value = trial.suggest_int(name, int(p.low), int(p.high), log=p.type == "log_int")  # type: ignore[arg-type]
        else:
            value = trial.suggest_float(name, p.low, p.high, log=p.type == "log_float")  # type: ignore[arg-type]
        out[p.key] = value
    return out


def trial_config(
    base_raw: dict[str, Any], values: dict[str, Any], name: str, group: str, base: bool = False
) -> dict[str, Any]:
    """The raw run config of one trial: the base, the trial's values, and what every sweep run needs.

    Trials skip the base evaluation (the study does it once per model); ``base=True`` is that one run.
    """
    raw = base_raw
    for key, value in values.items():
        raw = set_dotted(raw, key, value)
    fixed = {"name": name, "tracking.group": group, "eval.base": base, "eval.every_epoch": True}
    for key, value in fixed.items():
        raw = set_dotted(raw, key, value)
    return raw


def applied_overrides(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What a trial actually ran with: its searched keys plus every knob (``record.KNOBS``) by its config key."""
    knobs = knob_values(parse_config(raw))
    return {**values, **{k.key: knobs[k.column] for k in KNOBS}}


def fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_name(study: str, number: int, params: dict[str, Any]) -> str:
    """The trial's run (and W&B run) name: study, trial number and params, e.g. ``cpu_demo-t3-size=64-r=16``."""
    text = f"{study}-t{number}-" + fmt_params(params).replace(" ", "-")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def model_slug(model: str) -> str:
    """A folder-safe name for a model id or path: its last component, e.g. ``SmolLM2-135M-Instruct``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(model.rstrip("/")).name) or "model"
