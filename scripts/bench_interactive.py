# SPDX-License-Identifier: GPL-3.0-or-later
"""Interactive latency (issue 15): the old path beside the new one, with their ratio, in one run.

    nice -n 19 env OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_interactive.py --threads 2

Rows (bundled model unless --model, batch 1, 256 px output):

* camera-only re-render from cached planes: ``Generator.render`` (reference) vs
  :func:`ide3d_core.fast_render.render_fast` with the planes' cached occupancy grid ("full": the same
  image; its super-resolution is the folded twin, bf16 where the CPU has native bf16) and at
  ``quality="preview"`` (half the neural resolution); the fast path with the tri-plane sampling kernel
  + decoder modules (``FastRenderSettings(fused=False)``) vs the fused sample + decode kernel
  (:mod:`ops.triplane_decode`, the default); the PyTorch march of the rays
  (``FastRenderSettings(march="torch")``) vs the fused C march (:mod:`ops.ray_march`, the default where
  it is built); the grid's own cost is a row, and the
  super-resolution's: reference vs folded float32 vs folded bf16; and the surface detail's (models with one).
* mask edit to new frame (a painted canonical map -> canonical editor -> new codes -> tri-planes ->
  frame): the reference frame vs the fast frame (folded tri-planes as the service builds them: bf16 where
  the CPU has native bf16, ``operations.render_inputs(planes_dtype="auto")``,
  grid built for the new planes included), the current canonical map cached as the live session caches
  it; the tri-planes' rows: reference vs folded float32 vs folded bf16.
* with ``--import-photo``: photo import (prepare + hybrid inversion of one photo at the default
  ``InversionPolicy``, as Import Photo runs it); with ``--import-old`` also at ``THOROUGH_POLICY`` (the
  old 200 + 100 step default; minutes).
* 256^3 head mesh without bake (:func:`scripts.bench_mesh.compare_rows`): blocks of 8 with point queries
  and the "dilate" rule (the first sparse grid), and blocks of 4 with the PyTorch lattice query and
  "dilate" (the default before "grow"), vs blocks of 4, "grow", the fused tri-plane decode kernel
  (:mod:`ide3d_core.mesh.sparse`, :mod:`ide3d_core.mesh.generator_field`); per stage and from codes.

Each time is the median of ``--repeats`` runs: wall ms and the process CPU ms (all threads); on a
shared machine the CPU time is the steadier number. The fast frames' PSNR and label agreement against
the reference frames are printed with them, and the fraction of field evaluations they needed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ide3d_core import editing, fast_networks, fast_render  # noqa: E402
from ide3d_core.cameras import canonical_camera, orbit_camera, stack_labels  # noqa: E402
from ide3d_core.model_loading import BUNDLED_MODEL_DIR, load_model_encoder, surface_level  # noqa: E402
from ide3d_core.networks.io import load_generator  # noqa: E402
from ide3d_core.portrait import EditRecord, Portrait, PortraitState  # noqa: E402

TARGETS = {"re-render": 60.0, "mask edit": 100.0, "mesh": 1000.0, "import": 20000.0}


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall ms, median process CPU ms and the last result of ``fn()`` (after one warm-up)."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3, out


def agreement(ref, out) -> str:
    labels = float((ref.semantic.argmax(1) == out.semantic.argmax(1)).float().mean())
    return f"{fast_render.psnr(ref.image, out.image):.1f} dB, {100 * labels:.2f} % labels"


def import_rows(args) -> list:
    """Photo import: prepare + hybrid inversion of Grace Hopper's portrait (matplotlib's sample) at the
    default policy, the same without skip_empty, without camera refinement and without the solves after the
    fit (detail strength, label offsets) (alternating, medians of
    ``--import-repeats`` after one warm-up), and the old one with --import-old (timed once)."""
    import matplotlib.cbook as cbook
    from PIL import Image

    from ide3d_core.inversion import THOROUGH_POLICY, InversionPolicy
    from ide3d_core.model_loading import load_base_generator
    from ide3d_core.operations.invert import PhotoInput, invert_photos

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        photo = np.asarray(im.convert("RGB")).copy()
    G = load_base_generator(args.model, "cpu")
    encoder = load_model_encoder(args.model, "standard", "cpu")

    def run(policy):
        t0, c0 = time.perf_counter(), time.process_time()
        out = invert_photos(G, [PhotoInput(photo, name="hopper")], encoder=encoder, policy=policy)
        steps = {k: int(v.get("steps", 0)) for k, v in out.result.stages.items()}
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, steps

    run(InversionPolicy(optimise_steps=1, tune_steps=0))  # warm-up: lazy imports and first-call costs
    times: dict[str, list] = {"new": [], "full": [], "fixed": [], "unsolved": []}
    policies = {"new": InversionPolicy(), "full": InversionPolicy(skip_empty=False),
                "fixed": InversionPolicy(refine_pose=False),
                "unsolved": InversionPolicy(detail_strength="off", label_offsets=False)}
    for _ in range(args.import_repeats):  # alternating, so a slow spell of the machine hits every row
        for key, policy in policies.items():
            times[key].append(run(policy))

    def median(key):
        ms, cpu, steps = zip(*times[key])
        return float(np.median(ms)), float(np.median(cpu)), steps[0]

    (new_ms, new_cpu, steps), (full_ms, full_cpu, _), (fix_ms, fix_cpu, _), (uns_ms, uns_cpu, _) = map(
        median, ("new", "full", "fixed", "unsolved"))
    old_ms = old_cpu = float("nan")
    note = f"default policy, steps run {steps}"
    if args.import_old:
        old_ms, old_cpu, old_steps = run(THOROUGH_POLICY)
        note += f"; old {old_steps}"
    return [("photo import (prepare + hybrid inversion)", old_ms, old_cpu, new_ms, new_cpu, note, "import"),
            ("  same schedule, every ray sample evaluated (old) vs skip_empty (new)", full_ms, full_cpu, new_ms,
             new_cpu, "occupancy grid of the current planes every step", "import"),
            ("  same schedule, fixed camera (old) vs camera refinement (new)", fix_ms, fix_cpu, new_ms, new_cpu,
             "refine_pose: each view's camera learned with the codes", "import"),
            ("  same schedule, nothing solved after the fit (old) vs detail strength + label offsets (new)",
             uns_ms, uns_cpu, new_ms, new_cpu, "closed-form solves at the photo (session 16)", "import")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(BUNDLED_MODEL_DIR))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-mesh", action="store_true")
    p.add_argument("--import-photo", action="store_true", help="also time a photo import at the default policy")
    p.add_argument("--import-old", action="store_true", help="and at the old 200 + 100 step default (minutes)")
    p.add_argument("--import-repeats", type=int, default=2,
                   help="timed imports per policy after one warm-up (alternating; the median is shown)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(args.model).requires_grad_(False)
    rows: list[tuple[str, float, float, float, float, str, str]] = []

    with torch.no_grad():
        ws = G.codes_from_seeds([args.seed], truncation_psi=0.7)
        planes = G.planes(ws)
        c = torch.from_numpy(stack_labels([orbit_camera(0.45, 0.12)]))
        grid_ms, grid_cpu, grid = timed(lambda: fast_render.occupancy_grid(G, planes), args.repeats)
        old_ms, old_cpu, ref = timed(lambda: G.render(planes, c, ws), args.repeats)
        stats: list = []
        new_ms, new_cpu, out = timed(lambda: fast_render.render_fast(G, planes, c, ws, grid), args.repeats)
        fast_render.render_fast(G, planes, c, ws, grid, stats=stats)
        unfused = fast_render.FastRenderSettings(fused=False, flush_denormals=False)
        uf_ms, uf_cpu, uf_out = timed(lambda: fast_render.render_fast(G, planes, c, ws, grid, settings=unfused),
                                      args.repeats)
        torch_march = fast_render.FastRenderSettings(march="torch")
        tm_ms, tm_cpu, tm_out = timed(lambda: fast_render.render_fast(G, planes, c, ws, grid, settings=torch_march),
                                      args.repeats)
        no_ftz = fast_render.FastRenderSettings(flush_denormals=False)
        nf_ms, nf_cpu, _ = timed(lambda: fast_render.render_fast(G, planes, c, ws, grid, settings=no_ftz), args.repeats)
        pre_ms, pre_cpu, pre = timed(lambda: fast_render.render_quality(G, planes, c, ws, "preview", grid),
                                     args.repeats)
        w_sr = ws[:, G.config.num_shape_ws + G.config.num_head_ws:]
        feats, sem = ref.features_raw, ref.semantic_raw
        sr_ms, sr_cpu, sr_ref = timed(lambda: G.superresolution(feats, sem, w_sr), args.repeats)
        sr_rows = []
        for dt in fast_networks.DTYPES:
            f_ms, f_cpu, f_out = timed(lambda: fast_networks.superresolve(G.superresolution, feats, sem, w_sr, dt),
                                       args.repeats)
            same = float((f_out[1].argmax(1) == sr_ref[1].argmax(1)).float().mean())
            sr_rows.append((f"  part: super-resolution, folded {str(dt)[6:]}", sr_ms, sr_cpu, f_ms, f_cpu,
                            f"{fast_render.psnr(sr_ref[0], f_out[0]):.1f} dB, {100 * same:.2f} % labels", ""))
        detail_rows = []
        if G.detail is not None:  # the surface detail's share of a fast frame (networks/detail.py)
            far = G.far_bounds(c)
            d_ms, d_cpu, _ = timed(lambda: G.detail(out.image, out.semantic, out.depth, out.opacity, c, far),
                                   args.repeats)
            detail_rows.append(("  part: surface detail (in the fast frame above)", float("nan"), float("nan"),
                                d_ms, d_cpu, f"{100 * d_ms / new_ms:.0f} % of the fast frame's wall time", ""))
        # a portrait's photo laid over the fast frame (ide3d_core/photo_projection.py): one photo at yaw 20
        from ide3d_core.images import to_uint8_hwc
        from ide3d_core.photo_projection import prepare_projection

        pc = torch.from_numpy(stack_labels([orbit_camera(0.35, 0.0)]))
        photo = G.render(planes, pc, ws)
        photos = [(to_uint8_hwc(photo.image[0].clamp(-1, 1)), pc[0].numpy(),
                   photo.semantic[0].argmax(0).to(torch.uint8).numpy())]
        pp_ms, pp_cpu, projection = timed(lambda: prepare_projection(G, ws, photos), args.repeats)
        state = PortraitState(ws.cpu())
        pa_ms, pa_cpu, _ = timed(lambda: projection.apply(G, out, c, state), args.repeats)
        # three photos (yaw -20 / 0 / +20): without (old) and with (new) the photo stereo (photo_stereo.py)
        pcs = torch.from_numpy(stack_labels([orbit_camera(a, 0.0) for a in (-0.35, 0.0, 0.35)]))
        three = [G.render(planes, pcs[k:k + 1], ws) for k in range(3)]
        photos3 = [(to_uint8_hwc(three[k].image[0].clamp(-1, 1)), pcs[k].numpy(),
                    three[k].semantic[0].argmax(0).to(torch.uint8).numpy()) for k in range(3)]
        projection3 = prepare_projection(G, ws, photos3)
        no_stereo = projection3.without_stereo()
        p3_old_ms, p3_old_cpu, _ = timed(lambda: no_stereo.apply(G, out, c, state), args.repeats)
        p3_ms, p3_cpu, _ = timed(lambda: projection3.apply(G, out, c, state), args.repeats)
        projection_rows = [
            ("  part: photo projection, one photo laid over the fast frame above", float("nan"), float("nan"),
             pa_ms, pa_cpu, f"{100 * pa_ms / new_ms:.0f} % of the fast frame's wall time", ""),
            ("  part: photo projection set-up (once per portrait: a render per photo)", float("nan"), float("nan"),
             pp_ms, pp_cpu, "", ""),
            ("  part: three photos laid over it, without (old) / with (new) photo stereo", p3_old_ms, p3_old_cpu,
             p3_ms, p3_cpu, f"new {100 * p3_ms / new_ms:.0f} % of the fast frame's wall time", ""),
        ]
        ev = stats[0].evaluated / stats[0].reference
        rows += [
            ("re-render from cached planes, 256 px", old_ms, old_cpu, new_ms, new_cpu,
             f"{agreement(ref, out)}; {100 * ev:.0f} % of the field evaluations", "re-render"),
            ("  same, preview quality (32 px rays)", old_ms, old_cpu, pre_ms, pre_cpu, agreement(ref, pre), "re-render"),
            ("  fast path: sampling kernel + decoder modules (old) vs fused sample + decode (new)", uf_ms, uf_cpu,
             new_ms, new_cpu, f"unfused {agreement(ref, uf_out)}; old without, new with denormals flushed", ""),
            ("  fast path: PyTorch march (old) vs fused C march, ops.ray_march (new)", tm_ms, tm_cpu, new_ms,
             new_cpu, f"PyTorch march {agreement(ref, tm_out)}", ""),
            ("  fused, denormals kept (old) vs flushed during the render (new)", nf_ms, nf_cpu, new_ms, new_cpu, "", ""),
            ("  part: occupancy grid (once per planes)", float("nan"), float("nan"), grid_ms, grid_cpu,
             f"{100 * grid.fraction():.0f} % of the cells occupied", ""),
            *sr_rows,
            *detail_rows,
            *projection_rows,
        ]

        editor = load_model_encoder(args.model, "canonical", "cpu")
        if editor is None:
            print("(no canonical editor in this model: mask-edit rows skipped)")
        else:
            state = PortraitState(ws.cpu())
            portrait = Portrait(camera=canonical_camera().label(), generator_config={},
                                base_fingerprint="", history=(EditRecord("seed", {}, state),))
            current = editing.canonical_labels(G, state)
            painted = current.copy()
            r = painted.shape[0]
            painted[r // 10: r // 4, r // 3: 2 * r // 3] = 13  # paint hair over the crown
            cam = torch.from_numpy(canonical_camera().label()[None].astype(np.float32))

            def edit_old():
                new = editing.mask_edit(portrait, G, editor, painted, current=current).state
                return G.render(G.planes(new.ws), cam, new.ws)

            live_dtype = fast_render.network_dtype("auto", torch.device("cpu"))  # the session's planes

            def edit_new(quality: str):
                def run():
                    new = editing.mask_edit(portrait, G, editor, painted, current=current).state
                    pl = fast_networks.planes(G, new.ws, live_dtype)
                    return fast_render.render_quality(G, pl, cam, new.ws, quality,
                                                      fast_render.occupancy_grid(G, pl))
                return run

            def edit_prev():  # the fast path before the fused kernels: float32 planes, unfused grid and rays
                new = editing.mask_edit(portrait, G, editor, painted, current=current).state
                pl = fast_networks.planes(G, new.ws)
                return fast_render.render_fast(G, pl, cam, new.ws, fast_render.occupancy_grid(G, pl, fused=False),
                                               settings=unfused)

            e_old_ms, e_old_cpu, e_ref = timed(edit_old, args.repeats)
            e_prev_ms, e_prev_cpu, e_prev = timed(edit_prev, args.repeats)
            e_new_ms, e_new_cpu, e_out = timed(edit_new("full"), args.repeats)
            e_pre_ms, e_pre_cpu, e_pre = timed(edit_new("preview"), args.repeats)
            ed_ms, ed_cpu, _ = timed(lambda: editing.mask_edit(portrait, G, editor, painted, current=current),
                                     args.repeats)
            from ide3d_core.shape_residual import RefineConfig

            rf_ms, rf_cpu, _ = timed(lambda: editing.mask_edit(portrait, G, editor, painted, current=current,
                                                               refine=RefineConfig()), 1)
            pl_ms, pl_cpu, pl_ref = timed(lambda: G.planes(ws), args.repeats)
            pl_rows = []
            for dt in fast_networks.DTYPES:
                f_ms, f_cpu, f_pl = timed(lambda: fast_networks.planes(G, ws, dt), args.repeats)
                frame = fast_render.render_fast(G, f_pl, c, ws, grid)
                pl_rows.append((f"  part: tri-planes, folded {str(dt)[6:]}", pl_ms, pl_cpu, f_ms, f_cpu,
                                f"frame {agreement(ref, frame)}", ""))
            rows += [
                ("mask edit to new frame (residual, cached map)", e_old_ms, e_old_cpu, e_new_ms, e_new_cpu,
                 agreement(e_ref, e_out), "mask edit"),
                ("  same, preview frame", e_old_ms, e_old_cpu, e_pre_ms, e_pre_cpu, agreement(e_ref, e_pre), "mask edit"),
                ("  fast path: f32 planes, unfused grid + decoders (old) vs bf16 planes, fused (new)", e_prev_ms,
                 e_prev_cpu, e_new_ms, e_new_cpu, f"old {agreement(e_ref, e_prev)}", ""),
                ("  part: canonical editor + codes", ed_ms, ed_cpu, ed_ms, ed_cpu, "", ""),
                (f"mask edit on Apply: editor alone (old) vs editor + {RefineConfig.steps}-step shape residual "
                 "(new; live painting skips it)", ed_ms, ed_cpu, rf_ms, rf_cpu, "one run", ""),
                *pl_rows,
            ]

    if not args.skip_mesh:  # issue 15's mesh rows, as scripts/bench_mesh.py --compare prints them
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_mesh import compare_rows

        rows += compare_rows(G, ws, surface_level(args.model), max(1, args.repeats // 2))

    if args.import_photo:
        rows += import_rows(args)

    load = os.getloadavg()[0]
    print(f"\nmodel {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} (mesh {max(1, args.repeats // 2)}), 1-minute load average {load:.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| measurement | old wall ms | new wall ms | old / new | old CPU ms | new CPU ms | target | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, ow, oc, nw, nc, note, target in rows:
        ratio = ow / nw if ow == ow else float("nan")
        t = f"<= {TARGETS[target]:.0f}" if target else ""
        fmt = lambda x: "" if x != x else f"{x:.0f}"
        print(f"| {name} | {fmt(ow)} | {fmt(nw)} | {'' if ratio != ratio else f'{ratio:.2f}x'} | {fmt(oc)} | "
              f"{fmt(nc)} | {t} | {note} |")
    print("\n(process CPU = all threads of this process; on a shared machine closer than the wall time to an "
          "idle machine's cost)")


if __name__ == "__main__":
    main()
