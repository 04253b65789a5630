"""Combined sweep throughput with 1 and 2 local workers (`mathgpt sweep --workers N`), side by side.

    python bench/sweep_workers.py [--points 4] [--train-size 32] [--out bench/RESULTS.md]
    python bench/sweep_workers.py --smollm2 [--points 4] [--train-size 32]   # compute-bound trials

Runs the same grid study on the tiny random test model twice, once per worker count, in fresh folders, and
reports completed trials per hour over the trial phase (first trial start to last trial end, from the study
itself; the base run before it is the same for both). Each worker gets cores // N torch threads. On the tiny
model a trial is mostly process start and imports, so this measures the launcher and the core split, not
SmolLM2-sized training; ``--smollm2`` runs the same grid on experiments/cpu_smollm2.yaml (embedded
SmolLM2-135M, ``--train-size`` examples at batch 4, 20 problems with a 64-token cap), where a trial is mostly
training and evaluation.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, write_section  # noqa: E402
from mathgpt.storage import open_study  # noqa: E402
from mathgpt.sweep.workers import cpu_cores, threads_per_worker  # noqa: E402
from tests.conftest import make_tiny_model, tiny_run_config  # noqa: E402


def _write_sweep(root: Path, base_config: str, points: int, overrides: dict | None = None) -> Path:
    """A grid over ``points`` learning rates on ``base_config``."""
    lrs = [round(1e-3 * (i + 1), 6) for i in range(points)]
    spec = {
        "study": "w",
        "base_config": base_config,
        "overrides": overrides or {},
        "sampler": {"type": "grid"},
        "timeout_s": 3600,
        "params": {"lr": {"key": "train.learning_rate", "type": "categorical", "choices": lrs}},
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_study(root: Path, model: Path, points: int, train_size: int) -> Path:
    run = tiny_run_config(
        model, train={"epochs": 1, "batch_size": 1, "min_steps": 4}, data={"train_size": train_size}
    )
    (root / "base.yaml").write_text(yaml.safe_dump(run))
    return _write_sweep(root, "base.yaml", points)


def write_smollm2_study(root: Path, points: int, train_size: int) -> Path:
    overrides = {
        "data.train_size": train_size,
        "data.eval_size": 20,
        "eval.max_new_tokens": 64,
        "train.batch_size": 4,
        "train.min_steps": 4,
    }
    return _write_sweep(root, str(REPO / "experiments" / "cpu_smollm2.yaml"), points, overrides)


def measure(sweep: Path, out: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "mathgpt", "sweep", str(sweep), "--output-dir", str(out), "--no-report"]
    t0 = time.time()
    proc = subprocess.run([*cmd, "--workers", str(workers)], env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep with {workers} worker(s) failed: {proc.stderr.strip()[-500:]}")
    trials = [
        t
        for t in open_study("w", runs_dir=out).get_trials()
        if t.state.name == "COMPLETE" and not t.user_attrs.get("duplicate")
    ]
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    phase = (end - start).total_seconds()
    return {"workers": workers, "trials": len(trials), "phase_s": phase, "wall_s": wall,
            "per_hour": 3600 * len(trials) / phase}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--train-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--smollm2", action="store_true", help="trials on the embedded SmolLM2-135M")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.smollm2:
            sweep = write_smollm2_study(root, args.points, args.train_size)
        else:
            sweep = write_study(root, make_tiny_model(root / "tiny"), args.points, args.train_size)
        rows = [measure(sweep, root / f"runs{n}", n) for n in (1, 2)]
    ratio = rows[1]["per_hour"] / rows[0]["per_hour"]
    load = os.getloadavg()[0]
    what = (
        f"SmolLM2-135M (experiments/cpu_smollm2.yaml, bf16 autocast), {args.points} grid trials of "
        f"{args.train_size} examples x 1 epoch at batch 4, 20 problems, 64-token cap"
        if args.smollm2
        else f"Tiny random Mistral (~100k parameters), {args.points} grid trials of {args.train_size} "
        "examples x 1 epoch, 8 problems"
    )
    lines = [
        f"## Sweep throughput: 1 vs 2 local workers ({'SmolLM2' if args.smollm2 else 'tiny model'}, CPU)",
        "",
        f"`python bench/sweep_workers.py{' --smollm2' if args.smollm2 else ''} --points {args.points} "
        f"--train-size {args.train_size}` on {platform.machine()}, {cpu_cores()} cores, "
        f"{time.strftime('%Y-%m-%d')}, load average {load:.1f} at the end (the run itself holds it near 2). "
        f"{what}; `--workers 2` gives each worker {threads_per_worker(2)} torch thread(s), one worker all "
        f"{cpu_cores()}.",
        "",
        "| workers | trials | trial phase (s) | command wall (s) | trials / hour |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['workers']} | {r['trials']} | {r['phase_s']:.1f} | {r['wall_s']:.1f} | {r['per_hour']:.0f} |"
            for r in rows
        ),
        "",
        f"**2 workers / 1 worker: {ratio:.2f}x** combined trials per hour"
        + (
            f". Trials are short ({rows[0]['phase_s'] / rows[0]['trials']:.0f} s each with one worker), so "
            "process start and model loading weigh in both runs; with threads split, two workers on 2 cores "
            "add up instead of slowing each other (unsplit, two workers made a 2-minute trial take 8 min 12 s, "
            "issue 13)."
            if args.smollm2
            else ". On the tiny model a trial is mostly process start and imports (single-threaded), so this "
            "shows the launcher shares the grid without running a point twice."
        ),
    ]
    text = "\n".join(lines)
    print(text)
    write_section("workers-smollm2" if args.smollm2 else "workers", text, args.out)


if __name__ == "__main__":
    main()
