"""General-ability data: instruction sets mixed into math training, and multiple-choice sets for forgetting.

Two kinds of rows, from the same places as the math data (a folder laid out like ``shared/data`` given by
``data_dir`` / ``$MATHGPT_DATA_DIR``, else the Hub through ``datasets``):

- instruction rows become ``Example``s (question = instruction [+ input], solution = the reference response,
  answer ""), so training tokenizes them exactly like math rows; ``mix_train_set`` puts them into a run's
  training set at a fraction (``data.mix``);
- multiple-choice items become ``ChoiceItem``s (a context and a continuation per choice, the gold index),
  scored by log-likelihood in ``mathgpt.multiple_choice``.
"""

from __future__ import annotations

import bz2
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathgpt.datafiles import hub_rows, nested_subset, read_table, resolve_data_dir
from mathgpt.example import DataError, Example
from mathgpt.redact import clip

# ------------------------------------------------------------------------------------ instruction sets


def _instruction_rows(rows: list[dict], where: str, set_name: str) -> list[Example]:
    """Rows in any of the common instruction schemas: self-instruct seed tasks (``instances``), Dolly
    (instruction/context/response), Alpaca-style (instruction/input/output)."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{where}: row {i} is not a JSON object")
        instruction = row.get("instruction")
        pairs: list[tuple[Any, Any]]
        if isinstance(row.get("instances"), list):  # self-instruct: one task, several input/output instances
            pairs = [
                (inst.get("input"), inst.get("output")) for inst in row["instances"] if isinstance(inst, dict)
            ]
        else:
            pairs = [(row.get("input", row.get("context")), row.get("output", row.get("response")))]
        if not instruction or not pairs or any(not out_ for _, out_ in pairs):
            raise DataError(f"{where}: row {i} has no 'instruction' with an 'output'/'response'")
        base_id = row.get("id", i)
        for j, (extra, response) in enumerate(pairs):
            question = str(instruction).strip()
            if extra and str(extra).strip():
                question += "\n\n" + str(extra).strip()
            ex_id = f"{set_name}:{base_id}" + (f":{j}" if len(pairs) > 1 else "")
            out.append(Example(ex_id, question, str(response).strip(), "", f"general/{set_name}"))
    return out


# Local instruction sets by name -> path under the data dir. Any name with a "/" is a Hub id.
INSTRUCTION_SETS = {"self_instruct": "general/self_instruct/seed_tasks.jsonl"}
HUB_EXAMPLE = "databricks/databricks-dolly-15k"


def load_instructions(name: str, data_dir: str | Path | None = None) -> list[Example]:
    """Rows of general instruction set ``name``: a local name (``INSTRUCTION_SETS``) or a Hub id."""
    if name in INSTRUCTION_SETS:
        root = resolve_data_dir(data_dir)
        path = root / INSTRUCTION_SETS[name] if root is not None else None
        if path is None or not path.is_file():
            raise DataError(
                f"general set '{name}': {INSTRUCTION_SETS[name]} not found under the data dir "
                f"({root or 'none set'}); set MATHGPT_DATA_DIR (or data.data_dir) to a folder like shared/data"
            )
        rows, where = read_table(path), str(path)
    elif "/" in name:
        rows, where = hub_rows(name, "train"), name
    else:
        raise DataError(
            f"unknown general dataset '{name}'; known: {', '.join(INSTRUCTION_SETS)}, "
            f"or a Hub id such as {HUB_EXAMPLE}"
        )
    examples = _instruction_rows(rows, where, name.rsplit("/", 1)[-1])
    if not examples:
        raise DataError(f"{where}: no rows")
    return examples


def mix_train_set(
    pool: list[Example], train_size: int, seed: int, mix: Any, data_dir: str | Path | None
) -> list[Example]:
    """The training set: ``train_size`` rows, of which round(fraction x train_size) are general instructions.

    Each part is a prefix of its own seeded order (``datafiles.nested_subset``), so a larger run's set contains a
    smaller one's, part by part. The general rows are spread evenly through the list (row i is general when
    round((i + 1) f) > round(i f)), so under ``train.order: sequential`` every prefix holds the stated share.
    ``mix`` is ``data.mix`` (``{dataset, fraction}``) or None (math only, exactly the old subset).
    """
    if mix is None or mix.fraction == 0:
        return nested_subset(pool, train_size, seed)
    n_general = round(mix.fraction * train_size)
    general_pool = load_instructions(mix.dataset, data_dir)
    if n_general > len(general_pool):
        raise DataError(
            f"data.mix: {n_general} rows ({mix.fraction} x {train_size}) asked of '{mix.dataset}', "
            f"which has {len(general_pool)}"
        )
    general = nested_subset(general_pool, n_general, seed)
    math = nested_subset(pool, train_size - n_general, seed)
    out, g, m = [], iter(general), iter(math)
    share = n_general / train_size
    for i in range(train_size):
        out.append(next(g) if round((i + 1) * share) > round(i * share) else next(m))
    return out


def count_by_source(rows: list[Example]) -> dict[str, int]:
    """Training rows per source ("gsm8k", "general/self_instruct", ...): metrics.json's ``n_train_by_source``."""
    return dict(sorted(Counter(e.source for e in rows).items()))


