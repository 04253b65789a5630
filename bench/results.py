"""One results file for every benchmark: each script replaces its own section of bench/RESULTS.md.

A section lives between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; rerunning a benchmark replaces
only its section, so results measured on different days (and cards) sit side by side with their commands.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names; rerun the script to refresh it. Ratios are measured side\n"
    "by side in one run, since these machines are noisy.\n"
)


def write_section(name: str, text: str, path: Path = RESULTS) -> Path:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    doc = path.read_text() if path.is_file() else HEADER
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
    return path
