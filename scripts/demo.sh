#!/usr/bin/env bash
# Sets up the environment (with real Blender as the bpy module) and runs the end-to-end demo; pictures land in out/demo/.
# Usage: bash scripts/demo.sh [ide3d demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh blender
exec .venv/bin/ide3d demo "$@"
