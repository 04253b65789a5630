"""Datasets as one common example type.

Every loader returns ``Example`` rows, whatever the source (a Hub id, a local file, or the project's own
generator), so training, evaluation and reports never look at a dataset's native schema.

Where a dataset comes from: the ``data_dir`` argument, else ``$MATHGPT_DATA_DIR``, is a folder laid out like
``shared/data`` (``gsm8k/train.jsonl``, ``math/math500_test.jsonl``, ``svamp/SVAMP.json``, ``mathinstruct/*``
...). A dataset whose file is there is read from disk; otherwise its Hub id is loaded with ``datasets``.
Both paths go through the same converters, so a local copy and the Hub give the same rows.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from mathgpt.datafiles import TABLE_SUFFIXES, hub_rows, read_table, resolve_data_dir
from mathgpt.example import DataError, Example
from mathgpt.record import ids_fingerprint
from mathgpt.redact import clip

# `load("synthetic:train")` draws a fixed pool with seed 0; a run takes its nested subset of this pool, so
# train_size is capped at 4096 (512 steps of batch 8 per epoch, far past where the curve flattens on CPU).
SYNTHETIC_POOL = {"train": 4096, "test": 1000}

# MATH's seven subjects, as EleutherAI/hendrycks_math names its configs (the Hub copy of the test split).
MATH_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# ---------------------------------------------------------------------------------------------- converters
# Each turns native rows (dicts) into Examples; `where` names the file or Hub id for error messages.


def _need(row: Any, keys: tuple[str, ...], where: str, i: int) -> list[Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: row {i} is not a JSON object")
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise DataError(f"{where}: row {i} has no field '{missing[0]}'")
    return [row[k] for k in keys]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (also ``\\fbox{...}``, ``\\boxed 5``), with braces matched."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len("\\boxed") :] if rest.startswith("\\boxed") else rest[len("\\fbox") :]
    if rest.startswith(" "):  # `\boxed 5`: the answer is the next token
        token = rest.split(maxsplit=1)
        return token[0].rstrip("$.") if token else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for j, ch in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return rest[1:j].strip()
    return None  # unbalanced braces


def _numeric_answer(x: Any, where: str, i: int) -> str:
    """A number as a gold answer: 51.0 -> "51", 2.5 -> "2.5"."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise DataError(f"{where}: row {i} 'Answer' is not a number (got {clip(x)})") from None
    return str(int(value)) if value.is_integer() else f"{value:.10g}"


def _gsm8k(rows: list[dict], where: str, split: str = "test") -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        question, native = _need(row, ("question", "answer"), where, i)
        steps, sep, final = str(native).rpartition("####")
        if not sep:
            raise DataError(f"{where}: row {i} 'answer' has no '#### N' line")
        answer = final.strip().replace(",", "")
        steps = re.sub(r"<<[^>]*>>", "", steps).strip()  # calculator annotations: <<16-3-4=9>>
        solution = f"{steps}\nThe answer is {answer}."
        out.append(Example(f"gsm8k:{split}:{i}", question, solution, answer, "gsm8k"))
    return out


def _level(value: Any) -> int | None:
    """MATH levels come as 2 (MATH-500) or "Level 2" (the full test); "Level ?" exists in the train split."""
    if isinstance(value, int):
        return value
    digits = re.search(r"\d+", str(value))
    return int(digits.group()) if digits else None


def _math(rows: list[dict], where: str, split: str = "test") -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        problem, solution, level = _need(row, ("problem", "solution", "level"), where, i)
        subject = row.get("subject") or row.get("type")
        if subject is None:
            raise DataError(f"{where}: row {i} has no field 'subject' (or 'type')")
        answer = row.get("answer") or last_boxed(str(solution))
        if answer is None:
            raise DataError(f"{where}: row {i} has no field 'answer' and no \\boxed{{}} in 'solution'")
        # MATH-500 carries OpenAI's unique_id (test/precalculus/807.json); the full test has only a row index.
        ex_id = row.get("unique_id") or f"math:{split}:{row.get('idx', i)}"
        out.append(Example(ex_id, problem, solution, str(answer), "math", _level(level), subject))
    return out


def _svamp(rows: list[dict], where: str) -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        keys = ("ID", "Body", "Question", "Equation", "Answer")
        sid, body, question, equation, value = _need(row, keys, where, i)
        answer = _numeric_answer(value, where, i)
        # No worked solution exists; the equation is the one line of reasoning there is.
        solution = f"{str(equation).strip()} = {answer}\nThe answer is {answer}."
        text = f"{str(body).strip()} {str(question).strip()}"  # the usual Body + " " + Question
        out.append(Example(f"svamp:{sid}", text, solution, answer, "svamp"))
    return out


def is_program_of_thought(source: str) -> bool:
    """MathInstruct marks program-of-thought rows by path ("data/PoT/mathqa.json") or suffix ("x_pot")."""
    parts = re.split(r"[/\\._\-]", source.lower())
    return "pot" in parts or "program" in source.lower()