# ------------------------------------------------------------------------------ multiple-choice sets


@dataclass(frozen=True)
class ChoiceItem:
    """One question: choice k is scored as log P(continuations[k] | contexts[k])."""

    id: str
    contexts: tuple[str, ...]  # the same text for every choice, except in partial scoring (WinoGrande)
    continuations: tuple[str, ...]  # each starts with the separator space, as lm-eval-harness puts it
    label: int


def _piqa(rows: list[dict], labels: list[Any], where: str) -> list[ChoiceItem]:
    if len(labels) != len(rows):
        raise DataError(f"{where}: {len(rows)} items but {len(labels)} labels")
    out = []
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        if not isinstance(row, dict) or not all(row.get(k) for k in ("goal", "sol1", "sol2")):
            raise DataError(f"{where}: row {i} needs 'goal', 'sol1' and 'sol2'")
        if str(label).strip() not in ("0", "1"):
            raise DataError(f"{where}: label {i} is {clip(label)}, not 0 or 1")
        context = f"Question: {row['goal']}\nAnswer:"  # lm-eval-harness's PIQA prompt
        out.append(
            ChoiceItem(f"piqa:{i}", (context, context), (f" {row['sol1']}", f" {row['sol2']}"), int(label))
        )
    return out


def _hellaswag_rows(rows: list[dict], where: str) -> list[ChoiceItem]:
    """Hub rows (Rowan/hellaswag): lm-eval-harness's query activity_label + ": " + ctx_a + " " + ctx_b.capitalize()."""
    out = []
    for i, row in enumerate(rows):
        try:
            ctx = f"{row['ctx_a']} {str(row['ctx_b']).capitalize()}".strip()
            context = _hellaswag_clean(f"{row['activity_label']}: {ctx}")
            endings = tuple(" " + _hellaswag_clean(e) for e in row["endings"])
            out.append(ChoiceItem(f"hellaswag:{i}", (context,) * len(endings), endings, int(row["label"])))
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{where}: row {i} needs ctx_a, ctx_b, activity_label, endings and label"
            ) from None
    return out


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    for tag in ("[header]", "[step]", "[substeps]", "[title]"):
        text = text.replace(tag, "")
    return " ".join(text.split())  # also collapses double spaces, as the harness's re.sub("  ", " ") does


