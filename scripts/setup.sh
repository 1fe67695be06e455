#!/usr/bin/env bash
# Creates .venv and installs everything crescend-jax needs on a fresh Debian/Ubuntu machine (or any with
# fluidsynth already present). Idempotent; `make setup` runs it when pyproject.toml or this file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# 1. System packages: FluidSynth (pyfluidsynth loads libfluidsynth) and two MIT-licensed GM soundfonts.
DEB_PACKAGES="fluidsynth libfluidsynth3 fluid-soundfont-gm musescore-general-soundfont-small"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $DEB_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q $missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
  fi
elif ! ldconfig -p 2>/dev/null | grep -q libfluidsynth; then
  echo "[setup] warning: libfluidsynth not found and not root: install '$DEB_PACKAGES' with your package manager" >&2
fi

# 2. Python environment.
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
$PIP install --upgrade pip
# CPU torch first: with it installed, the `muq` extra's torch==2.13.0 pin installs nothing more. Without it,
# pip would resolve a CUDA build (several GB).
$PIP install torch==2.13.0
$PIP install -e '.[muq,dev]'
# muq's and x-clip's declared requirements pull torchvision/torchaudio builds that do not import beside the
# CPU torch; their real runtime needs are pinned in the `muq` extra, so install them without dependencies.
$PIP install --no-deps muq==0.1.0 x-clip==0.14.4
echo "[setup] done: $(.venv/bin/python -c 'import jax, flax, torch; print("jax", jax.__version__, "flax", flax.__version__, "torch", torch.__version__)')"
