#!/usr/bin/env bash
# Sets up the environment and runs the end-to-end demo; pictures land in out/demo/.
# Usage: bash scripts/demo.sh [ide3d demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/ide3d demo "$@"
