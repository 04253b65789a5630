"""Machine info: parsed from /proc/cpuinfo text, recorded by every run, described and compared in reports."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import torch
import yaml

from mathgpt import machine
from mathgpt.cli import main
from mathgpt.config import parse_config
from mathgpt.machine import describe, identity, machine_info, native_bf16, parse_cpuinfo
from mathgpt.report.tables import machine_notes
from tests.conftest import tiny_run_config

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8 avx512_fp16

processor\t: 1
model name\t: ignored second core
flags\t\t: fpu
"""


def test_cpuinfo_gives_the_model_and_the_flags_that_change_kernels(tmp_path) -> None:
    model, flags = parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ]
    assert parse_cpuinfo("") == (None, [])
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    info = machine_info(tmp_path / "cpuinfo")
    assert info["cpu"] == model and "amx_bf16" in info["cpu_flags"]
    assert info["torch_threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["python"] == platform.python_version() and info["transformers"] and info["peft"]
    assert info["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert machine_info(tmp_path / "missing")["cpu"]  # no /proc/cpuinfo: platform's name, never a crash


def test_identity_and_notes_separate_machines_that_change_the_numbers() -> None:
    a = {"cpu": "AMD EPYC", "cpu_flags": ["avx512_bf16"], "gpu": None, "torch_threads": 2, "torch": "2.13"}
    assert identity(a) == identity(a | {"python": "3.12", "cpu_count": 8})  # not part of what ran
    assert identity(a) != identity(a | {"torch_threads": 4})
    assert describe(a | {"dtype": "float32"}).startswith(
        "AMD EPYC (avx512_bf16; 2 torch threads), torch 2.13"
    )
    lines, warn = machine_notes([a, a, None])
    assert lines == [describe(a) + ": 2 points"] and "1 point(s) did not record" in warn
    lines, warn = machine_notes([a, a | {"cpu": "Intel Xeon"}])
    assert len(lines) == 2 and warn.startswith("this study mixes 2 machines")
    assert machine_notes([None, None]) == ([], None)


def test_a_run_records_its_machine_in_metrics_and_config(tiny_model_dir, tmp_path, write_config) -> None:
    cfg = write_config(tiny_run_config(tiny_model_dir, train={"epochs": 0}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    machine = metrics["machine"]
    assert machine["cpu"] == machine_info()["cpu"] and machine["torch_threads"] == torch.get_num_threads()
    assert (machine["dtype"], machine["mixed_precision"]) == ("float32", "no")
    text = (tmp_path / "o" / "config.yaml").read_text()
    assert text.splitlines()[0] == f"# machine: {describe(machine)}"
    assert parse_config(yaml.safe_load(text)).train.epochs == 0  # still the config that ran


def test_native_bf16_reads_the_cpu_flags(tmp_path) -> None:
    (tmp_path / "amx").write_text(CPUINFO)
    (tmp_path / "avx2").write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n")
    (tmp_path / "zen4").write_text("model name\t: AMD EPYC\nflags\t\t: avx2 fma avx512f avx512_bf16\n")
    assert native_bf16("cpu", tmp_path / "amx") and native_bf16("cpu", tmp_path / "zen4")
    assert not native_bf16("cpu", tmp_path / "avx2") and not native_bf16("cpu", tmp_path / "missing")


def test_auto_mixed_precision_is_resolved_into_the_config_that_ran(
    tiny_model_dir, tmp_path, write_config, monkeypatch
) -> None:
    """'auto' never reaches config.yaml or the point records: the run writes what it resolved to, per machine."""
    import mathgpt.run as run

    for native, want in ((False, "no"), (True, "bf16")):
        monkeypatch.setattr(run, "native_bf16", lambda device, native=native: native)
        cfg = write_config(tiny_run_config(tiny_model_dir, train={"epochs": 0, "mixed_precision": "auto"}))
        out = tmp_path / want
        assert main(["run", str(cfg), "--output-dir", str(out)]) == 0
        ran = parse_config(yaml.safe_load((out / "config.yaml").read_text()))
        assert ran.train.mixed_precision == want
        assert ran.eval.dtype == {"no": "float32", "bf16": "bfloat16"}[want]  # eval.dtype auto, the same rule
        ran_on = json.loads((out / "metrics.json").read_text())["machine"]
        assert ran_on["mixed_precision"] == want and ran_on["eval_dtype"] == ran.eval.dtype


def test_auto_eval_dtype_takes_bf16_only_for_an_fp32_model_on_a_native_bf16_cpu(monkeypatch) -> None:
    import mathgpt.run as run
    from mathgpt.config import ModelConfig

    fp32, nf4 = ModelConfig(), ModelConfig(dtype="bfloat16", quantization="nf4")
    for native in (False, True):
        monkeypatch.setattr(run, "native_bf16", lambda device, native=native: native)
        assert run.resolved_eval_dtype("auto", "cpu", fp32) == ("bfloat16" if native else "float32")
        assert run.resolved_eval_dtype("auto", "cuda", fp32) == "float32"  # measured on CPUs only
        assert run.resolved_eval_dtype("auto", "cuda", nf4) == "bfloat16"  # the model's own
        assert run.resolved_eval_dtype("float32", "cpu", fp32) == "float32"  # a set value is kept


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    machine._malloc_trim() is None or not Path("/proc/self/status").exists(), reason="glibc only"
)
def test_release_free_memory_returns_a_fragmented_heap_to_the_os():
    # 4 KiB blocks come from the heap (under the mmap threshold); one block kept after them pins the heap's
    # top, so free() alone cannot shrink it and the freed 200 MB stay resident until malloc_trim.
    blocks = [bytearray(4096) for _ in range(50_000)]
    pin = bytearray(4096)
    del blocks
    held = _rss_mb()
    machine.release_free_memory()
    assert held - _rss_mb() > 100, (held, _rss_mb())
    del pin


def test_a_run_that_trains_nothing_casts_its_weights_once_and_answers_the_same(
    tiny_model_dir, tmp_path, write_config, monkeypatch
):
    """A baseline (nothing to train) holds its weights in the decoding dtype instead of keeping both copies; its
    answers are the base point's of a run that does train and decodes through weights_in."""
    import mathgpt.run as run

    copied: dict[int, list[bool]] = {0: [], 1: []}
    epochs_now = {"n": 0}
    real = run.weights_in

    def spy(model, dtype):  # did this point have to cast (and so keep a second copy of) the weights?
        copied[epochs_now["n"]].append(any(p.dtype != dtype for p in model.parameters()))
        return real(model, dtype)

    monkeypatch.setattr(run, "weights_in", spy)
    answers = {}
    for epochs in (0, 1):
        epochs_now["n"] = epochs
        cfg = write_config(
            tiny_run_config(tiny_model_dir, train={"epochs": epochs}, eval={"dtype": "bfloat16"})
        )
        out = tmp_path / f"epochs{epochs}"
        assert main(["run", str(cfg), "--output-dir", str(out)]) == 0
        lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        answers[epochs] = [(r["id"], r["output"]) for r in lines if r["model"] == "base"]
        assert yaml.safe_load((out / "config.yaml").read_text())["eval"]["dtype"] == "bfloat16"
    assert answers[0] and answers[0] == answers[1]
    assert copied[0] and not any(copied[0]) and all(copied[1])
