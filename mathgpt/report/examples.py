"""Side-by-side outputs: problems the fine-tuned model fixed and broke, read from the runs' predictions.jsonl.

The one place the report reads run folders (optional: a study copied without its runs still reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mathgpt.jsonl import read_jsonl
from mathgpt.report import analysis as an
from mathgpt.report.load import StudyData

N_EXAMPLES = 3


def _records(folder: Any, model: str, point: int | None) -> dict[str, dict[str, Any]] | None:
    if not isinstance(folder, str) or not (path := Path(folder) / "predictions.jsonl").is_file():
        return None
    out = {}
    for r in read_jsonl(path):
        if r.get("model") != model or r.get("slice", "report") != "report":
            continue
        if point is not None and r.get("point", point) != point:
            continue
        out[str(r.get("id"))] = r
    return out


def side_by_side(data: StudyData, model: str, size: int, k: int = N_EXAMPLES) -> dict[str, Any] | None:
    """Up to k fixed and k broken problems of the chosen point at `size` (lowest seed) against the base."""
    chosen = an.arms(data, model).get(size)
    base_row = an.base_rows(data, model)
    if chosen is None or base_row.empty:
        return None
    p = chosen.sort_values(["seed", "trial"], na_position="last").iloc[0]
    base = _records(base_row["trial_dir"].iloc[0], "base", None)
    tuned = _records(p["trial_dir"], "finetuned", int(p["point"]))
    if not base or not tuned:
        return None
    fixed, broken = [], []
    for pid in data.problems["id"]:
        b, t = base.get(str(pid)), tuned.get(str(pid))
        if b is None or t is None:
            continue
        if not b.get("correct") and t.get("correct") and len(fixed) < k:
            fixed.append((b, t))
        elif b.get("correct") and not t.get("correct") and len(broken) < k:
            broken.append((b, t))
    seed = "" if pd.isna(p["seed"]) else f", seed {int(p['seed'])}"
    return {"who": f"trial {int(p['trial'])} ({size} examples{seed})", "fixed": fixed, "broken": broken}
