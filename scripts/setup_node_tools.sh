#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the Node tools the tests use (the Khronos glTF validator, npm package `gltf-validator`)
# into .venv/node (git-ignored). Idempotent; skips quietly when npm is missing.
# Usage: bash scripts/setup_node_tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=.venv/node
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "setup_node_tools: node/npm not found; glTF validator tests will be skipped"
    exit 0
fi
if [ -f "$PREFIX/node_modules/gltf-validator/package.json" ]; then
    exit 0
fi
mkdir -p "$PREFIX"
if ! npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error gltf-validator >/dev/null; then
    echo "setup_node_tools: could not install gltf-validator; glTF validator tests will be skipped"
    exit 0
fi
echo "setup_node_tools: gltf-validator installed in $PREFIX"