def _hellaswag_text(path: Path) -> list[ChoiceItem]:
    """The bz2 plain-text layout (shared/data/README.md): 6 lines per task, context / label / 4 endings,
    already cleaned the harness's way (its ctx_b keeps the source's lower case)."""
    try:
        lines = bz2.open(path, "rt", encoding="utf-8").read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError):
        raise DataError(f"{path}: not a readable bz2 text file") from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise DataError(f"{path}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
    out = []
    for t in range(len(lines) // 6):
        context, label, *endings = lines[6 * t : 6 * t + 6]
        if label.strip() not in ("0", "1", "2", "3"):
            raise DataError(f"{path}: task {t} has label {clip(label)}, not 0-3")
        out.append(ChoiceItem(f"hellaswag:{t}", (context,) * 4, tuple(" " + e for e in endings), int(label)))
    return out


def _arc(rows: list[dict], where: str) -> list[ChoiceItem]:
    out = []
    for i, row in enumerate(rows):
        try:
            letters = list(row["choices"]["label"])
            context = f"Question: {row['question']}\nAnswer:"
            texts = tuple(f" {t}" for t in row["choices"]["text"])
            out.append(
                ChoiceItem(
                    f"arc:{row.get('id', i)}", (context,) * len(texts), texts, letters.index(row["answerKey"])
                )
            )
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{where}: row {i} needs question, choices {{text, label}} and answerKey"
            ) from None
    return out


def _winogrande(rows: list[dict], where: str) -> list[ChoiceItem]:
    """Partial scoring as in the harness: the context is the sentence up to the blank with the option filled
    in, the continuation is the rest of the sentence (the same text for both options)."""
    out = []
    for i, row in enumerate(rows):
        try:
            before, after = str(row["sentence"]).split("_", 1)
            contexts = (before + row["option1"], before + row["option2"])
            out.append(
                ChoiceItem(f"winogrande:{i}", contexts, (" " + after.strip(),) * 2, int(row["answer"]) - 1)
            )
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: row {i} needs sentence (with '_'), option1, option2, answer") from None
    return out


@dataclass(frozen=True)
class _ChoiceSet:
    local: str | None  # path under the data dir
    hub: str
    config: str | None
    split: str
    convert: Callable[[list[dict], str], list[ChoiceItem]]


def _hub_piqa(rows: list[dict], where: str) -> list[ChoiceItem]:
    return _piqa(rows, [r.get("label") for r in rows], where)


CHOICE_SETS = {
    "piqa": _ChoiceSet("general/piqa/valid.jsonl", "baber/piqa", None, "validation", _hub_piqa),
    "hellaswag": _ChoiceSet(
        "general/hellaswag/hellaswag_val_full.txt.bz2", "Rowan/hellaswag", None, "validation", _hellaswag_rows
    ),
    "arc_challenge": _ChoiceSet(None, "allenai/ai2_arc", "ARC-Challenge", "test", _arc),
    "arc_easy": _ChoiceSet(None, "allenai/ai2_arc", "ARC-Easy", "test", _arc),
    "winogrande": _ChoiceSet(None, "allenai/winogrande", "winogrande_xl", "validation", _winogrande),
}


def load_choices(name: str, data_dir: str | Path | None = None) -> list[ChoiceItem]:
    """Every item of multiple-choice set ``name`` (``CHOICE_SETS``), local file first, else the Hub."""
    if name not in CHOICE_SETS:
        raise DataError(f"unknown general evaluation set '{name}'; known: {', '.join(CHOICE_SETS)}")
    spec = CHOICE_SETS[name]
    root = resolve_data_dir(data_dir)
    path = root / spec.local if root is not None and spec.local else None
    if path is not None and path.is_file():
        if name == "hellaswag":
            items = _hellaswag_text(path)
        else:  # PIQA: the labels sit beside the items, one per line
            labels_path = path.with_name("valid-labels.lst")
            if not labels_path.is_file():
                raise DataError(f"{labels_path}: not found (PIQA's labels file)")
            items = _piqa(read_table(path), labels_path.read_text().split(), str(path))
    else:
        items = spec.convert(hub_rows(spec.hub, spec.split, spec.config), spec.hub)
    if not items:
        raise DataError(f"general set '{name}': no items")
    return items


def choice_slice(items: list[ChoiceItem], n: int, seed: int) -> list[ChoiceItem]:
    """A seeded slice of ``n`` items in set order (all of them when the set is smaller)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]
