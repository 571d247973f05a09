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
    """(last output, median wall seconds, median process CPU seconds) of ``repeats`` calls."""
    out, times, cpu = None, [], []
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, statistics.median(times), statistics.median(cpu)


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

    def run_invert(opt, tune):
        return lambda: invert(g, target, encoder=enc, policy=InversionPolicy(optimise_steps=opt, tune_steps=tune))

    _, t_init, c_init = timed(run_invert(0, 0), device, 1)
    _, t_opt, c_opt = timed(run_invert(args.steps, 0), device, 1)
    res, t_all, c_all = timed(run_invert(args.steps, args.tune_steps), device, 1)
    opt_step = ((t_opt - t_init) / max(args.steps, 1), (c_opt - c_init) / max(args.steps, 1))
    tune_step = ((t_all - t_opt) / max(args.tune_steps, 1), (c_all - c_opt) / max(args.tune_steps, 1))
    d = InversionPolicy()
    rows += [("inversion: encoder init + renders", t_init, c_init, "s"),
             ("inversion: code optimisation step", *opt_step, "s"),
             ("inversion: pivotal tuning step", *tune_step, "s"),
             (f"inversion measured ({args.steps}+{args.tune_steps} steps)", t_all, c_all, "s"),
             (f"inversion at default policy ({d.optimise_steps}+{d.tune_steps} steps, extrapolated)",
              *(t_init + d.optimise_steps * o + d.tune_steps * u
                for t_init, o, u in ((t_init, opt_step[0], tune_step[0]), (c_init, opt_step[1], tune_step[1]))), "s")]

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
    ids = decode_mask(np.array(Image.open(io.BytesIO(png)).convert("RGB")))
    ids_t = torch.from_numpy(ids)[None].long().to(device)
    with torch.no_grad():
        parts = (("  part: decode painted PNG", lambda: decode_mask(np.array(Image.open(io.BytesIO(png)).convert("RGB")))),
                 ("  part: canonical editor (shape tower)", lambda: editor.encode_shape(ids_t)),
                 ("  part: generator tri-planes", lambda: g.planes(portrait.ws.to(device))),
                 ("  part: generator render from cached planes", lambda: g.render(planes, torch.from_numpy(cam).to(device)[None],
                                                                                  portrait.ws.to(device))))
        planes = g.planes(portrait.ws.to(device))
        for name, fn in (("mask edit, direct", edit("direct")), ("mask edit, residual", edit("residual")),
                         ("mask edit, residual, cached current map", edit("residual", cached=True)), *parts):
            fn()
            _, t, c = timed(fn, device, args.edits)
            rows.append((f"{name} ({r} px frame)" if not name.startswith("  ") else name, t * 1e3, c * 1e3, "ms"))

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\nconfig '{args.config}' ({r} px, neural {g.neural_resolution} px), encoders '{preset}', {dev_name}\n")
    print("| measurement | wall | process CPU | unit |\n|---|---|---|---|")
    for name, v, c, unit in rows:
        print(f"| {name} | {v:.2f} | {c:.2f} | {unit} |")
    print("\n(process CPU = CPU time of this process, all its threads; under contention it is closer than the"
          " wall time to what an idle machine would take with --threads 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