def _subsource(source: str) -> str:
    return PurePosixPath(source.replace("\\", "/")).stem  # "data/CoT/gsm_rft.json" -> "gsm_rft"


def _final_answer(text: str) -> str:
    """Best-effort gold for a MathInstruct rationale; a training pool only needs it for display."""
    found = re.findall(r"answer is[:\s]*(.+?)\.?\s*$", text, flags=re.IGNORECASE | re.MULTILINE)
    return found[-1].strip() if found else (last_boxed(text) or "")


def _mathinstruct(rows: list[dict], where: str, sources: list[str] | None = None) -> list[Example]:
    """Chain-of-thought rows; ``sources`` keeps sub-sources by name ("gsm_rft" or "data/CoT/gsm_rft.json")."""
    wanted = set(sources or ())
    seen: set[str] = set()
    out = []
    for i, row in enumerate(rows):
        source, instruction, output = _need(row, ("source", "instruction", "output"), where, i)
        source = str(source)
        if is_program_of_thought(source):
            continue
        sub = _subsource(source)
        seen.add(sub)
        if wanted and sub not in wanted and source not in wanted:
            continue
        # The row index counts PoT rows too, so ids do not move when the filter changes.
        answer = _final_answer(output)
        out.append(Example(f"mathinstruct:{i}", instruction, output, answer, f"mathinstruct/{sub}"))
    unknown = sorted(w for w in wanted if _subsource(w) not in seen)
    if unknown:
        raise DataError(f"{where}: no chain-of-thought rows from {unknown}; sources there: {sorted(seen)}")
    return out


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class _Dataset:
    local: str  # path under the data dir (a folder for MathInstruct)
    hub: str
    configs: tuple[str | None, ...]
    splits: tuple[str, ...]  # Hub splits, concatenated in this order
    convert: Callable[[list[dict], str], list[Example]]


SOURCES = {
    "gsm8k:train": _Dataset(
        "gsm8k/train.jsonl", "openai/gsm8k", ("main",), ("train",), partial(_gsm8k, split="train")
    ),
    "gsm8k:test": _Dataset("gsm8k/test.jsonl", "openai/gsm8k", ("main",), ("test",), _gsm8k),
    "math500": _Dataset("math/math500_test.jsonl", "HuggingFaceH4/MATH-500", (None,), ("test",), _math),
    "math:test": _Dataset(
        "math/math_test_full.jsonl", "EleutherAI/hendrycks_math", MATH_CONFIGS, ("test",), _math
    ),
    # 7,500 MATH training problems with worked solutions ending in \boxed{}: a chain-of-thought training pool.
    # Ids are the release's paths (train/algebra/0.json); one of them repeats a MATH test problem, which
    # the run's contamination check drops when math:test is evaluated.
    "math:train": _Dataset(
        "math/math_train_full.jsonl",
        "EleutherAI/hendrycks_math",
        MATH_CONFIGS,
        ("train",),
        partial(_math, split="train"),
    ),
    # ChilleD/SVAMP splits the 1000 problems of SVAMP.json into 700 train + 300 test; both are held out here.
    "svamp": _Dataset("svamp/SVAMP.json", "ChilleD/SVAMP", (None,), ("train", "test"), _svamp),
    # A folder of .json/.jsonl/.parquet files (e.g. the Hub's MathInstruct.json), read in name order.
    "mathinstruct": _Dataset("mathinstruct", "TIGER-Lab/MathInstruct", (None,), ("train",), _mathinstruct),
}
NAMES = [
    *SOURCES,
    "synthetic",
    "synthetic:train",
    "synthetic:test",
    "general:self_instruct",
    "general:<hub id>",
]


def _local_files(spec: _Dataset, data_dir: Path) -> list[Path]:
    path = data_dir / spec.local
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TABLE_SUFFIXES)
    return []


Loaded = tuple[list[Example], str, list[str]]  # examples, where they came from, the native field names


def check_name(name: str) -> None:
    """Refuse a dataset name ``load`` does not know (one line), without reading anything."""
    base, _, split = name.partition(":")
    if (base == "synthetic" and split in ("", "train", "test")) or (base == "general" and split):
        return
    if name not in SOURCES:
        raise DataError(f"unknown dataset {clip(name)}; known: {', '.join(NAMES)}")


