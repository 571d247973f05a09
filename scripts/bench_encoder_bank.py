# SPDX-License-Identifier: GPL-3.0-or-later
"""Speed of the encoders' sample bank (``ide3d train-encoders --bank N``): the reference renderer beside
the fast path (``training.encoders.render_bank(quality=...)``), on the bundled model, one table.

    python scripts/bench_encoder_bank.py [--codes 16] [--threads 1]

Both paths render the same codes (truncation 1) from the same cameras: the canonical editor's bank (one
canonical view a code) and the standard pair's (two random views a code). Wall seconds per code, best of
``--repeats``; the agreement columns compare the two banks' stored inputs (labels, uint8 images).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "ide3d_core/models/default"))
    p.add_argument("--codes", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ide3d_core.networks import load_generator
    from training.encoders import EncoderTrainingPolicy, render_bank

    G = load_generator(args.model).float().eval().requires_grad_(False)
    policy = EncoderTrainingPolicy(truncation_psi=1.0, seed=5)
    print(f"\n### Encoder sample bank, {args.codes} codes, {args.threads} thread(s), best of {args.repeats}\n")
    print("| bank | reference s/code | fast s/code | speed-up | labels equal | image PSNR fast vs reference |")
    print("|---|---|---|---|---|---|")
    for name, views, canonical in (("canonical editor (1 view)", 1, True), ("standard pair (2 views)", 2, False)):
        secs, banks = {}, {}
        for quality in ("reference", "full"):
            best = math.inf
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                banks[quality] = render_bank(G, args.codes, views, 128, canonical, policy, quality=quality)
                best = min(best, time.perf_counter() - t0)
            secs[quality] = best / args.codes
        a, b = banks["full"], banks["reference"]
        same = float((a.masks == b.masks).float().mean())
        mse = float(((a.images.float() - b.images.float()) / 127.5).square().mean())
        db = 10 * math.log10(4.0 / mse) if mse > 0 else math.inf
        print(f"| {name} | {secs['reference']:.2f} | {secs['full']:.2f} | x{secs['reference'] / secs['full']:.2f} | "
              f"{100 * same:.2f} % | {db:.1f} dB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
