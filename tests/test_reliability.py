"""Issue 20's defects that are not kills or races (those are tests/test_faults.py): hostile input refused early.

Study names that escape their folders, secrets in storage URLs, the dashboard's Host check, unbounded
generation lengths, YAML alias bombs and the validation gaps. Each test reproduces the defect as the issue
describes it and fails on the code before the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mathgpt.cli import main
from tests.test_sweep_study import fake_runs, write_study  # noqa: F401 - fake_runs is a fixture


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------------------------------- study names


@pytest.mark.usefixtures("fake_runs")
@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "/abs/x", "", "x y", "..", "a\\b"])
def test_a_study_name_is_one_safe_path_component(tmp_path, monkeypatch, capsys, bad):
    """Issue 20 #5: --study, `study:` in the YAML and `mathgpt report NAME` refuse names that leave their folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_study(work)
    runs = work / "runs"
    before = tree(tmp_path)
    assert main(["sweep", str(path), "--output-dir", str(runs), "--study", bad, "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study name" in err and "\n" not in err, err
    (work / "bad.yaml").write_text(path.read_text().replace("study: s", f"study: '{bad}'"))
    assert main(["sweep", str(work / "bad.yaml"), "--output-dir", str(runs), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study" in err and "\n" not in err, err
    assert main(["report", bad, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "study name" in err and "\n" not in err, err
    assert main(["dashboard", bad, "--runs-dir", str(runs), "--port", "0"]) == 2
    capsys.readouterr()
    assert tree(tmp_path) == before | {"work/bad.yaml"}  # nothing written anywhere


# ------------------------------------------------------------------------------------ credentials in URLs

SECRET = "s3cr3t-pw"
PG = f"postgresql://mathgpt:{SECRET}@db.example:5432/studies?sslpassword={SECRET}x"


def test_redact_hides_passwords_and_secret_query_values():
    from mathgpt.redact import redact

    assert redact(PG) == "postgresql://mathgpt:***@db.example:5432/studies?sslpassword=***"
    assert redact("postgres://u:p@ss@h/db") == "postgres://u:***@h/db"  # an unescaped '@' in the password
    assert redact(f"cannot reach {PG} now") == f"cannot reach {redact(PG)} now"
    for kept in ("postgresql://u@h/db", "runs/s/journal.log", "http://127.0.0.1:8080/dashboard/studies/0"):
        assert redact(kept) == kept


@pytest.mark.usefixtures("fake_runs")
def test_a_storage_password_reaches_no_output_and_no_file(tmp_path, monkeypatch, capfd):
    """Issue 20 #3: console line, report.md/html, the study's W&B offline run and its staged artifact, stderr."""
    import sys

    import mathgpt.storage
    import mathgpt.sweep as sw

    db = tmp_path / "db.sqlite"
    # The project sees (and could print) the PostgreSQL URL; SQLAlchemy is handed a local SQLite file.
    monkeypatch.setattr(mathgpt.storage, "rdb_url", lambda url: f"sqlite:///{db}")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, [0], overrides={"tracking.mode": "offline"})
    monkeypatch.setattr(sys, "argv", ["mathgpt", "sweep", str(path), "--storage", PG])
    sw.run_sweep(path, storage=PG, output_dir=tmp_path / "runs", report=True)
    report = tmp_path / "analysis" / "s" / "report.md"
    assert "--storage postgresql://mathgpt:***@db.example" in report.read_text()
    offline = list((tmp_path / "runs" / "s").rglob("*.wandb"))
    assert offline, "the study's W&B offline run was not written"
    assert main(["report", "s", "--storage", PG, "--out", str(tmp_path / "r2")]) == 0
    assert main(["report", "nope", "--storage", PG]) == 2  # a failed report names the storage on stderr
    out, err = capfd.readouterr()
    assert "storage: postgresql://mathgpt:***@db.example" in out and "mathgpt:***@db.example" in err
    assert SECRET not in out + err
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and p != db and SECRET.encode() in p.read_bytes()]
    assert leaks == []


# --------------------------------------------------------------------------------- dashboard Host check


def test_the_dashboard_answers_only_loopback_host_names_on_its_port(tmp_path):
    """Issue 20 #4: a DNS-rebinding page sends Host: attacker.example; it must not read or delete the study."""
    import http.client

    from mathgpt.dashboard import make_dashboard, start_in_thread
    from mathgpt.storage import open_study
    from tests.test_dashboard import make_study

    make_study(tmp_path)
    server, _ = make_dashboard("demo", runs_dir=tmp_path, port=0)
    start_in_thread(server)
    port = server.server_port

    def status(method: str, path: str, host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        code = conn.getresponse().status
        conn.close()
        return code

    try:
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}",
                     f"localhost.attacker.example:{port}", f"127.0.0.1.nip.io:{port}", ""):  # fmt: skip
            assert status("GET", "/api/studies", host) in (403, 421), host
        assert status("DELETE", "/api/studies/0", f"attacker.example:{port}") in (403, 421)
        assert open_study("demo", runs_dir=tmp_path).trials  # still there
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert status("GET", "/api/studies", host) == 200, host
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------- YAML alias bomb


def alias_bomb(levels: int = 9) -> str:
    """~300 bytes that expand to 9**9 (387 million) strings: each level lists the previous one 9 times."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for i in range(1, levels):
        p, c = "abcdefghij"[i - 1], "abcdefghij"[i]
        lines.append(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]")
    return "\n".join(lines) + f"\nname: *{'abcdefghij'[levels - 1]}\n"


def test_a_yaml_alias_bomb_is_one_short_line_in_bounded_time_and_memory(tmp_path):
    """Issue 20 #12: a 316-byte bomb gave a 312 MB "one-line" error and 1.7 GB of memory."""
    import subprocess
    import sys

    bomb = alias_bomb()
    assert len(bomb.encode()) < 320
    (tmp_path / "run.yaml").write_text(bomb)
    (tmp_path / "sweep.yaml").write_text(bomb.replace("name:", "study:"))
    # One child for both readers, with 1.5 GiB of address space at most and 60 s: the old code needed more.
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
        "from mathgpt.config import ConfigError, load_config; from mathgpt.sweep.spec import load_sweep\n"
        "for load, path in ((load_config, sys.argv[1]), (load_sweep, sys.argv[2])):\n"
        "    try:\n        load(path)\n    except ConfigError as err:\n        print(err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run.yaml"), str(tmp_path / "sweep.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(len(ln) < 300 and "YAML aliases" in ln for ln in lines), proc.stdout[:600]


def test_error_messages_quote_a_short_prefix_of_a_long_value(tmp_path):
    from mathgpt.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"name": ["x" * 10_000] * 1000})
    assert len(str(err.value)) < 200 and "..." in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"seed": "9" * 100_000})
    assert len(str(err.value)) < 200


