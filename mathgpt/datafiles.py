"""Where the data lives and how it is read: the data dir, one local table, one Hub split, nested subsets.

Shared by ``data`` (math sets) and ``general`` (instruction and multiple-choice sets), so neither imports the
other for them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from mathgpt.example import DataError, Example
from mathgpt.jsonl import parse_jsonl

TABLE_SUFFIXES = (".json", ".jsonl", ".parquet")


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The argument, else $MATHGPT_DATA_DIR, else None (the Hub)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("MATHGPT_DATA_DIR") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir else "MATHGPT_DATA_DIR"
        raise DataError(f"data dir {path} (from {origin}) is not a folder")
    return path


def read_table(path: Path) -> list[dict]:
    """The rows of a local .json (array or JSON lines), .jsonl or .parquet file."""
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict("records")
        except Exception as err:  # pyarrow raises several types for a bad file; all mean "unreadable"
            raise DataError(f"{path}: not a readable parquet file ({type(err).__name__})") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            rows = None  # some .json files are really JSON lines
        if rows is not None:
            if not isinstance(rows, list):
                raise DataError(f"{path}: expected a JSON array of rows")
            return rows
    return parse_jsonl(text, path)


def hub_rows(hub_id: str, split: str, config: str | None = None, *, name: str | None = None) -> list[dict]:
    """One split of a Hub dataset as rows; unavailable (no network, offline mode, a moved repo) is one line
    naming the dataset (``name``, when the caller asked for it by another name) and the Hub id."""
    try:
        import datasets

        return datasets.load_dataset(hub_id, config, split=split).to_list()
    except Exception as err:  # noqa: BLE001 - every failure here means "not available here"
        what = f"{name}: no local file and the Hub dataset {hub_id}" if name else f"{hub_id}: the Hub dataset"
        raise DataError(
            f"{what} could not be loaded ({type(err).__name__}); set MATHGPT_DATA_DIR (or data.data_dir) to a "
            "folder like shared/data for the local sets"
        ) from None


def nested_subset(examples: list[Example], n: int, seed: int) -> list[Example]:
    """The first ``n`` rows of one seeded permutation: the n-row subset is a prefix of the 2n-row one.

    A data-size curve then measures the amount of data, not which rows a fresh draw happened to pick.
    """
    if n < 0 or n > len(examples):
        raise DataError(f"cannot take {n} training examples from a pool of {len(examples)}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order[:n]]
