"""The study's report: load (study -> per-problem matrix), analysis (statistics), figures, render (jinja2).

`write_report(study, out_dir)` is the entry point; it takes an Optuna study object and never imports the sweep.
"""

from mathgpt.report.render import write_report

__all__ = ["write_report"]
