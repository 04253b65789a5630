"""Where a run ran: CPU model and the flags that change its numbers, or the GPU; threads; library versions.

Training is not bit-reproducible across machines (the same config on two CPU models gave verdicts that differ
on 4-10 problems per point), so every run records this next to its results and the report warns when a study
mixes machines. A leaf module: it imports nothing from mathgpt, and torch only when called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from importlib import metadata
from pathlib import Path

# Flags that change which kernels run (bf16 matmuls, int8 dot products, AMX tiles), hence speed and rounding.
RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)
# What makes two runs' numbers comparable: a study whose points differ in any of these mixes machines.
IDENTITY = ("cpu", "cpu_flags", "gpu", "torch_threads", "torch", "transformers", "peft")


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """The first processor's model name and its RELEVANT_FLAGS (in that order) from /proc/cpuinfo text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # "Features" on ARM
            flags = set(value.split())
    return model, [f for f in RELEVANT_FLAGS if f in flags]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """CPU model and flags, GPU name when CUDA is available, torch threads and library versions."""
    import torch

    path = Path(cpuinfo)
    model, flags = parse_cpuinfo(path.read_text()) if path.is_file() else (None, [])
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "cpu_count": usable,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "python": platform.python_version(),
    }


def native_bf16(device: str, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether ``device`` ("cpu" or "cuda") multiplies bf16 natively: a CUDA GPU that says so, or a CPU with
    AMX-BF16 or AVX512-BF16 tiles/instructions. Without them torch emulates bf16 on CPU (bench/RESULTS.md: 1/60
    of the fp32 matmul rate on an AVX2-only AMD EPYC)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    path = Path(cpuinfo)
    _, flags = parse_cpuinfo(path.read_text()) if path.is_file() else (None, [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def identity(machine: dict) -> tuple:
    """The fields that make two runs' numbers comparable (IDENTITY), as a hashable key."""
    return tuple(tuple(machine.get(k) or ()) if k == "cpu_flags" else machine.get(k) for k in IDENTITY)


def describe(machine: dict) -> str:
    """One line for a report's methods: "AMD EPYC (avx512_bf16; 2 threads), torch 2.13.0, ..."."""
    device = machine.get("gpu") or machine.get("cpu") or "unknown device"
    flags = ", ".join(machine.get("cpu_flags") or []) or "no listed flags"
    threads = machine.get("torch_threads")
    extra = [f"{k} {machine[k]}" for k in ("dtype", "mixed_precision", "eval_dtype") if machine.get(k)]
    libs = ", ".join(f"{k} {machine.get(k)}" for k in ("torch", "transformers", "peft", "python"))
    where = (
        f"{device} (host {machine.get('cpu')})"
        if machine.get("gpu")
        else f"{device} ({flags}; {threads} torch threads)"
    )
    return ", ".join([where, libs, *extra])


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand memory that is free but held in glibc's heap back to the OS (``malloc_trim``); a no-op off glibc.

    CPU training with varying batch shapes fragments the heap: on Qwen2.5-0.5B at GSM8K lengths a trial's
    resident memory grew ~120 MB per optimizer step under glibc (6.0 -> 9.8 GB over 32 steps) and stayed flat
    (3.2-6.3 GB) under jemalloc, so the growth was held free memory, not live tensors (2-core Intel Xeon with
    AMX, 2026-12-02; bench/RESULTS.md "Memory of a Qwen2.5-0.5B trial").
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
