"""The point record and the knob table: what one evaluation point is, wherever it travels.

A run writes one ``Point`` per evaluation point (an ``epochs.jsonl`` line, docs/CONTRACTS.md); the sweep stores
it in its trial (without ``ids``: the study holds them once); the report, its CSVs, the study's W&B run and the
console read it back. The knobs a point ran with travel inside it (``Point.knobs``, filled from the resolved
config through ``KNOBS``), so no reader joins a point with its trial's overrides.

Adding a knob: one ``Knob`` row below, and the code that applies the config key. Every reader follows.

A leaf module: standard library and pydantic only, so light readers (report loader, sweep parent) stay light.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Knob:
    """One thing a run can be configured with that a reader groups, plots or tabulates by."""

    column: str  # its name in ``Point.knobs``, problems.csv / trials.csv and the W&B tables
    key: str  # the dotted run-config key a sweep param sets (``ParamSpec.key``)
    attr: str  # where its resolved value lives on a RunConfig (``lora.lora_alpha`` resolves alpha = 2r)
    setting: bool = False  # part of a "setting": the report pairs points that differ only in size and seed
    default: Any = None  # value when a section on the path is unset (no data.mix: fraction 0)


KNOBS: tuple[Knob, ...] = (
    Knob("model", "model.name", "model.name"),
    Knob("seed", "seed", "seed"),
    Knob("train_size", "data.train_size", "data.train_size"),
    Knob("epochs", "train.epochs", "train.epochs"),
    Knob("lora_r", "lora.r", "lora.r", setting=True),
    Knob("lora_alpha", "lora.alpha", "lora.lora_alpha"),
    Knob("lora_dropout", "lora.dropout", "lora.dropout", setting=True),
    Knob("learning_rate", "train.learning_rate", "train.learning_rate", setting=True),
    Knob("batch_size", "train.batch_size", "train.batch_size", setting=True),
    Knob("mix_fraction", "data.mix.fraction", "data.mix.fraction", setting=True, default=0.0),
)
KNOB_COLUMNS = [k.column for k in KNOBS]
# A "setting": everything a point ran with except its model, seed and data size (and its epoch, a point field).
SETTING = [k.column for k in KNOBS if k.setting] + ["epoch"]

# Per-problem lists of a slice, aligned with its ``ids``.
PER_PROBLEM = ("correct", "answered", "status")

# docs/CONTRACTS.md "Per-problem matrix": one row per (point or base, problem), in problems.csv, the report
# and the study's W&B table.
PROBLEM_COLUMNS = ["eval_set", "level", "subject", "steps", "problem_id", "correct", "answered", "status"]
MATRIX_COLUMNS = ["model", "baseline", "trial", "seed", "point", "train_examples", "epoch"]
MATRIX_COLUMNS += [k.column for k in KNOBS if k.setting] + PROBLEM_COLUMNS


def knob_values(cfg: Any) -> dict[str, Any]:
    """{knob column: value} read from a resolved run config (``mathgpt.config.RunConfig``)."""
    out = {}
    for knob in KNOBS:
        value: Any = cfg
        for part in knob.attr.split("."):
            value = getattr(value, part) if value is not None else None
        out[knob.column] = knob.default if value is None else value
    return out


def ids_fingerprint(ids: list[str]) -> str:
    """12 hex digits of sha256 over the sorted ids: equal fingerprints mean the same problems were used."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()[:12]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectSlice(_Record):
    """The selection slice of a point: what the sweep optimises and prunes on, never what the report claims."""

    accuracy: float
    ci95: list[float]
    n_eval: int
    n_correct: int
    fingerprint: str | None
    ids: list[str] | None = None  # dropped in the study (the selection slice's order is fixed by its seed)
    correct: list[int]  # per problem, in ``ids`` order: the Wilcoxon pruner's paired vector


class Point(_Record):
    """One evaluation point: an ``epochs.jsonl`` line; a study trial's ``points`` entry without ``ids``."""

    point: int  # 0 = base, then 1, 2, ... in order
    epoch: float  # examples seen / n_train
    train_examples: int
    optimizer_steps: int
    train_tokens: int
    train_wall_s: float
    eval_wall_s: float
    loss: float | None  # mean train loss per target token since the previous point
    # report slice, flexible grading
    accuracy: float
    ci95: list[float]
    n_eval: int
    n_correct: int
    strict_accuracy: float
    n_answered: int
    n_truncated: int
    n_no_answer: int
    n_ungradable: int
    ids: list[str] | None = None  # report-slice problem ids; None once stored (the study's eval_problems)
    correct: list[int]
    answered: list[int]
    status: list[str]
    fingerprint: str
    by_set: dict[str, dict[str, Any]]
    select: SelectSlice | None
    general: dict[str, dict[str, Any]]  # eval.general: {set: {accuracy, accuracy_norm, n, ids, ...}}
    checker_version: str
    gen: dict[str, Any] | None
    knobs: dict[str, Any]  # {knob column: value}, from KNOBS
    machine: dict[str, Any] | None = None  # where it ran (mathgpt.machine), when recorded
    # How it was asked: {"format": resolved prompt format, "few_shot": k, "shot_ids": [...], "max_new_tokens"}
    prompt: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        """The JSON line (``None`` fields kept: every line has every key)."""
        return self.model_dump(mode="json")

    def stored(self) -> dict[str, Any]:
        """What a study keeps: the line without ids (report, selection, general sets)."""
        out = self.model_dump(mode="json", exclude={"ids"})
        if out["select"] is not None:
            out["select"].pop("ids", None)
        out["general"] = {
            name: {k: v for k, v in g.items() if k != "ids"} for name, g in self.general.items()
        }
        return out

    def summary_line(self) -> dict[str, Any]:
        """metrics.json's ``points`` entry: the line without any per-problem list."""
        out = self.model_dump(mode="json", exclude={"ids", *PER_PROBLEM})
        if out["select"] is not None:
            out["select"] = {k: v for k, v in out["select"].items() if k not in ("ids", "correct")}
        out["general"] = {
            name: {k: v for k, v in g.items() if k not in ("ids", "correct", "correct_norm")}
            for name, g in self.general.items()
        }
        return out


class BasePoint(Point):
    """A study's base point (``bases[model]``): its model's point 0 and the run folder it came from."""

    dir: str


def trial_points(trial: Any) -> list[Point]:
    """A study trial's points as its run wrote them (docs/CONTRACTS.md ``points``), as records."""
    return [Point.model_validate(p) for p in trial.user_attrs.get("points") or []]


def study_points(study: Any) -> dict[int, list[Point]]:
    """Every trial's points by trial number, re-scored ones (``mathgpt regrade``: ``regraded_points``) first."""
    regraded = study.user_attrs.get("regraded_points") or {}
    out = {}
    for t in study.get_trials(deepcopy=False):
        again = regraded.get(str(t.number))
        out[t.number] = [Point.model_validate(p) for p in again] if again is not None else trial_points(t)
    return out


def study_bases(study: Any) -> dict[str, BasePoint]:
    """A study's base points by model name."""
    return {m: BasePoint.model_validate(b) for m, b in (study.user_attrs.get("bases") or {}).items()}


def study_baselines(study: Any) -> dict[str, dict[str, BasePoint]]:
    """A study's extra baselines (the sweep's ``baselines``): {model: {baseline name: point}}."""
    return {
        m: {name: BasePoint.model_validate(b) for name, b in by_name.items()}
        for m, by_name in (study.user_attrs.get("baselines") or {}).items()
    }
