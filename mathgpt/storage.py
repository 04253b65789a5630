"""Where an Optuna study lives: a journal file (default) or an RDB URL, opened the same way by every reader.

The sweep writes studies and the report, the dashboard and the bench read them; all of them go through
``resolve_storage`` / ``open_study`` here, so this module imports nothing from ``mathgpt.sweep``.

A ``postgresql://`` URL is used exactly as written: SQLAlchemy 2.1 maps a bare ``postgresql://`` to the
psycopg 3 driver, which the project ships (``psycopg[binary]``), so the same URL works in optuna-dashboard,
plain SQLAlchemy or psql. Only the ``postgres://`` alias (Heroku style, which SQLAlchemy rejects) is
spelled out as ``postgresql://``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from mathgpt.config import ConfigError


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


def resolve_storage(
    study_name: str, storage: str | None, runs_dir: str | Path = "runs"
) -> tuple[optuna.storages.BaseStorage, str]:
    """An Optuna storage and the string that names it (the RDB URL, or the journal file's path).

    Callers keep the returned storage object and use its public methods (``get_study_id_from_name``,
    ``set_trial_user_attr``, ...) instead of reaching into ``study._storage``.
    """
    if is_rdb(storage):
        assert storage is not None
        return optuna.storages.RDBStorage(rdb_url(storage)), storage
    path = journal_path(study_name, storage, runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), str(path)


def open_study(study_name: str, storage: str | None = None, runs_dir: str | Path = "runs") -> optuna.Study:
    """Load an existing study for reading (the report, the bench); a missing or unreadable one is one line."""
    rdb = is_rdb(storage)
    where = storage if rdb else str(journal_path(study_name, storage, runs_dir))
    assert where is not None
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
        raise ConfigError(f"cannot read {where}: {type(err).__name__}: {first}") from None
