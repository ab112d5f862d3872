#!/usr/bin/env bash
# Quick start, step 2: install (if needed) and run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh --test
exec .venv/bin/python -m pytest "$@"
