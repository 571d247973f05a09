#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv; idempotent.
#   bash scripts/setup_env.sh [EXTRAS]      e.g. EXTRAS=blender,test
# torch: the pinned CPU build is installed only when the environment has no torch yet, so a
# user who installed a CUDA build into .venv keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${IDE3D_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.13.0 (CPU build where the local wheel exists)"
    "$VPY" -m pip install -q "torch==2.13.0"
fi
SPEC=".[photo]"
[ -n "$EXTRAS" ] && SPEC=".[photo,$EXTRAS]"
STAMP=".venv/.ide3d-stamp-$(echo "$EXTRAS" | tr ',' '_')"
HASH=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
    echo "[setup] installing the project ($SPEC)"
    "$VPY" -m pip install -q -e "$SPEC"
    echo "$HASH" > "$STAMP"
fi
# MediaPipe 0.10.21 (the last wheels that bundle their face models): without its declared deps (see the
# 'photo' extra in pyproject.toml); photo import falls back to OpenCV when it is missing.
if ! "$VPY" -c "import mediapipe" >/dev/null 2>&1; then
    echo "[setup] installing mediapipe==0.10.21 (--no-deps)"
    "$VPY" -m pip install -q --no-deps "mediapipe==0.10.21; python_version < '3.13'" \
        || echo "[setup] mediapipe unavailable: photo import uses OpenCV only"
fi
