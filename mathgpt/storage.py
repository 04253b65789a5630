"""Where an Optuna study lives: a journal file (default) or an RDB URL, opened the same way by every reader.

The sweep writes studies and the report, the dashboard and the bench read them; all of them go through
``resolve_storage`` / ``open_study`` here, so this module imports nothing from ``mathgpt.sweep``.

A ``postgresql://`` URL is used exactly as written: SQLAlchemy 2.1 maps a bare ``postgresql://`` to the
psycopg 3 driver, which the project ships (``psycopg[binary]``), so the same URL works in optuna-dashboard,
plain SQLAlchemy or psql. Only the ``postgres://`` alias (Heroku style, which SQLAlchemy rejects) is
spelled out as ``postgresql://``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from mathgpt.config import ConfigError
from mathgpt.redact import redact

# A study name becomes a folder (runs/<study>/, analysis/<study>/): one path component of plain characters.
STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def check_study_name(name: str) -> str:
    """``name`` if it is one safe path component, else one line (before anything is written)."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        shown = repr(name)[:60]
        raise ConfigError(
            f"study name {shown} must be 1-128 of A-Z a-z 0-9 . _ - and not start with '.' (it names a folder)"
        )
    return name


def is_rdb(storage: str | None) -> bool:
    """An RDB URL (``postgresql://``, ``sqlite:///``, ...) rather than a journal file path."""
    return bool(storage and "://" in storage)


def rdb_url(url: str) -> str:
    """The URL SQLAlchemy is given: as written, except the ``postgres://`` alias SQLAlchemy does not know."""
    if url.startswith("postgres://"):
        return "postgresql://" + url.removeprefix("postgres://")
    return url


def journal_path(study_name: str, storage: str | None, runs_dir: str | Path) -> Path:
    """The journal file of a study: ``storage`` when it is a path, else ``runs_dir/<study>/journal.log``."""
    return (Path(storage) if storage else Path(runs_dir) / study_name / "journal.log").resolve()


def repair_tail(path: Path) -> None:
    """Make the journal end on a record boundary, so the next append cannot fuse with a torn record.

    A writer killed mid-append leaves a last line without its newline. Optuna's reader skips such a last line,
    but an append would glue the next record onto it and turn both into one unparseable line (and every
    later read into an error). A tail that still parses as one record lost only its newline and gets it back;
    any other tail is a partial record, never acknowledged to its writer, and is cut off.
    """
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = size
        while start > 0:  # the last newline, read backwards in blocks (a record is small, the file is not)
            step = min(4096, start)
            f.seek(start - step)
            block = f.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        f.seek(start)
        tail = f.read()
        try:
            json.loads(tail)
        except ValueError:
            f.truncate(start)
        else:
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


class JournalBackend(JournalFileBackend):
    """Optuna's journal file whose every append first repairs a torn tail, under the journal's own lock."""

    def __init__(self, file_path: str) -> None:
        self._journal_lock = JournalFileSymlinkLock(file_path)  # the lock Optuna's backend uses by default
        super().__init__(file_path, lock_obj=self._journal_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        # Optuna's own append, with the repair inside the same lock: no other writer is mid-record meanwhile.
        self._journal_lock.acquire()
        try:
            repair_tail(Path(self._file_path))
            data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
            with open(self._file_path, "ab") as f:
                f.write(data.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._journal_lock.release()


def resolve_storage(
    study_name: str, storage: str | None, runs_dir: str | Path = "runs"
) -> tuple[optuna.storages.BaseStorage, str]:
    """An Optuna storage and the string that names it (the RDB URL, or the journal file's path).

    Callers keep the returned storage object and use its public methods (``get_study_id_from_name``,
    ``set_trial_user_attr``, ...) instead of reaching into ``study._storage``.
    """
    check_study_name(study_name)
    if is_rdb(storage):
        assert storage is not None
        return optuna.storages.RDBStorage(rdb_url(storage)), storage
    path = journal_path(study_name, storage, runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalBackend(str(path))
    return optuna.storages.JournalStorage(backend), str(path)


def open_study(study_name: str, storage: str | None = None, runs_dir: str | Path = "runs") -> optuna.Study:
    """Load an existing study for reading (the report, the bench); a missing or unreadable one is one line."""
    check_study_name(study_name)
    rdb = is_rdb(storage)
    where = redact(storage) if rdb and storage else str(journal_path(study_name, storage, runs_dir))
    if not rdb and not Path(where).is_file():
        raise ConfigError(f"no study journal at {where} (run `mathgpt sweep` first or pass --storage)")
    if rdb and where.startswith("sqlite:///") and not Path(where.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{where}: no such database file")
    store: Any = None
    try:
        store, _ = resolve_storage(study_name, storage, runs_dir)
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"no study named '{study_name}' in {where} (it has: {names})") from None
    except Exception as err:  # noqa: BLE001 - a corrupt journal or an unreachable database: one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"cannot read {where}: {type(err).__name__}: {redact(first)}") from None
