# SPDX-License-Identifier: GPL-3.0-or-later
"""One GPU sitting of the auto-decoder recipe (issue 14): a bigger bank, big batches, an exported model.

A device lease is one call of at most 10 minutes on a bare machine (16 CPU cores, one GPU), with the
working tree going in and at most 8 files coming back from ``$OUT``. The CPU recipe
(:mod:`training.autodecoder.loop`) needs hours per epoch of a 512-head bank; on the GPU the same steps
take big batches. So this script, in one call:

1. builds a bank of ``--bank-size`` heads on the machine's CPU cores (``build_bank_parallel``; the bank
   is 0.45 MB a head and never travels);
2. starts from ``--init-from`` (the bundled model: its field, super-resolution and standard encoder, which
   gives every head its first code), trains ``--batch`` heads a step on ``--device``, constant learning
   rate, then a cosine decay over the last ``--decay-fraction`` of the steps that the measured speed
   allows before ``--minutes`` (counted from the script's start, bank included);
3. writes the run's newest checkpoint and exports it (code prior fitted to the learned codes,
   float16 weights) as ``OUT/model/`` (config.json, generator.safetensors, fit_examples.safetensors,
   prior_fit.json), plus ``OUT/log.jsonl`` and ``OUT/summary.json``: 6 files, about 12 MB.

After it, on the CPU: ``ide3d train-background`` (the exported model has no environment background),
``ide3d train-encoders``, the mesh level and issue 14's evaluation, then ship only if clearly better
(docs/training.md, "A GPU sitting of the auto-decoder").

Rehearse on the CPU (the same code path at toy size; about 3 minutes on 2 cores)::

    python scripts/gpu_autodecoder.py --device cpu --bank-size 128 --batch 4 --sr-heads 2 --minutes 3 \\
        --workers 2 --out /tmp/rehearsal --work /tmp/rehearsal-run

On the device (one ``run`` call, ``timeout_s`` 600)::

    PYTHONUNBUFFERED=1 python3 scripts/gpu_autodecoder.py --out $OUT --minutes 8.5
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training.autodecoder.bank import BankSpec, build_bank_parallel, load_bank  # noqa: E402
from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, Trainer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder that comes back ($OUT on the device)")
    p.add_argument("--work", type=Path, default=Path("/tmp/ide3d-gpu-run"), help="run folder (bank, checkpoints)")
    p.add_argument("--init-from", default=str(ROOT / "ide3d_core/models/default"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--bank-size", type=int, default=2048)
    p.add_argument("--bank-seed", type=int, default=20261204, help="not the bundled model's bank (20261202)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sr-heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=8.5, help="whole sitting, bank and export included")
    p.add_argument("--export-minutes", type=float, default=0.75, help="kept back for checkpoint and export")
    p.add_argument("--decay-fraction", type=float, default=0.4)
    p.add_argument("--workers", type=int, default=0, help="bank processes (0: CPU cores - 1)")
    p.add_argument("--log-steps", type=int, default=25)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + 60 * (args.minutes - args.export_minutes)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.jsonl"
    summary: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}
    device = torch.device(args.device)
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    # 1. the bank, on the CPU cores
    workers = args.workers or max(1, (os.cpu_count() or 2) - 1)
    spec = BankSpec(size=args.bank_size, seed=args.bank_seed)
    t0 = time.monotonic()
    build_bank_parallel(args.work / "bank", spec, workers)
    bank = load_bank(args.work / "bank", spec)
    summary["bank_seconds"] = round(time.monotonic() - t0, 1)
    print(f"bank: {args.bank_size} heads in {summary['bank_seconds']} s ({workers} processes)", flush=True)

    # 2. the run
    cfg = AutoDecoderConfig(bank=spec, init_from=args.init_from, init_codes="encoder", batch=args.batch,
                            ray_heads=args.batch, sr_interval=1, sr_heads=args.sr_heads, lr=args.lr,
                            checkpoint_minutes=1e9, log_steps=args.log_steps)
    t0 = time.monotonic()
    trainer = Trainer(args.work, cfg, bank, device=device)
    summary["setup_seconds"] = round(time.monotonic() - t0, 1)
    del bank  # the trainer holds its own copy on the device

    def run_steps(n: int | None, until: float) -> int:
        """Train up to ``n`` steps (None: no limit) before ``until``; the number taken."""
        acc, k = {}, 0
        while (n is None or k < n) and time.monotonic() < until and not stop["now"]:
            logs = trainer.train_step()
            for key, v in logs.items():
                acc[key] = acc.get(key, 0.0) + v
            k += 1
            if trainer.step % args.log_steps == 0:
                row = {"step": trainer.step, "minutes": round((time.monotonic() - t_start) / 60, 2),
                       "lr_factor": logs.get("lr_factor"), **{k_: round(v / args.log_steps, 5) for k_, v in acc.items()}}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
                acc = {}
        return k

    # warm-up (first steps are slow: allocator, cudnn autotune), then the speed that sets the schedule
    run_steps(5, deadline)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.monotonic()
    timed = run_steps(10, deadline)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = (time.monotonic() - t0) / timed if timed else math.inf
    remaining = max(0, int((deadline - time.monotonic()) / sec)) if timed else 0
    total = trainer.step + remaining
    decay_steps = max(1, int(args.decay_fraction * remaining))
    trainer.cfg = dataclasses.replace(cfg, decay_start=total - decay_steps, decay_steps=decay_steps)
    summary.update(bf16=trainer.bf16, seconds_per_step=round(sec, 4), heads_per_second=round(args.batch / sec, 1),
                   planned_steps=total, decay_start=total - decay_steps)
    print(f"{sec:.3f} s a step ({args.batch / sec:.1f} heads/s): {remaining} more steps, decay from "
          f"{total - decay_steps}", flush=True)
    (args.work / CONFIG_FILE).write_text(json.dumps(trainer.cfg.to_dict(), indent=2) + "\n")
    run_steps(None, deadline)
    summary["steps"] = trainer.step
    summary["epochs"] = round(trainer.step * args.batch / args.bank_size, 2)
    summary["train_minutes"] = round((time.monotonic() - t_start) / 60, 2)
    if device.type == "cuda":
        summary["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    # 3. checkpoint and export (on the CPU: the prior fit is numpy)
    trainer.save()
    from training.autodecoder.prior import export_run

    model = args.out / "model"
    if model.exists():
        shutil.rmtree(model)
    export_run(args.work, model)
    summary["total_minutes"] = round((time.monotonic() - t_start) / 60, 2)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if timed else 1  # no timed step: the sitting was too short to say anything


if __name__ == "__main__":
    raise SystemExit(main())
