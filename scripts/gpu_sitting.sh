#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One training sitting on a lent GPU machine, inside one device `run` call (10-minute limit).
#
#   bash scripts/gpu_sitting.sh [--minutes 7] [--bench] [--config default] [--carry .transfer]
#                               [--out "$OUT"] [--device cuda|cpu] [--steps N] [--no-grid] [--dry-run]
#
# 1. installs carried wheels from .whl/ if any (the GPU image already has torch, safetensors, tqdm,
#    pillow, numpy, tensorboard: nothing else is needed);
# 2. resumes from the transfer checkpoint in --carry (a folder the `run` call carries) or starts a new
#    --config run when there is none;
# 3. with --bench, first prints `scripts/bench_training.py` images/s for `default` (at most 150 s);
# 4. trains for --minutes of wall time (SIGTERM fallback 150 s later), then writes to --out:
#    transfer/ (manifest + at most 4 shards for `default`, ~47 MiB), samples.png (EMA grid),
#    log_tail.txt (command output, bench table, last scalars). At most 7 files: the device returns 8.
# --steps N stops at step N instead (tests); --dry-run prints the commands only. See docs/training.md.
set -euo pipefail
MINUTES=7; BENCH=0; CONFIG=default; CARRY=.transfer; DEST=${OUT:-/tmp/ide3d_sitting_out}
DEVICE=cuda; STEPS=""; GRID=1; DRY=0; PY=${PYTHON:-python3}
RUN=${SITTING_RUN:-/tmp/ide3d_sitting_run}
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2;;
    --bench) BENCH=1; shift;;
    --config) CONFIG=$2; shift 2;;
    --carry) CARRY=$2; shift 2;;
    --out) DEST=$2; shift 2;;
    --device) DEVICE=$2; shift 2;;
    --steps) STEPS=$2; shift 2;;
    --no-grid) GRID=0; shift;;
    --dry-run) DRY=1; shift;;
    *) echo "gpu_sitting: unknown option $1" >&2; exit 2;;
  esac
done
cd "$(dirname "$0")/.."
# Training minutes + bench + start/save margins must stay well inside the 10-minute command limit.
if ! awk -v m="$MINUTES" -v b="$BENCH" 'BEGIN { exit !(m > 0 && m + 2.5 * b <= 7.5) }'; then
  echo "gpu_sitting: --minutes $MINUTES (+2.5 with --bench) must be in (0, 7.5]" >&2; exit 2
fi
LIMIT=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 + 150 }')
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -f "$CARRY/transfer.json" ]; then START=(--resume-from "$CARRY"); else START=(--config "$CONFIG"); fi
TRAIN=("$PY" -m training.commands.train --data procedural --out "$RUN" "${START[@]}" --device "$DEVICE"
       --minutes "$MINUTES" --quiet --transfer-out "$DEST/transfer")
[ -n "$STEPS" ] && TRAIN+=(--stop-at-step "$STEPS")
if [ "$DRY" = 1 ]; then
  [ "$BENCH" = 1 ] && echo "timeout 150 $PY scripts/bench_training.py --cuda-only --configs default --steps 16"
  echo "timeout -k 30 $LIMIT ${TRAIN[*]}"
  [ "$GRID" = 1 ] && echo "$PY -m training.transfer grid $RUN/generator $DEST/samples.png --device $DEVICE"
  exit 0
fi
mkdir -p "$DEST"
LOG="$RUN.log"; : > "$LOG"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{ date -u; command -v nvidia-smi > /dev/null && nvidia-smi -L; } >> "$LOG" 2>&1 || true
if [ "$BENCH" = 1 ]; then
  timeout -k 10 150 "$PY" scripts/bench_training.py --cuda-only --configs default --steps 16 >> "$LOG" 2>&1 \
    || echo "[sitting] bench stopped (exit $?)" >> "$LOG"
fi
rc=0
timeout -k 30 "$LIMIT" "${TRAIN[@]}" >> "$LOG" 2>&1 || rc=$?
if [ "$GRID" = 1 ] && [ -d "$RUN/generator" ]; then
  "$PY" -m training.transfer grid "$RUN/generator" "$DEST/samples.png" --device "$DEVICE" >> "$LOG" 2>&1 || true
fi
{ tail -n 80 "$LOG"; echo "--- last scalars (log.jsonl)"; tail -n 5 "$RUN/log.jsonl" 2>/dev/null || true; } \
  > "$DEST/log_tail.txt"
cat "$DEST/log_tail.txt"
exit "$rc"