# ------------------------------------------------------------------------------------- validation gaps


def test_every_choice_of_a_categorical_param_is_validated(tmp_path):
    """Issue 20 #13: a later choice (-3) failed only at run time, and the sweep exited 0."""
    from mathgpt.config import ConfigError
    from mathgpt.sweep.spec import load_sweep

    bs = {"bs": {"key": "train.batch_size", "type": "categorical", "choices": [1, 2, -3]}}
    with pytest.raises(ConfigError, match=r"param 'bs'.*train.batch_size.*-3"):
        load_sweep(write_study(tmp_path, params=bs))
    lr = {"lr": {"key": "train.learning_rate", "type": "float", "low": 1e-4, "high": 2.0}}
    with pytest.raises(ConfigError, match=r"param 'lr'.*learning_rate"):  # the high end too, not only low
        load_sweep(write_study(tmp_path, params=lr, sampler={"type": "random"}, n_trials=2))


@pytest.mark.usefixtures("fake_runs")
def test_a_sweep_on_an_unknown_dataset_writes_nothing(tmp_path, capsys):
    """Issue 20 #13: journal.log and base/ were written before the base run refused the name."""
    runs = tmp_path / "runs"
    for overrides in ({"data.eval": ["gsm8k:tset"]}, {"data.train": "nope"}):
        path = write_study(tmp_path, [0], overrides=overrides)
        assert main(["sweep", str(path), "--output-dir", str(runs), "--no-report"]) == 2
        err = capsys.readouterr().err.strip()
        assert "unknown dataset" in err and "\n" not in err, err
        assert not runs.exists()
    data = {"d": {"key": "data.train", "type": "categorical", "choices": ["synthetic:train", "gsm8k:trian"]}}
    assert main(["sweep", str(write_study(tmp_path, [0], params=data)), "--output-dir", str(runs)]) == 2
    assert "unknown dataset 'gsm8k:trian'" in capsys.readouterr().err
    assert not runs.exists()


def test_eval_size_larger_than_the_set_is_refused_not_clamped():
    """Issue 20 #13: 5000 problems asked of synthetic:test (1000) silently gave 1000."""
    from mathgpt.config import parse_config
    from mathgpt.data import DataError
    from mathgpt.run import eval_slices

    with pytest.raises(
        DataError, match=r"synthetic:test: data.eval_size 5000 is more than its 1000 problems"
    ):
        eval_slices(parse_config({"data": {"eval": ["synthetic:test"], "eval_size": 5000}}))
    with pytest.raises(DataError, match=r"data.select_size 900 is more than the 200 problems"):
        eval_slices(
            parse_config({"data": {"eval": ["synthetic:test"], "eval_size": 800, "select_size": 900}})
        )
    report, _ = eval_slices(parse_config({"data": {"eval": ["synthetic:test"], "eval_size": 1000}}))
    assert len(report[0].examples) == 1000  # all of it is fine


@pytest.mark.parametrize("key", ["train.epochs", "train.batch_size", "data.train_size", "seed", "lora.r"])
def test_a_boolean_is_not_a_count(key):
    """Issue 20 #13: `train.epochs: true` ran as 1 epoch."""
    from mathgpt.config import ConfigError, parse_config, set_dotted

    with pytest.raises(ConfigError, match="valid integer"):
        parse_config(set_dotted({}, key, True))


# ----------------------------------------------------------------------------- generation length bound


def test_max_new_tokens_is_bounded_by_context_and_cache_memory(tiny_model_dir, write_config, tmp_path,
                                                               monkeypatch, capsys):  # fmt: skip
    """Issue 20 #8: 100,000 new tokens on SmolLM2 preallocated ~34 GiB of slot cache and was OOM-killed."""
    import mathgpt.run
    from tests.conftest import tiny_run_config

    out = tmp_path / "out"
    long = write_config(tiny_run_config(tiny_model_dir, eval={"max_new_tokens": 5000}), "long.yaml")
    assert main(["run", str(long), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "eval.max_new_tokens 5000" in err and "context of 1024" in err, err
    assert not out.exists()  # refused before anything was written
    # Within the context, but the slot cache (8 rows x the prompt and 900 tokens: 0.9 MiB in bf16 decoding,
    # 1.8 MiB in fp32, whichever eval.dtype auto picks on this CPU) cannot fit in 256 KiB.
    monkeypatch.setattr(mathgpt.run, "available_memory_bytes", lambda device: 1 << 18)
    fits = write_config(tiny_run_config(tiny_model_dir, eval={"max_new_tokens": 900}), "fits.yaml")
    assert main(["run", str(fits), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "slot cache" in err and "GiB" in err and "eval.batch_size" in err, err
    assert not out.exists()
