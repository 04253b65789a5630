"""The sympy worker pool: comparisons that need sympy run in subprocesses that can be killed.

Guarantees (tested): thread-safe (each concurrent caller gets its own idle worker), killable (a wall-clock
timeout enforced by the caller with ``select``, then kill + restart, so it holds in threads, unlike SIGALRM),
memory-capped (RLIMIT_AS set inside the worker before sympy is imported). A timeout or a dead worker is
reported as ``None``, which the caller grades "ungradable", never "wrong".
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from mathgpt.checker.compare import _equal, _sympy_expr_equal
from mathgpt.checker.grammar import Node, _Reject

CHECK_TIMEOUT_S = 0.6  # one symbolic comparison; the budget is 1 s per check
STARTUP_TIMEOUT_S = 30.0  # a cold worker imports sympy once (~0.5 s warm, more on a busy box)
WORKER_MEMORY_BYTES = 1_536 * 2**20


def _serve() -> None:
    """Worker loop: one JSON request per line in; "1", "0" or "E <error>" per line out. A separate process."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    sys.setrecursionlimit(3000)
    import sympy  # noqa: F401  (imported before "ready" so the first check does not pay for it)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            reply = "1" if _equal(request["a"], request["b"], _sympy_expr_equal) is True else "0"
        except _Reject:  # a value too big to build (x^(10^6)): not provably equal
            reply = "0"
        except Exception as err:  # MemoryError, RecursionError, a sympy failure: the comparison broke down
            reply = "E " + type(err).__name__
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


class _Worker:
    """A sympy subprocess that answers one comparison at a time; killed when it runs past the timeout."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from mathgpt.checker.pool import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self.ready = False
        self.buffer = b""

    def _readline(self, deadline: float) -> str | None:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.buffer:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None  # the worker died (memory limit, crash)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, a: Node, b: Node, timeout: float) -> tuple[bool | None, str]:
        """(True/False, "") from the worker, or (None, why) when it could not decide: a timeout (the caller
        kills it), a dead worker or an error inside the comparison."""
        if not self.ready:
            if self._readline(time.monotonic() + STARTUP_TIMEOUT_S) != "ready":
                return None, "worker did not start" if self.proc.poll() is None else "worker died"
            self.ready = True
        try:
            self.proc.stdin.write(json.dumps({"a": a, "b": b}).encode() + b"\n")  # type: ignore[union-attr]
        except OSError:
            return None, "worker died"
        reply = self._readline(time.monotonic() + timeout)
        if reply is None:
            return None, "timeout" if self.proc.poll() is None else "worker died"
        if reply.startswith("E"):
            return None, f"symbolic check failed ({reply[2:]})"
        return reply == "1", ""

    def poll_ready(self) -> bool:
        if not self.ready and self._readline(time.monotonic()) == "ready":
            self.ready = True
        return self.ready

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


_POOL: list[_Worker] = []
_POOL_LOCK = threading.Lock()
_POOL_PID = os.getpid()


def _take_worker() -> _Worker:
    """An idle worker, ready ones first; one spare is kept starting so a kill never leaves a cold pool."""
    global _POOL_PID
    with _POOL_LOCK:
        if _POOL_PID != os.getpid():  # forked: the parent's pipes are not ours to use
            _POOL.clear()
            _POOL_PID = os.getpid()
        for dead in [w for w in _POOL if w.proc.poll() is not None]:  # killed from outside, crashed idle
            _POOL.remove(dead)
            dead.kill()
        ready = [i for i, w in enumerate(_POOL) if w.poll_ready()]
        worker = _POOL.pop(ready[0] if ready else 0) if _POOL else _Worker()
        if not _POOL:
            _POOL.append(_Worker())
        return worker


def symbolic_equal(a: Node, b: Node) -> tuple[bool | None, str]:
    """Ask an idle worker; concurrent callers (threads) each get their own, so nobody waits on a lock.

    Returns (verdict, "") or (None, why) for a timeout, a dead worker or a failed comparison.
    """
    worker = _take_worker()
    verdict, why = worker.ask(a, b, CHECK_TIMEOUT_S)
    if verdict is None and not why.startswith("symbolic"):  # stuck or dead: replace it
        worker.kill()
        worker = _Worker()  # starts importing sympy now, to be ready a few calls later
    with _POOL_LOCK:
        _POOL.append(worker)
    return verdict, why


def warm_up(timeout: float = STARTUP_TIMEOUT_S) -> bool:
    """Start the sympy workers (one and its spare) and wait until both are ready; False if they are not.

    Optional: without it the first symbolic check pays for sympy's import (~0.5-3 s on a busy CPU).
    """
    worker = _take_worker()  # leaves a spare in the pool
    with _POOL_LOCK:
        _POOL.append(worker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _POOL_LOCK:
            if all(w.poll_ready() for w in _POOL):
                return True
        time.sleep(0.02)
    return False


@atexit.register
def _shutdown() -> None:
    with _POOL_LOCK:
        if _POOL_PID == os.getpid():
            for worker in _POOL:
                worker.kill()
        _POOL.clear()
