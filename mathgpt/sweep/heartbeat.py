"""Lost trials: a worker's heartbeat in its running trial, and the retry of trials whose worker died.

Every worker writes a heartbeat into its running trial; a trial whose worker died (same host: its pid is
gone; elsewhere: no heartbeat for ``GRACE_S``) is marked failed and re-queued with the same params, so
re-running the command resumes the study. Optuna's own heartbeat exists only for RDB storages, hence this
small one that works for journal files too. Only public Optuna API: the storage object the sweep created
and its ``get_trial_id_from_study_id_trial_number`` / ``set_trial_*`` methods.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from mathgpt.sweep.spec import SweepConfig

HEARTBEAT_S = 10.0  # how often a running trial proves its worker is alive
GRACE_S = 120.0  # silence after which a trial on another host counts as lost
MAX_RETRY = 2  # re-queues of one grid point (lost worker, killed run child) before it stays failed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial: FrozenTrial, now: float, host: str, grace_s: float = GRACE_S) -> bool:
    """A running trial whose worker is gone: a dead pid on this host, or no heartbeat within ``grace_s``."""
    worker = trial.user_attrs.get("worker") or {}
    if worker.get("host") == host and worker.get("pid") and not pid_alive(worker["pid"]):
        return True
    start = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - max(start, trial.user_attrs.get("heartbeat", 0.0)) > grace_s


def counts_as_done(trial: FrozenTrial) -> bool:
    """Finished trials that count towards n_trials (a re-queued trial does not: its retry does)."""
    return (
        trial.state.is_finished()
        and not trial.user_attrs.get("requeued")
        and not trial.user_attrs.get("duplicate")
    )


def queued_twice(me: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """Whether an earlier trial holds ``me``'s queued grid point. The launcher queues each point once
    (``enqueue_trial(skip_if_exists=True)``), but two launchers starting at the same moment on one RDB can both
    queue it (Optuna documents that race); the later copy then steps aside instead of running it twice."""
    params = me.system_attrs.get("fixed_params")
    return params is not None and any(
        t.number < me.number
        and t.system_attrs.get("fixed_params") == params
        and not t.user_attrs.get("requeued")
        for t in trials
    )


def frozen(study: optuna.Study, number: int) -> FrozenTrial:
    """The stored trial with this number (fresh from the storage)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def retry_lost_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, host: str, grace_s: float = GRACE_S
) -> list[int]:
    """Fail every running trial whose worker is gone and queue a fresh copy with the same params.

    Marking a trial FAIL succeeds in one worker only (the storage refuses to finish a finished trial), so two
    workers that see the same lost trial queue it once.
    """
    now, requeued = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, now, host, grace_s):
            continue
        tid = trial_id(storage, study, t.number)
        retry = can_retry(t)
        try:
            storage.set_trial_user_attr(tid, "lost", True)
            storage.set_trial_user_attr(tid, "requeued", retry)
            storage.set_trial_user_attr(tid, "fail_reason", "worker lost mid-trial (killed or hung)")
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        if retry:
            requeue(study, t)
            requeued.append(t.number)
    return requeued


def can_retry(t: FrozenTrial | optuna.Trial, max_retry: int = MAX_RETRY) -> bool:
    """Whether ``t`` may be queued again: it is fewer than ``max_retry`` retries deep."""
    return int(t.user_attrs.get("retry_depth", 0)) < max_retry


def requeue(study: optuna.Study, t: FrozenTrial) -> None:
    """Queue a fresh trial with ``t``'s params, one retry deeper; the next free worker runs it before sampling
    anything new. The caller marks ``t`` ``requeued`` (so it does not count as done) while it still runs."""
    retry = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=t.params,
        distributions=t.distributions,
        user_attrs={"retry_of": t.number, "retry_depth": int(t.user_attrs.get("retry_depth", 0)) + 1},
        system_attrs=t.system_attrs,  # keeps the grid point (fixed_params / grid_id)
    )
    study.add_trial(retry)


def remaining_trials(study: optuna.Study, sweep: SweepConfig) -> int:
    """How many more trials this worker should start, given what is finished and running anywhere."""
    target = sweep.n_trials or 0
    if sweep.sampler.type in ("grid", "list"):
        size = (
            math.prod(len(v) for v in sweep.grid().values())
            if sweep.sampler.type == "grid"
            else len(sweep.design_points())
        )
        target = min(target, size) if target else size
    trials = study.get_trials(deepcopy=False)
    done = sum(counts_as_done(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return max(0, target - done - running)
