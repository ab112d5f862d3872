#!/usr/bin/env bash
# The dependency locks, for CPython 3.11 on linux x86_64, every file pinned by sha256:
#
#   requirements/lock.txt      skuforge[dev,gpu] and its build backend: the venv, tests and CI.
#                              torch is the CPU wheel 2.13.0+cpu (see find-links below).
#   requirements/lock-api.txt  skuforge alone (no dev, no gpu): the API/CPU-worker image
#                              (Dockerfile), which must not ship torch or diffusers.
#   requirements/lock-gpu.txt  skuforge[gpu] with PyPI's CUDA build of torch: the GPU worker
#                              image (docker/Dockerfile.gpu).
#
# lock-api and lock-gpu start from lock.txt's pins, so the three agree on every shared package
# (only torch and its CUDA companions differ in lock-gpu). scripts/bootstrap.sh installs lock.txt.
#
#   ./scripts/lock.sh                        regenerate after editing pyproject.toml's
#                                            dependency lists (keeps every other pin)
#   ./scripts/lock.sh --upgrade              move every pin to the newest allowed release
#   ./scripts/lock.sh --upgrade-package X    move one pin (other pip-compile flags pass through)
#   ./scripts/lock.sh --check                exit 1 if a lock is stale (CI and bootstrap run it)
#
# Each lock's header records a sha256 of the inputs (build-system.requires, requires-python,
# dependencies and the dev and gpu extras); --check recomputes it from pyproject.toml, so a
# dependency change without new locks fails CI with a message that names this script.
#
# Resolution sees PyPI plus SKUFORGE_LOCK_FIND_LINKS (default /opt/wheels when it exists),
# and nothing from the machine's pip configuration (its local mirror indexes would add hashes
# that exist nowhere else). The find-links folder is what lets a torch>=2.4,<2.14 requirement
# resolve to the CPU wheel 2.13.0+cpu lying there: PEP 440 orders 2.13.0+cpu above PyPI's
# 2.13.0 (a CUDA build), and pip-compile hashes the local file, which bootstrap then finds
# through the same folder. lock-gpu.txt is resolved without it, so it gets PyPI's CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements/lock.txt
API_LOCK=requirements/lock-api.txt
GPU_LOCK=requirements/lock-gpu.txt
PIP_LOCK=requirements/pip.txt  # pip itself, which bootstrap upgrades to before the rest
PIP_VERSION=26.3
PYTHON="${PYTHON:-python3}"

# The digest of pyproject.toml's dependency lists. Requirements are compared without
# whitespace and in sorted order: reformatting or reordering them changes no resolution.
inputs_digest() {
  "$PYTHON" - pyproject.toml <<'EOF'
import hashlib
import json
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
project = data["project"]


def norm(reqs: list[str]) -> list[str]:
    return sorted("".join(r.split()) for r in reqs)


inputs = {
    "build-system.requires": norm(data["build-system"]["requires"]),
    "requires-python": "".join(project["requires-python"].split()),
    "dependencies": norm(project["dependencies"]),
    "optional-dependencies.dev": norm(project["optional-dependencies"]["dev"]),
    "optional-dependencies.gpu": norm(project["optional-dependencies"]["gpu"]),
}
print(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
EOF
}

recorded_digest() {
  sed -n 's/^# inputs-sha256: \([0-9a-f]\{64\}\)$/\1/p' "$1" 2>/dev/null | head -n1
}

if [ "${1:-}" = "--check" ]; then
  want="$(inputs_digest)"
  for lock in "$LOCK" "$API_LOCK" "$GPU_LOCK"; do
    if [ ! -f "$lock" ]; then
      echo "error: $lock is missing; generate it with ./scripts/lock.sh and commit it" >&2
      exit 1
    fi
    have="$(recorded_digest "$lock")"
    if [ "$want" != "$have" ]; then
      echo "error: $lock is stale: pyproject.toml's dependency lists changed since it was" \
        "generated (lock records ${have:-no digest}, pyproject.toml gives $want)." \
        "Regenerate it with ./scripts/lock.sh and commit requirements/." >&2
      exit 1
    fi
  done
  exit 0
fi

# The lock is only valid for the interpreter and platform it was resolved on.
platform="$("$PYTHON" -c 'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]} {sys.platform} {platform.machine()}")')"
if [ "$platform" != "3.11 linux x86_64" ]; then
  echo "error: the lock targets CPython 3.11 on linux x86_64; $PYTHON is $platform" \
    "(set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# pip-compile runs from its own small venv, pinned, so the project's venv never holds it
