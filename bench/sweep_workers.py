"""Combined sweep throughput with 1 and 2 local workers (`mathgpt sweep --workers N`), side by side.

    python bench/sweep_workers.py [--points 4] [--train-size 32] [--out bench/RESULTS.md]

Runs the same grid study on the tiny random test model twice, once per worker count, in fresh folders, and
reports completed trials per hour over the trial phase (first trial start to last trial end, from the study
itself; the base run before it is the same for both). Each worker gets cores // N torch threads. On the tiny
model a trial is mostly process start and imports, so this measures the launcher and the core split, not
SmolLM2-sized training; a real study's ratio has to be measured on its own model.
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


def write_study(root: Path, model: Path, points: int, train_size: int) -> Path:
    run = tiny_run_config(
        model, train={"epochs": 1, "batch_size": 1, "min_steps": 4}, data={"train_size": train_size}
    )
    (root / "base.yaml").write_text(yaml.safe_dump(run))
    lrs = [round(1e-3 * (i + 1), 6) for i in range(points)]
    spec = {
        "study": "w",
        "base_config": "base.yaml",
        "sampler": {"type": "grid"},
        "timeout_s": 3600,
        "params": {"lr": {"key": "train.learning_rate", "type": "categorical", "choices": lrs}},
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny")
        sweep = write_study(root, model, args.points, args.train_size)
        rows = [measure(sweep, root / f"runs{n}", n) for n in (1, 2)]
    ratio = rows[1]["per_hour"] / rows[0]["per_hour"]
    load = os.getloadavg()[0]
    lines = [
        "## Sweep throughput: 1 vs 2 local workers (tiny model, CPU)",
        "",
        f"`python bench/sweep_workers.py --points {args.points} --train-size {args.train_size}` on "
        f"{platform.machine()}, {cpu_cores()} cores, load average {load:.1f} at the end (shared machine: measured "
        f"under load). Tiny random Mistral (~100k parameters), {args.points} grid trials of {args.train_size} "
        f"examples x 1 epoch, 8 problems; `--workers 2` gives each worker {threads_per_worker(2)} torch thread(s).",
        "",
        "| workers | trials | trial phase (s) | command wall (s) | trials / hour |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['workers']} | {r['trials']} | {r['phase_s']:.1f} | {r['wall_s']:.1f} | {r['per_hour']:.0f} |"
            for r in rows
        ),
        "",
        f"**2 workers / 1 worker: {ratio:.2f}x** combined trials per hour. On the tiny model a trial is mostly "
        "process start and imports (single-threaded), so this shows the launcher shares the grid without "
        "running a point twice; the 1-worker run used every core, the 2-worker run cores // 2 each. What the "
        "split buys on compute-bound SmolLM2 training is not measured here (the machine was shared), nor GPU.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("workers", text, args.out)


if __name__ == "__main__":
    main()
