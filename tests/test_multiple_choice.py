"""Log-likelihood multiple choice: against hand computations on the tiny model and on SmolLM2 with PIQA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mathgpt import general, multiple_choice
from mathgpt.data import fingerprint
from mathgpt.general import ChoiceItem
from tests.conftest import need_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@torch.no_grad()
def _by_hand(model, tokenizer, context: str, continuation: str) -> float:
    """One unpadded forward pass over the whole text; sum the log-probs of the continuation's tokens, found
    by character offsets (no use of the module's own tokenization or batching)."""
    enc = tokenizer(context + continuation, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    first = next(k for k, (s, _) in enumerate(enc["offset_mapping"]) if s >= len(context.rstrip(" ")))
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return float(sum(logprobs[k - 1, ids[0, k]] for k in range(first, ids.shape[1])))


ITEMS = [
    ChoiceItem("a", ("Question: 2+2?\nAnswer:",) * 3, (" 4", " five hundred", " 22"), 0),
    ChoiceItem("b", ("The sky is",) * 2, (" blue.", " made of green cheese and string."), 0),
    ChoiceItem(
        "c",
        ("I put the cup on the ", "I put the cup in the "),
        (
            " table.",
            " table.",
        ),
        1,
    ),
]


def test_loglikelihoods_match_a_hand_computation_on_the_tiny_model(tiny_model_dir):
    model, tok = _tiny(tiny_model_dir)
    pairs = [(c, x) for it in ITEMS for c, x in zip(it.contexts, it.continuations, strict=True)]
    hand = [_by_hand(model, tok, c, x) for c, x in pairs]
    # Batched with left padding (3 sequences of different lengths per forward pass) and one at a time.
    for batch_size in (3, 1):
        got = multiple_choice.loglikelihoods(model, tok, pairs, batch_size=batch_size)
        assert got == pytest.approx(hand, abs=1e-4)
    # A logits budget too small for two rows splits every batch down to one row: same values.
    got = multiple_choice.loglikelihoods(model, tok, pairs, batch_size=8, max_logits=1)
    assert got == pytest.approx(hand, abs=1e-4)
    rows = multiple_choice.score_choices(model, tok, ITEMS, batch_size=4)
    k = 0
    for it, row in zip(ITEMS, rows, strict=True):
        ll = hand[k : k + len(it.continuations)]
        k += len(it.continuations)
        norm = [s / len(x.encode()) for s, x in zip(ll, it.continuations, strict=True)]
        assert row["id"] == it.id
        assert row["pred"] == max(range(len(ll)), key=ll.__getitem__)
        assert row["pred_norm"] == max(range(len(norm)), key=norm.__getitem__)
        assert row["correct"] == int(row["pred"] == it.label)
        assert row["correct_norm"] == int(row["pred_norm"] == it.label)


def test_piqa_and_hellaswag_local_files_as_seeded_slices():
    need_data(SHARED / "general" / "piqa" / "valid.jsonl")
    piqa = general.load_choices("piqa", SHARED)
    hella = general.load_choices("hellaswag", SHARED)
    assert len(piqa) == 1838 and len(hella) == 10042  # the official validation counts
    assert sum(i.label for i in piqa) == 928 and [sum(i.label == k for i in hella) for k in range(4)] == [
        2515,
        2485,
        2584,
        2458,
    ]  # label counts from shared/data/README.md
    assert (
        hella[0].contexts[0] == "Roof shingle removal: A man is sitting on a roof. he" and hella[0].label == 3
    )
    assert hella[0].continuations[3] == " starts pulling up roofing on a roof."
    assert piqa[0].contexts[0].startswith("Question: How do I ready a guinea pig cage") and piqa[0].label == 0
    a, b = general.choice_slice(piqa, 50, 0), general.choice_slice(piqa, 50, 1)
    assert a == general.choice_slice(piqa, 50, 0) and a != b
    assert [i.id for i in a] == sorted((i.id for i in a), key=lambda s: int(s.split(":")[1]))
    assert fingerprint(a) != fingerprint(b)


def test_hub_choice_sets_are_converted(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = {
        "Rowan/hellaswag": [
            {
                "activity_label": "Cooking",
                "ctx_a": "A man cuts onions.",
                "ctx_b": "then he",
                "endings": ["cries [step] a lot.", "sings.", "flies.", "sleeps."],
                "label": "0",
            }
        ],
        "baber/piqa": [{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0}],
        "allenai/ai2_arc": [
            {
                "id": "q1",
                "question": "What is hot?",
                "choices": {"text": ["ice", "fire"], "label": ["A", "B"]},
                "answerKey": "B",
            }
        ],
        "allenai/winogrande": [
            {
                "sentence": "The cup fell off the table because _ was wobbly.",
                "option1": "the cup",
                "option2": "the table",
                "answer": "2",
            }
        ],
    }
    monkeypatch.setattr(
        datasets, "load_dataset", lambda repo, config, split: datasets.Dataset.from_list(rows[repo])
    )
    (h,) = general.load_choices("hellaswag")
    assert h.contexts[0] == "Cooking: A man cuts onions. Then he" and h.continuations[0] == " cries a lot."
    (p,) = general.load_choices("piqa")
    assert p.continuations == (" Twist the lid.", " Eat the lid.") and p.label == 0
    (a,) = general.load_choices("arc_challenge")
    assert a.id == "arc:q1" and a.label == 1
    (w,) = general.load_choices("winogrande")
    assert w.contexts == (
        "The cup fell off the table because the cup",
        "The cup fell off the table because the table",
    )
    assert w.continuations == (" was wobbly.",) * 2 and w.label == 1


def test_unknown_general_set_is_one_line():
    with pytest.raises(
        general.DataError, match="unknown general evaluation set 'mmlu'; known: piqa, hellaswag"
    ):
        general.load_choices("mmlu")


@pytest.mark.slow
def test_smollm2_piqa_accuracy_matches_an_independent_computation():
    """100 PIQA items on the embedded SmolLM2: batched scoring vs one plain forward pass per choice."""
    need_data(SHARED / "general" / "piqa" / "valid.jsonl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathgpt.model import embedded_model_dir

    path = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    items = general.choice_slice(general.load_choices("piqa", SHARED), 100, 0)
    rows = multiple_choice.score_choices(model, tok, items, batch_size=16)
    hand_correct = hand_norm = 0
    for it in items:
        ll = [_by_hand(model, tok, c, x) for c, x in zip(it.contexts, it.continuations, strict=True)]
        norm = [s / len(x.encode()) for s, x in zip(ll, it.continuations, strict=True)]
        hand_correct += int(max(range(2), key=ll.__getitem__) == it.label)
        hand_norm += int(max(range(2), key=norm.__getitem__) == it.label)
    acc = sum(r["correct"] for r in rows)
    acc_norm = sum(r["correct_norm"] for r in rows)
    print(f"SmolLM2 PIQA 100: acc {acc} (hand {hand_correct}), acc_norm {acc_norm} (hand {hand_norm})")
    assert abs(acc - hand_correct) <= 1 and abs(acc_norm - hand_norm) <= 1
    assert 55 <= acc <= 80  # a 135M model is well above chance (50) on PIQA and far below people (95)


@pytest.mark.slow
def test_run_scores_general_sets_at_every_point_paired_by_ids(tiny_model_dir, tmp_path, write_config):
    import json

    from mathgpt.cli import main
    from tests.conftest import tiny_run_config

    need_data(SHARED / "general" / "piqa" / "valid.jsonl")
    raw = tiny_run_config(
        tiny_model_dir,
        data={"data_dir": str(SHARED), "eval_size": 4, "train_size": 16},
        train={"min_steps": 1},
        eval={"general": ["piqa", "hellaswag"], "general_size": 5},
    )
    out = tmp_path / "out"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 0
    points = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert len(points) == 2  # the base, then epoch 1
    base, tuned = points[0]["general"], points[1]["general"]
    assert set(base) == set(tuned) == {"piqa", "hellaswag"}
    for name in base:
        assert (
            base[name]["ids"] == tuned[name]["ids"]
            and base[name]["fingerprint"] == tuned[name]["fingerprint"]
        )
        assert base[name]["n"] == 5 and len(base[name]["correct"]) == len(base[name]["correct_norm"]) == 5
        assert base[name]["accuracy"] == sum(base[name]["correct"]) / 5
    items = general.choice_slice(general.load_choices("piqa", SHARED), 5, 0)
    assert base["piqa"]["ids"] == [i.id for i in items]


def test_unknown_general_set_in_a_run_is_one_line_and_writes_nothing(
    tiny_model_dir, tmp_path, write_config, capsys
):
    from mathgpt.cli import main
    from tests.conftest import tiny_run_config

    raw = tiny_run_config(tiny_model_dir, eval={"general": ["mmlu"]})
    out = tmp_path / "out"
    assert main(["run", str(write_config(raw)), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown general evaluation set 'mmlu'" in err and err.count("\n") == 1
    assert not out.exists()
