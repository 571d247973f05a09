# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: inversion time per portrait and mask-edit latency (mask in -> new frame out).

    .venv/bin/python scripts/bench_inversion.py [--config default] [--device cpu] [--threads 2]
        [--steps 5] [--tune-steps 5] [--edits 5]

Times ``--steps`` optimisation and ``--tune-steps`` tuning steps, reports seconds per step and the time
the default policy (InversionPolicy(): 200 + 100 steps) would take at that rate. Mask-edit latency:
a palette-coloured painted mask (PNG bytes in memory) -> decode -> canonical editor -> tri-planes ->
render of the full-resolution frame, for the "direct" mode and for the "residual" mode (which also
renders the current canonical label map; a live session caches it, so "residual, cached" re-uses
it). Weights are untrained (the timing does not depend on them). CUDA timings synchronise the device.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ide3d_core import editing  # noqa: E402
from ide3d_core.cameras import canonical_camera, orbit_camera  # noqa: E402
from ide3d_core.encoders import HybridEncoder, config_for_generator  # noqa: E402
from ide3d_core.inversion import InversionPolicy, invert  # noqa: E402
from ide3d_core.labels import colorize, decode_mask  # noqa: E402
from ide3d_core.networks import CONFIGS, Generator  # noqa: E402
from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_fingerprint  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    out, times = None, []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", choices=sorted(CONFIGS))
    p.add_argument("--encoder-preset", default=None, help="encoder size (default: 'paper' for paper, else 'default')")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tune-steps", type=int, default=5)
    p.add_argument("--edits", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from PIL import Image

    g = Generator(CONFIGS[args.config], seed=0).to(device).eval().requires_grad_(False)
    preset = args.encoder_preset or ("paper" if args.config == "paper" else "default" if args.config != "tiny" else "tiny")
    enc = HybridEncoder(config_for_generator(g, preset), g.mapping.w_avg).to(device).eval()
    editor = HybridEncoder(config_for_generator(g, preset, canonical=True), g.mapping.w_avg).to(device).eval()
    r = g.img_resolution
    with torch.no_grad():
        target = g(g.codes_from_seeds([1], 0.7), torch.from_numpy(orbit_camera(0.3, 0.0).label()).to(device)[None]).image
    rows = []

    # -- inversion ------------------------------------------------------------------------------
    invert(g, target, encoder=enc, policy=InversionPolicy(optimise_steps=1, tune_steps=1))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    res = invert(g, target, encoder=enc, policy=InversionPolicy(optimise_steps=args.steps, tune_steps=args.tune_steps))
    sync(device)
    total = time.perf_counter() - t0
    st = res.stages
    opt_step = st["optimise"]["seconds"] / max(args.steps, 1)
    tune_step = st["tune"]["seconds"] / max(args.tune_steps, 1) if "tune" in st else 0.0
    d = InversionPolicy()
    rows += [("inversion: encoder init", st["init"]["seconds"] * 1e3, "ms"),
             ("inversion: code optimisation step", opt_step * 1e3, "ms"),
             ("inversion: pivotal tuning step", tune_step * 1e3, "ms"),
             (f"inversion measured ({args.steps}+{args.tune_steps} steps)", total, "s"),
             (f"inversion at default policy ({d.optimise_steps}+{d.tune_steps} steps, extrapolated)",
              st["init"]["seconds"] + d.optimise_steps * opt_step + d.tune_steps * tune_step, "s")]

    # -- mask edit ------------------------------------------------------------------------------
    portrait = Portrait(camera=canonical_camera().label(), generator_config={}, base_fingerprint=generator_fingerprint(g),
                        history=(EditRecord("invert", {}, PortraitState(res.ws)),))
    labels = editing.canonical_labels(g, portrait.state)
    painted = labels.copy()
    painted[r // 8: r // 3, r // 4: 3 * r // 4] = 13
    buf = io.BytesIO()
    Image.fromarray(colorize(painted)).save(buf, format="PNG")
    png = buf.getvalue()
    cam = canonical_camera().label()

    def edit(mode, cached=False):
        def run():
            ids = decode_mask(np.array(Image.open(io.BytesIO(png)).convert("RGB")))
            with torch.no_grad():
                if cached:  # a live session keeps E(current map) and the current codes
                    ws = portrait.ws.to(device)
                    w_s = ws[:, :g.num_shape_ws] + editor.encode_shape(torch.from_numpy(ids)[None].long().to(device)) - e_cur
                    new = PortraitState(torch.cat([w_s, ws[:, g.num_shape_ws:]], 1))
                else:
                    new = editing.mask_edit(portrait, g, editor, ids, mode=mode).state
                return editing.render_state(g, new, cam).image
        return run

    with torch.no_grad():
        e_cur = editor.encode_shape(torch.from_numpy(labels)[None].long().to(device))
    for name, fn in (("mask edit, direct", edit("direct")), ("mask edit, residual", edit("residual")),
                     ("mask edit, residual, cached current map", edit("residual", cached=True))):
        fn()
        _, t = timed(fn, device, args.edits)
        rows.append((f"{name} ({r} px frame)", t * 1e3, "ms"))

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\nconfig '{args.config}' ({r} px, neural {g.neural_resolution} px), encoders '{preset}', {dev_name}\n")
    print("| measurement | value | unit |\n|---|---|---|")
    for name, v, unit in rows:
        print(f"| {name} | {v:.1f} | {unit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
