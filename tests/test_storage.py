"""Where studies live: journal files, RDB URLs as written (psycopg 3), and one-line errors for readers."""

from __future__ import annotations

import os
import uuid

import optuna
import pytest

from mathgpt.config import ConfigError
from mathgpt.storage import is_rdb, open_study, rdb_url, resolve_storage


def pg_url() -> str:
    url = os.environ.get("MATHGPT_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail('CI must provide MATHGPT_TEST_PG_URL (eval "$(.ci/start_postgres.sh)")')
        pytest.skip("MATHGPT_TEST_PG_URL not set (run .ci/start_postgres.sh)")
    return url


def test_urls_are_used_as_written_except_the_postgres_alias():
    assert rdb_url("postgresql://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert rdb_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert rdb_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert is_rdb("sqlite:///x.db") and not is_rdb("runs/s/journal.log") and not is_rdb(None)


def test_journal_study_round_trips_and_missing_ones_are_one_line(tmp_path):
    store, where = resolve_storage("s", None, tmp_path)
    assert where == str((tmp_path / "s" / "journal.log").resolve())
    study = optuna.create_study(study_name="s", storage=store)
    study.set_user_attr("eval_fingerprint", "abc")
    assert open_study("s", runs_dir=tmp_path).user_attrs["eval_fingerprint"] == "abc"
    with pytest.raises(ConfigError, match=r"no study named 'other' in .*\(it has: s\)"):
        open_study("other", storage=where)
    with pytest.raises(ConfigError, match="no study journal"):
        open_study("nope", runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="no such database file"):
        open_study("s", storage=f"sqlite:///{tmp_path}/missing.db")


def test_a_bare_postgresql_url_works_in_sqlalchemy_and_optuna():
    """The URL the sweep prints opens as written in other tools: SQLAlchemy picks psycopg 3 for it."""
    import sqlalchemy

    url = pg_url()
    assert url.startswith("postgresql://")
    engine = sqlalchemy.create_engine(url)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
    engine.dispose()
    name = f"storage-{uuid.uuid4().hex[:8]}"
    store, where = resolve_storage(name, url)
    assert where == url
    try:
        optuna.create_study(study_name=name, storage=store).set_user_attr("k", 1)
        assert open_study(name, storage=url).user_attrs == {"k": 1}
        assert optuna.load_study(study_name=name, storage=url).user_attrs == {"k": 1}  # as written
    finally:
        optuna.delete_study(study_name=name, storage=url)


def test_an_unreachable_database_is_one_line_exit_1(tmp_path, capsys):
    from mathgpt.cli import main

    sweep = tmp_path / "s.yaml"
    (tmp_path / "base.yaml").write_text("model: {name: /m}\ntracking: {mode: disabled}\n")
    sweep.write_text(
        "study: s\nbase_config: base.yaml\nsampler: {type: grid}\ntimeout_s: 10\n"
        "params: {n: {key: data.train_size, type: categorical, choices: [8]}}\n"
    )
    url = "postgresql://nobody:x@127.0.0.1:9/none?connect_timeout=2"  # port 9 (discard): refused at once
    code = main(["sweep", str(sweep), "--storage", url, "--output-dir", str(tmp_path), "--no-report"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("mathgpt: failed: OperationalError") and err.count("\n") == 1
