"""`mathgpt merge`: equal to peft's own add_weighted_adapter, exact for `cat`, refuses foreign adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathgpt.cli import main
from tests.conftest import make_tiny_model, tiny_run_config


def _adapter(base_dir: Path, out: Path, seed: int, r: int = 4) -> Path:
    """A LoRA adapter with random (non-zero) A and B, saved like a run's adapter/."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return _adapter(tiny_model_dir, root / "math", 1), _adapter(tiny_model_dir, root / "general", 2)


def _peft_merge(base_dir, adapters, weights, method, density=None) -> dict[str, torch.Tensor]:
    """peft's own merge, called directly, returning the merged adapter's tensors."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    pm = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="x")
    pm.load_adapter(str(adapters[1]), adapter_name="y")
    torch.manual_seed(0)
    pm.add_weighted_adapter(["x", "y"], weights, "m", combination_type=method, density=density)
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(pm, adapter_name="m")


@pytest.mark.parametrize(
    "method,density", [("linear", None), ("cat", None), ("ties", 0.5), ("dare_ties", 0.5)]
)
def test_merge_equals_peft_own_merge(tiny_model_dir, adapters, tmp_path, method, density):
    out = tmp_path / "merged"
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", *map(str, adapters)]
    argv += ["--weights", "0.7", "0.3", "--method", method, "--out", str(out)]
    if density is not None:
        argv += ["--density", str(density)]
    assert main(argv) == 0
    ours = load_file(out / "adapter_model.safetensors")
    theirs = _peft_merge(tiny_model_dir, adapters, [0.7, 0.3], method, density)
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert json.loads((out / "merge.json").read_text())["method"] == method


def test_cat_merge_is_the_weighted_sum_of_updates_and_loads_as_model_adapter(
    tiny_model_dir, adapters, tmp_path
):
    """By hand: W + sum_i w_i (alpha_i / r_i) B_i A_i, folded in through model.adapter, gives the same logits."""
    from transformers import AutoModelForCausalLM

    from mathgpt.model import load_model

    out = tmp_path / "cat"
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", *map(str, adapters)]
    assert main([*argv, "--weights", "0.7", "0.3", "--method", "cat", "--out", str(out)]) == 0
    by_hand = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    params = dict(by_hand.named_parameters())
    for weight, path in zip([0.7, 0.3], adapters, strict=True):
        tensors = load_file(path / "adapter_model.safetensors")
        conf = json.loads((path / "adapter_config.json").read_text())
        scale = conf["lora_alpha"] / conf["r"]
        for key, a in tensors.items():
            if ".lora_A." in key:
                b = tensors[key.replace(".lora_A.", ".lora_B.")]
                name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
                with torch.no_grad():
                    params[name] += weight * scale * (b @ a)
    merged = load_model(str(tiny_model_dir), device="cpu", adapter=str(out))
    ids = torch.tensor([[5, 17, 40, 22, 9, 61]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, by_hand(ids).logits, atol=1e-5)


def test_adapters_of_another_base_are_one_line_exit_2(tiny_model_dir, adapters, tmp_path, capsys):
    other = make_tiny_model(tmp_path / "other", seed=1)
    conf = json.loads((other / "config.json").read_text())
    conf["hidden_size"] = 48  # another architecture: its config differs, so the base check refuses it
    (other / "config.json").write_text(json.dumps(conf))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for f in adapters[1].iterdir():
        (foreign / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((foreign / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(other)
    (foreign / "adapter_config.json").write_text(json.dumps(cfg))
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", str(adapters[0]), str(foreign)]
    capsys.readouterr()  # drop the model writers' progress bars
    assert main([*argv, "--weights", "0.5", "0.5", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"adapter {foreign} was trained on base '{other}'" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
    # Recorded base claims to match, but the tensors are another model's shapes: refused by peft, one line.
    big = make_tiny_model(tmp_path / "big", seed=0)
    conf = json.loads((big / "config.json").read_text())
    conf["hidden_size"], conf["num_attention_heads"] = 64, 4
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**conf)).save_pretrained(big)
    wrong = _adapter(big, tmp_path / "wrong", 3)
    cfg = json.loads((wrong / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_model_dir)
    (wrong / "adapter_config.json").write_text(json.dumps(cfg))
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", str(adapters[0]), str(wrong)]
    capsys.readouterr()
    assert main([*argv, "--weights", "0.5", "0.5", "--out", str(tmp_path / "m")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight loader's progress bar
    assert last.startswith("mathgpt: error: cannot merge") and "size mismatch" in last, last


def test_bad_merge_arguments_are_one_line(tiny_model_dir, adapters, tmp_path, capsys):
    base = [
        "merge",
        "--base",
        str(tiny_model_dir),
        "--adapters",
        *map(str, adapters),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main([*base, "--weights", "0.5"]) == 2
    assert "2 adapters but 1 weights" in capsys.readouterr().err
    assert main([*base, "--weights", "0.5", "0.5", "--method", "ties"]) == 2
    assert "needs --density in (0, 1]" in capsys.readouterr().err
    assert (
        main(
            [
                "merge",
                "--base",
                str(tiny_model_dir),
                "--adapters",
                str(tmp_path),
                str(adapters[0]),
                "--weights",
                "1",
                "1",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert "not a LoRA adapter folder" in capsys.readouterr().err


@pytest.mark.slow
def test_merged_adapter_is_evaluated_like_any_run(tiny_model_dir, adapters, tmp_path, write_config):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    out = tmp_path / "merged"
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", *map(str, adapters)]
    assert main([*argv, "--weights", "0.5", "0.5", "--out", str(out)]) == 0
    general = {"general": ["piqa"], "general_size": 3} if (shared / "general" / "piqa").is_dir() else {}
    raw = tiny_run_config(
        tiny_model_dir,
        model={"adapter": str(out)},
        train={"epochs": 0},
        data={"eval_size": 4, "data_dir": str(shared)},
        eval=general,
    )
    run_dir = tmp_path / "run"
    assert main(["run", str(write_config(raw)), "--output-dir", str(run_dir)]) == 0
    (point,) = [json.loads(x) for x in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert point["n_eval"] == 4
    if general:
        assert point["general"]["piqa"]["n"] == 3


def test_merge_out_never_deletes_what_it_did_not_write(tiny_model_dir, adapters, tmp_path, capsys):
    """Issue 20 #1: --out on a folder with other files, on its own inputs or on '.' is refused, untouched."""
    argv = ["merge", "--base", str(tiny_model_dir), "--adapters", *map(str, adapters), "--weights", "1", "1"]
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("do not delete")
    inputs = adapters[0].parent  # the folder holding both adapters
    before = sorted(p.name for p in inputs.rglob("*"))
    for out in (keep, inputs, adapters[0]):
        capsys.readouterr()
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mathgpt: error: --out") and "\n" not in err, err
    assert (keep / "notes.txt").read_text() == "do not delete"
    assert sorted(p.name for p in inputs.rglob("*")) == before
    # An earlier merge's output is replaced in place (only the files a merge writes).
    out = tmp_path / "merged"
    assert main([*argv, "--out", str(out)]) == 0
    first = (out / "adapter_model.safetensors").read_bytes()
    assert main([*argv[:-2], "0.5", "0.5", "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").read_bytes() != first
    assert json.loads((out / "merge.json").read_text())["weights"] == [0.5, 0.5]
    # ... but not once someone added a file of their own to it.
    (out / "eval.txt").write_text("mine")
    assert main([*argv, "--out", str(out)]) == 2
    assert (out / "eval.txt").read_text() == "mine"
