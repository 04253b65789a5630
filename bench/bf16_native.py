"""Does bf16 pay on this CPU? fp32 against bf16, side by side: matmuls at the shapes training and decoding run,
and one LoRA training step of SmolLM2-135M with and without bf16 autocast.

``train.mixed_precision: auto`` takes bf16 only where the CPU has native bf16 (AMX-BF16 or AVX512-BF16 in
/proc/cpuinfo, ``mathgpt.machine.native_bf16``); this is the measurement behind that rule. Without those
instructions torch emulates bf16, and on an AVX2-only CPU that is far slower than fp32, not faster. Each timing
is the best of ``--repeats`` (at most ``--budget`` seconds per shape once the first has run). Writes the
"bf16-native" section of bench/RESULTS.md.

    python bench/bf16_native.py [--repeats 3] [--budget 20] [--no-train-step] [--section NAME]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mathgpt.machine import describe, machine_info, native_bf16  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

# (label, rows, inner, out): a training batch's projection, a decoding step's MLP at 64 slots, and Qwen's head.
SHAPES = [
    ("training: 2048 tokens x 576 -> 1536 (SmolLM2 MLP)", 2048, 576, 1536),
    ("decoding: 64 slots x 896 -> 4864 (Qwen2.5-0.5B MLP)", 64, 896, 4864),
    ("decoding: 64 slots x 896 -> 151936 (Qwen2.5-0.5B head)", 64, 896, 151936),
]


def best_seconds(fn, repeats: int, budget_s: float) -> float:
    fn()  # first call: allocation and kernel selection
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_rows(repeats: int, budget_s: float) -> list[str]:
    rows = []
    for label, m, k, n in SHAPES:
        rate = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
            s = best_seconds(lambda a=a, w=w: torch.nn.functional.linear(a, w), repeats, budget_s)
            rate[dtype] = 2 * m * k * n / s / 1e9
        ratio = rate[torch.bfloat16] / rate[torch.float32]
        rows.append(f"| {label} | {rate[torch.float32]:.1f} | {rate[torch.bfloat16]:.1f} | {ratio:.3f}x |")
    return rows


def train_step_row(repeats: int, budget_s: float) -> str:
    from mathgpt.config import LoraSettings
    from mathgpt.model import add_lora, load_model
    from mathgpt.run import lora_settings

    torch.manual_seed(0)
    model = add_lora(
        load_model("embedded:smollm2-135m-instruct", device="cpu"), **lora_settings(LoraSettings())
    )
    model.train()
    ids = torch.randint(0, 1000, (2, 64))
    secs = {}
    for bf16 in (False, True):

        def step(bf16=bf16):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        secs[bf16] = best_seconds(step, repeats, budget_s)
    return (
        f"| LoRA r=16 training step, SmolLM2-135M, 2 x 64 tokens (s) | {secs[False]:.2f} | {secs[True]:.2f} | "
        f"{secs[False] / secs[True]:.3f}x (speed) |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="seconds per shape after its first timing")
    p.add_argument("--no-train-step", action="store_true")
    p.add_argument("--section", default="bf16-native", help="RESULTS.md section (one per CPU kind kept)")
    a = p.parse_args(argv)
    machine = machine_info()
    rows = matmul_rows(a.repeats, a.budget)
    if not a.no_train_step:
        rows.append(train_step_row(a.repeats, a.budget))
    auto = "bf16" if native_bf16("cpu") else "no"
    text = "\n".join(
        [
            "## bf16 on this CPU: native or emulated (`bench/bf16_native.py`)",
            "",
            f"`python bench/bf16_native.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
            f"{time.strftime('%Y-%m-%d')}, {describe(machine)}. Best of {a.repeats}; GFLOP/s unless marked.",
            "",
            "| shape | fp32 | bf16 | bf16 / fp32 |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"`train.mixed_precision: auto` resolves to **{auto}** on this CPU (native bf16: "
            f"{'yes' if auto == 'bf16' else 'no'}; flags {', '.join(machine['cpu_flags']) or 'none listed'}).",
        ]
    )
    print(text)
    write_section(a.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
