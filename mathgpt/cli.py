"""The `mathgpt` command: the one edge where arguments are parsed and errors become one-line messages.

Each subcommand parses its arguments here and calls plain functions of the stage it belongs to. Expected
failures (a bad config, a missing file, a bad dataset name) raise ``ConfigError`` / ``DataError`` /
``FileNotFoundError`` and are printed as one line with exit code 2; nothing is written in that case. Any
other exception is one line with exit code 1 (``MATHGPT_TRACEBACK=1`` lets the traceback through).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from mathgpt.config import load_config
    from mathgpt.run import dry_run, run_experiment

    cfg = load_config(args.config)
    out = Path(args.output_dir or Path("runs") / cfg.name)
    if args.dry_run:
        print(dry_run(cfg, probe=not args.no_probe, runs_dir=out))
        return 0
    run_experiment(cfg, out)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from mathgpt.checker import CHECKER_VERSION, grade

    verdict = grade(args.gold, args.response, args.dataset, mode=args.mode)
    print("true" if verdict.correct else "false")
    print(f"extracted: {verdict.extracted}")
    print(f"status: {verdict.status} ({verdict.reason}; checker {CHECKER_VERSION})")
    return 0


def _cmd_regrade(args: argparse.Namespace) -> int:
    from mathgpt.regrade import regrade

    for line in regrade(Path(args.dir), args.storage):
        print(line)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from mathgpt import data

    if args.data_cmd == "show":
        print(data.show(args.name, data_dir=args.data_dir, n_examples=args.n))
    else:
        from mathgpt import contamination

        print(contamination.check_report(args.train, args.eval, data_dir=args.data_dir, n=args.ngram))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_sweep(args: argparse.Namespace) -> int:
    from mathgpt.sweep import dry_run_sweep, run_sweep

    if args.dry_run:
        for line in dry_run_sweep(
            args.sweep, n_trials=args.n_trials, output_dir=args.output_dir, probe=not args.no_probe
        ):
            print(line, flush=True)
        return 0

    run_sweep(
        args.sweep,
        storage=args.storage,
        n_trials=args.n_trials,
        study_name=args.study,
        output_dir=args.output_dir,
        report=not args.no_report,
        workers=args.workers,
        worker=args.worker,
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mathgpt.report import write_report
    from mathgpt.storage import open_study

    study = open_study(args.study, args.storage, args.runs_dir)
    out = write_report(study, args.out, storage_url=args.storage)
    print(f"report written to {out}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from mathgpt.dashboard import serve

    return serve(args.study, storage=args.storage, runs_dir=args.runs_dir, port=args.port)


def _cmd_merge(args: argparse.Namespace) -> int:
    from mathgpt.merge import merge_adapters

    out = merge_adapters(
        args.base, args.adapters, args.weights, args.method, args.out, density=args.density, seed=args.seed
    )
    print(f"merged adapter written to {out} (evaluate it with model.adapter: {out} and train.epochs: 0)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathgpt", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="fine-tune once and evaluate base vs fine-tuned")
    r.add_argument("config")
    r.add_argument("--output-dir")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="trainable params, a memory estimate (meta device) and a wall time from a short timed probe",
    )
    r.add_argument("--no-probe", action="store_true", help="with --dry-run: no model load, no wall time")
    r.set_defaults(fn=_cmd_run)

    c = sub.add_parser("check", help="grade one response against a gold answer")
    c.add_argument("gold")
    c.add_argument("response")
    # checked by the checker itself (checker.DATASETS: one list; importing it here would load sympy at start-up)
    c.add_argument("--dataset", default="gsm8k", help="answer conventions: gsm8k or math")
    c.add_argument("--mode", choices=["flexible", "strict"], default="flexible")
    c.set_defaults(fn=_cmd_check)

    rg = sub.add_parser("regrade", help="re-score a run's (or a study's runs') predictions with this checker")
    rg.add_argument(
        "dir", help="a run directory or a study directory (DIR/<study>: its runs and stored points)"
    )
    rg.add_argument("--storage", default=None, help="the study's RDB URL (default: DIR/<study>/journal.log)")
    rg.set_defaults(fn=_cmd_regrade)

    d = sub.add_parser("data", help="inspect datasets and check train/eval overlap")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    ds = dsub.add_parser("show", help="row count, fields and a few examples")
    ds.add_argument("name")
    ds.add_argument("-n", type=int, default=3)
    ds.add_argument("--data-dir", default=None)
    dc = dsub.add_parser("check", help="n-gram overlap between training pools and evaluation sets")
    dc.add_argument("--train", nargs="+", default=["gsm8k:train", "synthetic:train"])
    dc.add_argument("--eval", nargs="+", default=["gsm8k:test", "math500", "svamp", "synthetic:test"])
    dc.add_argument("--ngram", type=int, default=13)
    dc.add_argument("--data-dir", default=None)
    d.set_defaults(fn=_cmd_data)

    s = sub.add_parser(
        "sweep", help="Optuna study over data size, seeds, models, LoRA rank and learning rate"
    )
    s.add_argument("sweep")
    s.add_argument("--storage", default=None, help="an RDB URL; default: a journal file in DIR/<study>/")
    s.add_argument("--n-trials", type=int, default=None)
    s.add_argument("--study", default=None)
    s.add_argument("--output-dir", default="runs")
    s.add_argument("--no-report", action="store_true")
    s.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="local worker processes on the same storage, the CPU cores split between them",
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="the runs it would start and their wall time (probed), nothing run",
    )
    s.add_argument("--no-probe", action="store_true", help="with --dry-run: list the runs, no wall time")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers' processes
    s.set_defaults(fn=_cmd_sweep)

    m = sub.add_parser("merge", help="combine LoRA adapters of one base model (peft add_weighted_adapter)")
    m.add_argument("--base", required=True, help="the base model name the adapters were trained on")
    m.add_argument("--adapters", nargs="+", required=True)
    m.add_argument("--weights", nargs="+", type=float, required=True)
    m.add_argument(
        "--method", choices=["linear", "cat", "ties", "dare_linear", "dare_ties"], default="linear"
    )
    m.add_argument("--density", type=float, default=None, help="kept share per factor (ties, dare_*)")
    m.add_argument("--seed", type=int, default=0, help="DARE's random drop")
    m.add_argument("--out", required=True)
    m.set_defaults(fn=_cmd_merge)

    rp = sub.add_parser("report", help="scaling-curve report of a study")
    rp.add_argument("study")
    rp.add_argument("--storage", default=None)
    rp.add_argument("--runs-dir", default="runs")
    rp.add_argument("--out", default=None, help="default: analysis/<study>/")
    rp.set_defaults(fn=_cmd_report)

    db = sub.add_parser(
        "dashboard", help="browse a study locally (optuna-dashboard on 127.0.0.1, no account)"
    )
    db.add_argument("study")
    db.add_argument(
        "--storage", default=None, help="an RDB URL or journal file; default: DIR/<study>/journal.log"
    )
    db.add_argument("--runs-dir", default="runs")
    db.add_argument("--port", type=int, default=8080)
    db.set_defaults(fn=_cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> int:
    from mathgpt.config import ConfigError
    from mathgpt.data import DataError
    from mathgpt.redact import redact

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.fn(args)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"mathgpt: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mathgpt data show X | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mathgpt: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - docs/CONTRACTS.md: any other failure is one line, exit 1
        if os.environ.get("MATHGPT_TRACEBACK"):
            raise
        first = redact(str(err).splitlines()[0]) if str(err).strip() else ""
        print(
            f"mathgpt: failed: {type(err).__name__}: {first} (MATHGPT_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
