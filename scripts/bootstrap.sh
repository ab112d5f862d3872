#!/usr/bin/env bash
# Create .venv and install skuforge with its dev tools. Safe to re-run.
# torch is not needed by the core pipeline; when a later extra asks for it, the pin
# torch>=2.4,<2.14 lets pip take the local CPU wheel instead of a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
