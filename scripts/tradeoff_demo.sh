#!/usr/bin/env bash
# The CPU trade-off demo: math gain vs general change for a math adapter with and without general data mixed
# in, a general adapter, and their merge. Runs experiments/tradeoff.yaml's five arms into runs/tradeoff/ and
# prints one line per arm (accuracy change vs the base, paired by problem id, with McNemar p-values).
# Usage: bash scripts/tradeoff_demo.sh [OUT_DIR]   (from the repository root; 16 min 47 s for the six arms
# on a 2-core AMD EPYC, 2026-12-02)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/tradeoff}"
PY="${PYTHON:-.venv/bin/python}"
CONFIG="${CONFIG:-experiments/tradeoff.yaml}"  # the test runs the same script on the tiny model's config
mkdir -p "$OUT"
"$PY" - "$OUT" "$CONFIG" <<'PYEOF'
import json
import sys
from pathlib import Path

from mathgpt.config import load_config
from mathgpt.merge import merge_adapters
from mathgpt.run import run_experiment

out, config = Path(sys.argv[1]), sys.argv[2]
n_math = load_config(config).data.train_size
n_general = n_math // 4
arms = {
    "base": {"train.epochs": 0, "eval.base": True},
    "math": {},
    # equal total: 96 math + 32 general rows, so it also trains on 25% fewer math rows than "math"
    "math_mix": {"data.mix": {"dataset": "self_instruct", "fraction": 0.25}},
    # on top: the same math rows (a nested prefix) plus a quarter as many general rows (128 + 32 = 160 x 0.2)
    "math_plus": {
        "data.train_size": n_math + n_general,
        "data.mix": {"dataset": "self_instruct", "fraction": n_general / (n_math + n_general)},
    },
    "general": {"data.train": "general:self_instruct"},
}
for name, overrides in arms.items():
    if not (out / name / "metrics.json").is_file():
        run_experiment(load_config(config, {"name": name, **overrides}), out / name)
cfg = load_config(config)
merged = out / "merged_adapter"
if not (merged / "adapter_config.json").is_file():
    merge_adapters(cfg.model.name, [out / "math" / "adapter", out / "general" / "adapter"], [0.5, 0.5], "linear", merged)
if not (out / "merged" / "metrics.json").is_file():
    overrides = {"name": "merged", "train.epochs": 0, "eval.base": True, "model.adapter": str(merged)}
    run_experiment(load_config(config, overrides), out / "merged")
PYEOF
"$PY" - "$OUT" <<'PYEOF'
import json
import sys
from pathlib import Path

from mathgpt.stats import equivalence_test, mcnemar_test, wilson_ci

MARGIN = 0.03  # general ability: "no forgetting" only when the change is shown within +-3 points (TOST)


def last_point(run: Path) -> dict:
    return json.loads((run / "epochs.jsonl").read_text().splitlines()[-1])


def change(base_ids, base_correct, ids, correct, tost: bool = False) -> str:
    assert ids == base_ids, "arms were scored on different items"
    n = len(ids)
    k = sum(correct)
    lo, hi = wilson_ci(k, n)
    p = mcnemar_test(base_correct, correct).pvalue
    cell = f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({(k - sum(base_correct)) / n:+.3f}, p={p:.3g})"
    if not tost:
        return cell
    eq = equivalence_test(base_correct, correct, MARGIN)
    verdict = "equivalent" if eq.equivalent else "not shown equivalent"
    return f"{cell} +{eq.gain.fixed:g}/-{eq.gain.broken:g}, {verdict} (TOST p={eq.p:.2g})"


out = Path(sys.argv[1])
base = last_point(out / "base")
sets = list(base["general"])
print(f"general: +up/-down items, TOST equivalence within +-{100 * MARGIN:g} points at alpha 0.05")
print(f"{'arm':<10}{'math accuracy [95% CI] (change, McNemar p)':<52}" + "".join(f"{s:<52}" for s in sets))
for arm in ("base", "math", "math_mix", "math_plus", "general", "merged"):
    pt = last_point(out / arm)
    cells = [change(base["ids"], base["correct"], pt["ids"], pt["correct"])]
    for s in sets:
        g, b = pt["general"][s], base["general"][s]
        cells.append(change(b["ids"], b["correct"], g["ids"], g["correct"], tost=arm != "base"))
    print(f"{arm:<10}" + "".join(f"{c:<52}" for c in cells))
PYEOF
