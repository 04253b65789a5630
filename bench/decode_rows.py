"""How a decoding step's cost grows with the rows it carries: the continuous batch's step (``mathgpt.generate``)
at several slot counts, per model, against a square GEMM measured in the same run.

Below some row count a CPU decoding step costs about the same whatever the rows: every weight is read from
memory once per step, so the step is bound by memory, not by arithmetic. What evaluation then gains comes from
keeping many rows in every step (``eval.batch_size`` slots, refilled from the queue), more than from skipping
finished rows. Each cell is ``time_decode_steps`` (one untimed step, then ``--steps``) on a zero-filled cache of
``--context`` columns. Writes the "decode-rows" section of bench/RESULTS.md.

``--profile`` adds torch.profiler's top operators (self CPU time) over 5 steps at the smallest row count of
the first model: where a step's time goes when it is memory-bound.

    python bench/decode_rows.py [--models M ...] [--rows 16 64 150] [--context 200] [--steps 8] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mathgpt.generate import time_decode_steps  # noqa: E402
from mathgpt.machine import describe, machine_info  # noqa: E402
from mathgpt.model import load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval_long import decode_params, square_gemm  # noqa: E402
from results import write_section  # noqa: E402


def top_ops(model, rows: int, context: int, n: int = 6) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_decode_steps(model, rows=rows, context=context, steps=5)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:n])
    return [f"Profile of 5 steps at {rows} rows ({model.config.model_type}), self CPU time: {top}."]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["embedded:smollm2-135m-instruct", "embedded:qwen2.5-coder-0.5b-instruct"],
    )
    p.add_argument("--rows", nargs="+", type=int, default=[16, 64, 150])
    p.add_argument("--context", type=int, default=200, help="cache columns each row attends to")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args(argv)
    square = square_gemm(2048, torch.float32, repeats=3) / 1e9
    lines = [
        "## Decoding step cost against rows per step (CPU, `bench/decode_rows.py`)",
        "",
        f"`python bench/decode_rows.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {describe(machine_info())}. fp32; {a.context} cache columns; "
        f"{a.steps} timed steps per cell. Square 2048 GEMM in this run: {square:.0f} GFLOP/s.",
        "",
        "| model | rows | ms / step | tokens/s | decoding GFLOP/s | % square GEMM |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in a.models:
        model = load_model(name, device="cpu")
        model.eval()
        params = decode_params(model)
        for rows in a.rows:
            step_s, _ = time_decode_steps(model, rows=rows, context=a.context, steps=a.steps)
            rate = 2 * params * rows / step_s / 1e9
            lines.append(
                f"| {name.removeprefix('embedded:')} | {rows} | {1000 * step_s:.0f} | {rows / step_s:.0f} | "
                f"{rate:.1f} | {100 * rate / square:.0f}% |"
            )
            print(lines[-1], flush=True)
        if a.profile and name == a.models[0]:
            profile_lines = top_ops(model, min(a.rows), a.context)
        del model
    if a.profile:
        lines += ["", *profile_lines]
    text = "\n".join(lines)
    print(text)
    write_section("decode-rows", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
