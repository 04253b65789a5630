"""Descriptive comparisons beside the answer: knob effects, subsets, general-ability change, importances.

All paired against the same problems; none of them feeds the answer (they use the report slice freely), so the
subset rows are exploratory: many of them, no multiplicity control. Accuracies carry Wilson intervals and
paired differences Newcombe's (stats.newcombe_gain), so no row has a zero-width interval.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pandas as pd

from mathgpt.report.analysis import arm_matrix, arms, base_vector, tuned_points
from mathgpt.report.load import SETTING, StudyData
from mathgpt.stats import accuracy_ci, equivalence_test, newcombe_gain, paired_gain

# General ability: a change is "no forgetting" only when a TOST shows it within +-GENERAL_MARGIN.
GENERAL_MARGIN = 0.03

MIN_TRIALS_FOR_IMPORTANCE = 20  # below this PED-ANOVA's quantile split is an artifact of the grid


def knob_effects(data: StudyData) -> pd.DataFrame:
    """Paired differences between values of one knob, others and seed equal, at each size (report slice)."""
    tuned = tuned_points(data)
    rows = []
    for knob in SETTING:
        others = [c for c in SETTING if c != knob]
        if tuned[knob].dropna().nunique() < 2:
            continue
        for (model, size), g in tuned.groupby(["model", "train_examples"]):
            # the reference is the smallest value at this size: a second epoch over half the data (epoch 2)
            # pairs with one epoch over all of it at the same examples seen, not with a curve's early point
            values = sorted(g[knob].dropna().unique())
            ref = values[0] if values else None
            for value in values[1:]:
                refs, vals = [], []
                for _, grp in g.groupby(["seed", *others], dropna=False):
                    a, b = grp[grp[knob] == ref], grp[grp[knob] == value]
                    if len(a) and len(b):
                        refs.append(arm_matrix(a).mean(axis=0))
                        vals.append(arm_matrix(b).mean(axis=0))
                if refs:
                    # pairs share seed and other knobs; Newcombe on the pair-averaged scores
                    ci = newcombe_gain(np.vstack(refs), np.vstack(vals), data.alpha)
                    rows.append(
                        {
                            "model": model,
                            "train_examples": int(size),
                            "knob": knob,
                            "value": value,
                            "reference": ref,
                            "pairs": len(refs),
                            "diff": ci.mean,
                            "lo": ci.lo,
                            "hi": ci.hi,
                        }
                    )
    return pd.DataFrame(
        rows, columns=["model", "train_examples", "knob", "value", "reference", "pairs", "diff", "lo", "hi"]
    )


def groupings(data: StudyData) -> dict[str, np.ndarray]:
    """Subsets reported per benchmark: MATH by level and subject, synthetic by reasoning steps."""
    pr = data.problems
    out: dict[str, np.ndarray] = {}
    for name in sorted(pr["eval_set"].fillna("unknown").unique()):
        in_set = (pr["eval_set"].fillna("unknown") == name).to_numpy()
        for col, label in (("level", "level"), ("subject", ""), ("steps", "steps")):
            vals = pr.loc[in_set, col].dropna().unique()
            if len(vals) < 2:
                continue
            for v in sorted(vals, key=str):
                tag = f"{label} {v:g}" if label and isinstance(v, int | float) else f"{label} {v}".strip()
                out[f"{name} · {tag}"] = in_set & (pr[col] == v).to_numpy()
    return out


def breakdown(data: StudyData, model: str) -> pd.DataFrame:
    """Accuracy of the base and each chosen size on each subset, with the paired gain's CI."""
    base = base_vector(data, model)
    chosen = arms(data, model)
    rows = []
    for name, mask in groupings(data).items():
        b = accuracy_ci(base[mask], data.alpha)
        rows.append(
            {
                "model": model,
                "group": name,
                "train_examples": 0,
                "n": int(mask.sum()),
                "accuracy": b.mean,
                "lo": b.lo,
                "hi": b.hi,
                "gain": 0.0,
                "gain_lo": 0.0,
                "gain_hi": 0.0,
                "interval": "",
            }
        )
        for size, pts in sorted(chosen.items()):
            mat = arm_matrix(pts)[:, mask]
            acc = accuracy_ci(mat.mean(axis=0), data.alpha, runs=mat.shape[0])
            gain = paired_gain(base[mask], mat, data.alpha)
            rows.append(
                {
                    "model": model,
                    "group": name,
                    "train_examples": size,
                    "n": int(mask.sum()),
                    "accuracy": acc.mean,
                    "lo": acc.lo,
                    "hi": acc.hi,
                    "gain": gain.mean,
                    "gain_lo": gain.lo,
                    "gain_hi": gain.hi,
                    "interval": gain.method,
                }
            )
    return pd.DataFrame(rows)


def general_change(data: StudyData, margin: float = GENERAL_MARGIN) -> pd.DataFrame:
    """Per point with general-ability results: math gain (Newcombe) and the general change as a TOST
    equivalence test within +-margin (alpha = the study's; 1 - 2 alpha interval) with its flipped items."""
    bases = data.points[data.points["trial"].isna()].set_index("model")
    rows = []
    for _, p in tuned_points(data).iterrows():
        bg = bases.loc[p["model"], "general"] if p["model"] in bases.index else {}
        before, after = [], []
        for name, res in (p["general"] or {}).items():
            ref = (bg or {}).get(name)
            if (
                not ref
                or ref.get("fingerprint") != res.get("fingerprint")
                or len(ref["correct"]) != len(res["correct"])
            ):
                continue
            before += list(ref["correct"])
            after += list(res["correct"])
        if not before:
            continue
        eq = equivalence_test(before, after, margin, data.alpha)
        math_ci = newcombe_gain(base_vector(data, p["model"]), p["_correct"], data.alpha)
        rows.append(
            {
                "model": p["model"],
                "trial": int(p["trial"]),
                "train_examples": int(p["train_examples"]),
                "lora_r": p["lora_r"],
                "mix_fraction": p["mix_fraction"],
                "math_gain": math_ci.mean,
                "math_lo": math_ci.lo,
                "math_hi": math_ci.hi,
                "general_n": eq.gain.n,
                "general_change": eq.gain.mean,
                "general_lo": eq.gain.lo,
                "general_hi": eq.gain.hi,
                "general_up": eq.gain.fixed,
                "general_down": eq.gain.broken,
                "margin": margin,
                "tost_p": eq.p,
                "equivalent": eq.equivalent,
            }
        )
    return pd.DataFrame(rows)


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Optuna's PED-ANOVA importances of the searched parameters (seed excluded), or None and why not."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    names = sorted({k for t in complete for k in t.params if k != "seed"})
    varying = [k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1]
    if (note := importance_note(len(complete), len(varying))) is not None:
        return None, note
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            found = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    except (ValueError, RuntimeError) as err:
        return None, f"Optuna could not compute parameter importances: {err}"
    if caught:
        return None, f"Parameter importances are not informative here: {caught[0].message}"
    return dict(found), (
        f"PED-ANOVA importances over {len(complete)} complete trials (selection-slice value; descriptive)."
    )


def importance_note(n_complete: int, varying: int) -> str | None:
    """Why importances are skipped, or None when there are enough complete trials to compute them."""
    if n_complete < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            f"Parameter importances skipped: {n_complete} complete trials (need {MIN_TRIALS_FOR_IMPORTANCE}); "
            "on a small grid PED-ANOVA's split returns the same shares for any accuracies. The paired knob "
            "effects above are the honest comparison."
        )
    if varying == 0:
        return "Parameter importances skipped: no searched parameter varies."
    return None
