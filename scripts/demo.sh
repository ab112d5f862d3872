#!/usr/bin/env bash
# Quick start, step 1: install, then run the whole pipeline in-process on the example
# capture (no Redis, no GPU). Outputs land in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/skuforge run examples/capture.jpg --sku examples/sku.yaml --brand examples/brand.yaml \
  --out "${1:-out/demo}" --store "${SKUFORGE_STORE__ROOT:-.skuforge/store}"