# and regenerating works even when the project's venv cannot be installed (a stale lock).
TOOLS="${SKUFORGE_LOCK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/skuforge/lock-tools}"
if [ ! -x "$TOOLS/bin/pip-compile" ]; then
  "$PYTHON" -m venv "$TOOLS"
  PIP_CONFIG_FILE=/dev/null "$TOOLS/bin/python" -m pip install --quiet \
    "pip==$PIP_VERSION" "pip-tools==7.6.2"
fi

find_links=()
FIND_LINKS="${SKUFORGE_LOCK_FIND_LINKS-/opt/wheels}"
if [ -n "$FIND_LINKS" ] && [ -d "$FIND_LINKS" ]; then
  find_links=(--find-links "$FIND_LINKS")
fi

mkdir -p "$(dirname "$LOCK")"
body="$(mktemp)"
api_body="$(mktemp)"
gpu_body="$(mktemp)"
pip_body="$(mktemp)"
trap 'rm -f "$body" "$api_body" "$gpu_body" "$pip_body"' EXIT
[ -f "$LOCK" ] && cp "$LOCK" "$body"  # pip-compile keeps the pins it finds in its output file
compile() {
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
    PIP_CONFIG_FILE=/dev/null "$TOOLS/bin/pip-compile" --quiet --no-header --generate-hashes \
    --allow-unsafe --no-emit-index-url --no-emit-find-links "$@"
}
compile --extra dev --extra gpu --all-build-deps --strip-extras "${find_links[@]}" \
  --output-file "$body" "$@" pyproject.toml
# The two image locks start from the dev lock's pins, so the images run what CI tested.
cp "$body" "$api_body"
compile --all-build-deps --strip-extras "${find_links[@]}" --output-file "$api_body" pyproject.toml
# The CPU wheel's pin would hold torch at a version PyPI does not have: drop it, so PyPI's
# build of the newest allowed torch (CUDA, with its nvidia-* libraries) is chosen.
grep -v -e '^torch==' "$body" >"$gpu_body"
compile --extra gpu --all-build-deps --strip-extras --output-file "$gpu_body" pyproject.toml
echo "pip==$PIP_VERSION" | compile --strip-extras --output-file "$pip_body" -
{
  echo "# pip for .venv, installed by scripts/bootstrap.sh before requirements/lock.txt."
  echo "# Generated by ./scripts/lock.sh (PIP_VERSION there); do not edit by hand."
  grep -v '^# The following packages are considered to be unsafe' "$pip_body"
} >"$PIP_LOCK"
digest="$(inputs_digest)"
write_lock() {  # path, description line, body
  {
    echo "# skuforge dependency lock: $2, for CPython 3.11"
    echo "# on linux x86_64, every file pinned by sha256. Generated by ./scripts/lock.sh; do not"
    echo "# edit by hand. Installed with pip --require-hashes --no-deps."
    echo "# inputs-sha256: $digest"
    cat "$3"
  } >"$1"
  echo "wrote $1 ($(grep -c '^[A-Za-z0-9]' "$1") packages)"
}
write_lock "$LOCK" "skuforge[dev,gpu] (torch CPU build) and its build requirements" "$body"
write_lock "$API_LOCK" "skuforge (no dev, no gpu: the API image) and its build requirements" \
  "$api_body"
write_lock "$GPU_LOCK" "skuforge[gpu] (torch CUDA build: the GPU worker image) and its build requirements" \
  "$gpu_body"
echo "wrote $PIP_LOCK"
