"""The study's report: load (study -> per-problem matrix), analysis (statistics), figures, render (jinja2).

`write_report(study, out_dir)` is the entry point; it takes an Optuna study object and never imports the sweep.
It is imported on first use, so `mathgpt.report.load` (the pure reader) loads no matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from mathgpt.report.render import write_report

        return write_report
    raise AttributeError(f"module 'mathgpt.report' has no attribute {name!r}")
