#!/usr/bin/env bash
# Create .venv and install skuforge with its dev tools. Safe to re-run.
# torch is not needed by the core pipeline; when a later extra asks for it, the pin
# torch>=2.4,<2.14 lets pip take the local CPU wheel instead of a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# System packages: headless OpenGL (moderngl on EGL) and ffprobe (video checks); installed as root.
DEB_PACKAGES="libegl1 libgl1-mesa-dri ffmpeg"
missing=""
for pkg in $DEB_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: missing Debian packages:$missing (3D rendering will be unavailable)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
