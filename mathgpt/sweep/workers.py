"""Local workers: ``mathgpt sweep ... --workers N`` starts N worker processes on the same study storage.

Each worker is the same sweep command joined to the study (``--storage URL --study NAME --worker``), so what
keeps points from running twice is what already keeps separate machines apart: the launcher queues every
grid point once, and each worker takes the next queued one. The cores are split between the workers: each worker and its run children get
``OMP_NUM_THREADS = MKL_NUM_THREADS = cores // N``. Without it every process runs one thread per core; two
workers on one PostgreSQL study on the 2-core machine took 8 min 12 s for a 128-example trial that takes about
2 minutes alone (issue 13), fewer trials per hour than one worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mathgpt.redact import redact
from mathgpt.sweep.console import console
from mathgpt.sweep.trial import child_env, die_with_parent

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or cpu_cores()) // workers)


def worker_env(n: int) -> dict[str, str]:
    """A worker's environment: its share of the cores, inherited by its run children (``child_env``)."""
    return child_env() | dict.fromkeys(THREAD_VARS, str(threads_per_worker(n)))


def worker_cmd(
    sweep_path: str | Path, url: str, name: str, output_dir: str | Path, n_trials: int | None
) -> list[str]:
    cmd = [sys.executable, "-m", "mathgpt", "sweep", str(sweep_path), "--storage", url, "--study", name]
    cmd += ["--output-dir", str(output_dir), "--no-report", "--worker"]
    return cmd + (["--n-trials", str(n_trials)] if n_trials is not None else [])


def run_workers(
    n: int, sweep_path: str | Path, url: str, name: str, output_dir: str | Path, n_trials: int | None
) -> list[int]:
    """Start ``n`` workers on the study, wait for all of them, and return their exit codes."""
    threads = threads_per_worker(n)
    console.print(
        f"[{name}] {n} local workers on {redact(url)}, {threads} torch thread(s) each "
        f"({cpu_cores()} cores split: OMP_NUM_THREADS=MKL_NUM_THREADS={threads})"
    )
    env = worker_env(n)
    cmd = worker_cmd(sweep_path, url, name, output_dir, n_trials)
    procs = [
        subprocess.Popen(cmd, env=env | {"MATHGPT_SWEEP_WORKER": str(i)}, preexec_fn=die_with_parent)
        for i in range(n)
    ]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same SIGINT: let them re-queue their trials and exit
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    for i, code in enumerate(codes):
        if code != 0:
            console.print(
                f"[{name}] worker {i} exited with code {code} (its trial is re-queued on the next run)"
            )
    return codes
