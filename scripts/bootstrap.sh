#!/usr/bin/env bash
# Create .venv and install skuforge with its dev tools from the lock. Safe to re-run: when
# the venv already holds this lock (a stamp in .venv), it only checks and returns.
#
#   ./scripts/bootstrap.sh          what the demo needs
#   ./scripts/bootstrap.sh --test   also what the tests drive (chromium, node and npm)
#
# Python packages come from requirements/lock.txt (exact versions, sha256 of every file;
# ./scripts/lock.sh regenerates it, and requirements/pip.txt pins pip), installed with
# --require-hashes and --no-deps so pip neither resolves nor downloads anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOCK=requirements/lock.txt
PIP_LOCK=requirements/pip.txt
STAMP=.venv/.skuforge-installed

# System packages, from Debian's archive, installed with apt-get when running as root:
# headless OpenGL for moderngl on EGL (libegl1, libgl1-mesa-dri) and ffprobe for the video
# checks (ffmpeg); with --test, chromium for the browser tests (Playwright drives it) and
# node/npm for the glTF validator.
DEB_PACKAGES="libegl1 libgl1-mesa-dri ffmpeg"
if [ "${1:-}" = "--test" ]; then
  DEB_PACKAGES="$DEB_PACKAGES chromium"
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--test]" >&2
  exit 2
fi
missing=""
for pkg in $DEB_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
# The glTF tests run the Khronos validator with node and npm (tests/gltf_validator.py). Any
# install of them will do (NodeSource's nodejs brings its own npm), so look for the command.
# The review UI's front-end files (htmx) come from npm too, so every install needs npm.
if ! command -v npm >/dev/null; then
  missing="$missing nodejs npm"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: apt-get install$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "warning: missing Debian packages:$missing (install them as root;" \
      "3D rendering, video checks or browser tests will be unavailable)" >&2
  fi
fi

# A lock older than pyproject.toml's dependency lists would install the wrong set.
./scripts/lock.sh --check

# The review UI's third-party front-end files, exactly as service/ui/vendor/package-lock.json
# pins them (versions and integrity hashes); re-installed only when the lock changes.
UI_VENDOR=service/ui/vendor
if command -v npm >/dev/null; then
  if ! cmp -s "$UI_VENDOR/package-lock.json" "$UI_VENDOR/node_modules/.skuforge-lock"; then
    npm ci --prefix "$UI_VENDOR" --no-audit --no-fund --loglevel=error
    cp "$UI_VENDOR/package-lock.json" "$UI_VENDOR/node_modules/.skuforge-lock"
  fi
else
  echo "warning: no npm: the review UI runs without htmx (filters reload the page)" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp="$(cat "$PIP_LOCK" "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1) $(.venv/bin/python -V 2>&1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp" ] && [ -x .venv/bin/skuforge ]; then
  exit 0
fi

# pip also reads this machine's configuration, which may add local wheel folders and index
# mirrors (PIP_FIND_LINKS=/opt/wheels and file:// indexes here). That is intended: with
# --require-hashes pip only accepts a file whose sha256 is in the lock, so a local copy of
# the same file is used and a differing local build is skipped for PyPI's (checked when the
# lock was made: every local file of a locked version had PyPI's hash). The same folder is
# how a locked torch==2.13.0+cpu (no such file on PyPI) will be found.
pip_install() {
  # That configuration also names file:// mirrors holding only some projects, and pip warns
  # once for each project a mirror lacks; only those lines are dropped.
  .venv/bin/python -m pip install --quiet "$@" \
    2> >(grep -v "^WARNING: Location 'file://[^']*' is ignored: it is neither a file nor a directory" >&2)
}
pip_install --require-hashes --no-deps -r "$PIP_LOCK"
pip_install --require-hashes --no-deps -r "$LOCK"
# The project itself, editable, built with the locked setuptools rather than a fresh
# download into an isolated build environment (its warning about same-named folders in
# the working directory is expected here: the packages are those folders).
PYTHONWARNINGS="ignore:Editable installation" pip_install --no-deps --no-build-isolation -e .
echo "$stamp" >"$STAMP"
