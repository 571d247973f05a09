# SPDX-License-Identifier: GPL-3.0-or-later
"""Training speed of the auto-decoder step on the CPU: one table, every variant beside the baseline.

    python scripts/bench_autodecoder.py --bank RUN/bank [--bank-size 64] [--steps 6] [--out table.md]

Variants (each timed over ``--steps`` steps after one warm-up step, median seconds per step, heads/s):

* ``fp32, 1 thread``: the baseline;
* ``bf16 autocast``: the run's setting (AVX-512 BF16 units where the CPU has them);
* ``bf16 + channels_last``: the synthesis network's parameters and activations in NHWC;
* ``bf16 + torch.compile(synthesis)``: inductor on the tri-plane synthesis (compile time reported apart);
* ``bf16, 2 threads``: one process using both cores;
* ``fresh heads (no bank)``: the step's targets made on the fly (bank-building cost of ``batch`` heads
  added to each step), i.e. what caching saves.

The bank is read from an existing run (``ide3d train-autodecoder`` builds it); the first
``--bank-size`` heads are used.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.autodecoder.bank import CHUNK, BankSpec, _head_targets, load_bank  # noqa: E402
from training.autodecoder.loop import AutoDecoderConfig, Trainer  # noqa: E402


def time_steps(tr: Trainer, steps: int) -> list[float]:
    tr.train_step()  # warm-up (allocations, compile)
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        tr.train_step()
        out.append(time.perf_counter() - t)
    return out


def fresh_targets_seconds(spec: BankSpec, heads: int) -> float:
    """Seconds to make ``heads`` heads' targets (what each step would pay without the bank)."""
    from training.procedural import heads_from_latent, median_padded

    z = torch.randn(heads, spec.z_dim, generator=torch.Generator().manual_seed(1))
    t = time.perf_counter()
    hb = heads_from_latent(median_padded(z))
    for i in range(heads):
        _head_targets(hb.index(slice(i, i + 1)), spec, np.random.default_rng(i))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True, help="a run's bank folder")
    ap.add_argument("--bank-size", type=int, default=CHUNK)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    spec = BankSpec(size=args.bank_size)
    bank = load_bank(args.bank, spec)
    base = AutoDecoderConfig(bank=spec, init_from=str(ROOT / "ide3d_core/models/default"))
    rows = []

    def run(name: str, cfg: AutoDecoderConfig, threads: int, prepare=None) -> float:
        torch.set_num_threads(threads)
        tr = Trainer(Path("/nonexistent"), cfg, bank)
        extra = prepare(tr) if prepare else ""
        sec = statistics.median(time_steps(tr, args.steps))
        rows.append((name, sec, extra))
        return sec

    def channels_last(tr: Trainer) -> str:
        tr.G.synthesis.to(memory_format=torch.channels_last)
        return ""

    def compiled(tr: Trainer) -> str:
        t = time.perf_counter()
        try:
            tr.G.synthesis.compile()
            tr.train_step()
        except Exception as exc:  # noqa: BLE001 - a missing compiler is a result, not a crash
            return f"compile failed: {type(exc).__name__}"
        return f"compile + first step {time.perf_counter() - t:.0f} s"

    run("fp32, 1 thread", dataclasses.replace(base, bf16=False), 1)
    run("bf16 autocast, 1 thread", base, 1)
    run("bf16 + channels_last, 1 thread", base, 1, channels_last)
    run("bf16 + torch.compile(synthesis), 1 thread", base, 1, compiled)
    run("bf16, 2 threads", base, 2)
    torch.set_num_threads(1)
    fresh = fresh_targets_seconds(spec, base.batch)
    bf16 = rows[1][1]
    rows.append(("bf16, fresh heads each step (no bank)", bf16 + fresh, f"+{fresh:.2f} s of targets"))
    ref = rows[0][1]
    lines = ["| variant | s/step | heads/s | vs fp32 | note |", "|---|---|---|---|---|"]
    for name, sec, note in rows:
        lines.append(f"| {name} | {sec:.2f} | {base.batch / sec:.2f} | {ref / sec:.2f}x | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