def _load(name: str, data_dir: str | Path | None, sources: list[str] | None) -> Loaded:
    check_name(name)
    base, _, split = name.partition(":")
    if base == "synthetic" and split in ("", "train", "test"):
        # Imported here, not at module level: synthetic pulls in sympy (~1 s), needed only by these names.
        from mathgpt.synthetic import make_problems

        split = split or "train"
        n = SYNTHETIC_POOL[split]
        return make_problems(split, n, 0), f"mathgpt.synthetic (split {split}, {n} rows, seed 0)", []
    if base == "general" and split:
        # A general instruction set as a whole training pool (a general-only adapter to merge with a math one).
        from mathgpt.general import load_instructions

        return load_instructions(split, data_dir), f"general instruction set {split}", []
    spec = SOURCES[name]
    root = resolve_data_dir(data_dir)
    files = _local_files(spec, root) if root is not None else []
    parts: list[tuple[list[dict], str]] = [(read_table(f), str(f)) for f in files]
    if not parts:
        rows = [
            row
            for config in spec.configs
            for split in spec.splits
            for row in hub_rows(spec.hub, split, config, name=name)
        ]
        parts = [(rows, spec.hub)]
    rows = [row for part, _ in parts for row in part]
    where = parts[0][1] if len(parts) == 1 else f"{root / spec.local}/*"
    native = list(rows[0]) if rows and isinstance(rows[0], dict) else []
    examples = _mathinstruct(rows, where, sources) if name == "mathinstruct" else spec.convert(rows, where)
    if not examples:
        raise DataError(f"{where}: no rows")
    return examples, where, native


def load(name: str, data_dir: str | Path | None = None, *, sources: list[str] | None = None) -> list[Example]:
    """Rows of dataset ``name`` (see ``NAMES``); ``sources`` filters MathInstruct and is ignored elsewhere.

    >>> len(load("gsm8k:test", "../shared/data"))
    1319
    """
    return _load(name, data_dir, sources)[0]


# ----------------------------------------------------------------------------------------- slices, subsets


def held_out_slice(examples: list[Example], n: int, seed: int) -> list[Example]:
    """A seeded evaluation slice of ``n`` rows, in dataset order.

    When the rows carry subject and level (MATH), the slice is stratified by (subject, level) with
    proportional allocation (largest remainder, ties broken by stratum name), so a 100-problem slice of
    MATH-500 keeps its difficulty mix instead of depending on the draw.
    """
    if n < 0:
        raise DataError(f"slice size must be >= 0 (got {n})")
    if n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    if not any(e.subject is not None or e.level is not None for e in examples):
        return [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]
    strata: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        strata[f"{e.subject}|{e.level}"].append(i)
    keys = sorted(strata)
    exact = {k: n * len(strata[k]) / len(examples) for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - quota[k]), k))
    for k in by_remainder[: n - sum(quota.values())]:
        quota[k] += 1
    chosen = [i for k in keys for i in rng.sample(strata[k], quota[k])]
    return [examples[i] for i in sorted(chosen)]


def fingerprint(examples: list[Example]) -> str:
    """12 hex digits of sha256 over the sorted ids: equal fingerprints mean the same problems were used."""
    return ids_fingerprint([e.id for e in examples])


# ------------------------------------------------------------------------------------------------- display


def _clip(text: str, width: int = 400) -> str:
    return text if len(text) <= width else text[:width].rstrip() + " ..."


def text_table(header: list[str], rows: list[list[str]], *, left: int = 1) -> list[str]:
    """Plain-text lines of a table for the console: the first ``left`` columns left-aligned, the rest right."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < left else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console(file=StringIO(), width=1000, highlight=False, color_system=None)
    console.print(table)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def _subject_level_table(examples: list[Example]) -> list[str]:
    counts = Counter((e.subject, e.level) for e in examples)
    levels = sorted({lv for _, lv in counts}, key=lambda lv: (lv is None, lv or 0))
    subjects = sorted({s for s, _ in counts}, key=str)
    rows = [
        [str(s), *(str(counts[(s, lv)]) for lv in levels), str(sum(counts[(s, lv)] for lv in levels))]
        for s in subjects
    ]
    totals = [str(sum(counts[(s, lv)] for s in subjects)) for lv in levels]
    rows.append(["total", *totals, str(len(examples))])
    return text_table(["subject", *(f"L{lv}" for lv in levels), "total"], rows)


def show(name: str, data_dir: str | Path | None = None, n_examples: int = 3) -> str:
    """Row count, fields, subject x level counts (MATH) and a few examples (`mathgpt data show`)."""
    examples, where, native = _load(name, data_dir, None)
    used = [f.name for f in fields(Example) if any(getattr(e, f.name) is not None for e in examples[:100])]
    lines = [f"{name}: {len(examples)} rows", f"from: {where}"]
    if native:
        lines.append(f"native fields: {', '.join(native)}")
    lines.append(f"example fields: {', '.join(used)}")
    by_source = Counter(e.source for e in examples).most_common()
    lines.append("sources: " + ", ".join(f"{s} {c}" for s, c in by_source))
    if any(e.subject is not None for e in examples):
        lines += ["", *_subject_level_table(examples)]
    for e in examples[: max(n_examples, 0)]:
        lines += ["", f"--- {e.id}", f"question: {_clip(e.question)}", f"solution: {_clip(e.solution)}"]
        lines.append(f"answer: {e.answer}" + (f"   ({e.subject}, level {e.level})" if e.subject else ""))
    return "\n".join(lines)
