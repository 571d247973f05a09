# SPDX-License-Identifier: GPL-3.0-or-later
"""Milliseconds per photo for each step of photo import (``ide3d_core.photo.prepare``).

Usage: .venv/bin/python scripts/bench_photo.py [--threads 2] [--repeats 5] [--size 512]

Photos: scikit-image's astronaut (512x512), matplotlib's Grace Hopper (512x600), a 2400x1800 JPEG made from
Grace Hopper (downscaled on load), and a small face in a large canvas (the Haar-fallback path). The first
call of each photo is a warm-up (MediaPipe graph start-up, reported separately); the table shows medians.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np


def _photos() -> dict[str, bytes | np.ndarray]:
    import cv2
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        hopper = np.asarray(im.convert("RGB")).copy()
    big = cv2.resize(hopper, (2400, 2812), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=92)
    canvas = np.full((1200, 1600, 3), 235, np.uint8)
    canvas[700:850, 1100:1228] = cv2.resize(hopper, (128, 150), interpolation=cv2.INTER_AREA)
    return {"astronaut 512x512 array": skimage.data.astronaut(), "hopper 512x600 array": hopper,
            "hopper 2400x2812 JPEG": buf.getvalue(), "small face 1600x1200 (Haar)": canvas}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from ide3d_core.photo import prepare
    from ide3d_core.photo.pipeline import STEPS

    t0 = time.perf_counter()
    prepare(_photos()["hopper 512x600 array"], size=args.size)
    print(f"first call (MediaPipe start-up included): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    header = f"| photo | " + " | ".join(STEPS) + " | total |"
    print(header)
    print("|" + "---|" * (len(STEPS) + 2))
    for name, photo in _photos().items():
        runs = []
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            r = prepare(photo, size=args.size)
            runs.append((r.timings, (time.perf_counter() - t) * 1e3))
        runs = runs[1:]
        cells = [statistics.median(tm.get(s, 0.0) for tm, _ in runs) for s in STEPS]
        total = statistics.median(tot for _, tot in runs)
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {total:.1f} |")
    print(f"(ms, median of {args.repeats}, {args.threads} threads, aligned size {args.size})")


if __name__ == "__main__":
    main()
