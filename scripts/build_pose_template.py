# SPDX-License-Identifier: GPL-3.0-or-later
"""Rebuild the procedural-domain landmark template ``ide3d_core/photo/templates/procedural.json``.

Usage::

    .venv/bin/python scripts/build_pose_template.py [--heads 96] [--views 9] [--resolution 128]
        [--seed 20261125] [--threads 2] [--cache /tmp/pose_obs.npz] [--out ...procedural.json]
        [--evaluate HELD_OUT.npz]

What it does (deterministic: heads from ``torch.Generator().manual_seed(seed)``, cameras from
``seed + 1``):

1. Draws ``--heads`` procedural heads (``training.procedural.sample_heads``) and, for each, ``--views``
   cameras ``orbit_camera(yaw, pitch)`` with yaw stratified over [-45, 45] degrees (jittered) and pitch
   uniform in [-12, 12] degrees; renders them (``render_heads``, antialias 1).
2. Runs the pipeline's own MediaPipe face mesh (``ide3d_core.photo.detect.detect_faces``) on every render
   and on its mirror image. A mirror image is the render of the mirrored head through the mirrored camera
   (``Camera.mirrored``), so it is used with that camera: this symmetrises the template without needing
   MediaPipe's left/right index pairs.
3. Turns every detected landmark into a ray of the known camera (``ide3d_core.photo.pose.landmark_rays``)
   and fits one 3D point per landmark to all its rays (``triangulate_rays``: robust least squares,
   Huber IRLS), i.e. the model-world point whose projections best match where MediaPipe puts that
   landmark on procedural heads, averaged over heads and views. Contour landmarks (which slide over the
   surface with the view) get large residuals and so small weights.
4. Drops the 5 % of landmarks with the largest residual spread, spreads ``--keep`` of the rest over the
   face in mirror pairs (farthest-point sampling: the face mesh crowds the eye rings, and a template
   that is all eyes pins yaw but hardly pitch; pairs averaged so the template is exactly symmetric),
   and writes indices, points (model units), weights (1 / sigma^2, capped at
   10x the median, mean 1) and the build settings to JSON.

For comparison it also prints how far the fitted points lie from the depth-lifted ones (the rendered depth
at each landmark, along its ray). ``--cache`` stores the renders and detections so the fit can be re-run
without rendering; ``--evaluate`` prints the pipeline's pose errors with both templates on held-out
detections (a ``--cache`` written with another ``--seed``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "ide3d_core" / "photo" / "templates" / "procedural.json"


def sample_views(n_heads: int, views: int, seed: int) -> np.ndarray:
    """(n_heads * views, 2) yaw, pitch in degrees: yaw stratified over [-45, 45] with jitter, pitch
    uniform in [-12, 12]; drawn from ``torch.Generator().manual_seed(seed)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    edges = np.linspace(-45.0, 45.0, views + 1)
    u = torch.rand(n_heads, views, 2, generator=g, dtype=torch.float64).numpy()
    yaw = edges[:-1][None] + u[..., 0] * (edges[1] - edges[0])
    pitch = -12.0 + 24.0 * u[..., 1]
    return np.stack([yaw, pitch], -1).reshape(-1, 2)


def observe(n_heads: int, views: int, resolution: int, seed: int, chunk: int = 8,
            log=print) -> dict[str, np.ndarray]:
    """Render procedural heads at known cameras and detect their landmarks (module docstring, steps 1-2).

    Returns arrays over M = 2 * n_heads * views observations (each render and its mirror image):
        labels (M, 25) camera labels (mirrored camera for mirror images); landmarks (M, 468, 2) pixels,
        NaN where no face was found; mp_z (M, 468) MediaPipe's relative depth (pixels); depth (M, 468)
        rendered depth at each landmark (bilinear, NaN at the silhouette); head (M,) head index;
        mirrored (M,) bool; images (n_heads * views, R, R, 3) uint8 renders (the mirror images are their
        left-right flips).
    """
    import torch

    from ide3d_core.cameras import orbit_camera, stack_labels
    from ide3d_core.images import to_uint8_hwc
    from ide3d_core.photo.detect import detect_faces
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(n_heads, torch.Generator().manual_seed(seed))
    angles = sample_views(n_heads, views, seed + 1)
    head_of_view = np.repeat(np.arange(n_heads), views)
    out: dict[str, list] = {k: [] for k in ("labels", "landmarks", "mp_z", "depth", "head", "mirrored")}
    renders = []
    t0 = time.perf_counter()
    for s in range(0, len(angles), chunk):
        sel = np.arange(s, min(s + chunk, len(angles)))
        cams = [orbit_camera(math.radians(y), math.radians(p)) for y, p in angles[sel]]
        r = render_heads(heads.index(torch.from_numpy(head_of_view[sel])), torch.from_numpy(stack_labels(cams)),
                         resolution, antialias=1)
        imgs = to_uint8_hwc(r.image)
        depth = r.depth[:, 0].numpy().astype(np.float64)
        renders.append(imgs)
        for k, i in enumerate(sel):
            for mirrored in (False, True):
                img = imgs[k][:, ::-1].copy() if mirrored else imgs[k]
                dep = depth[k][:, ::-1] if mirrored else depth[k]
                cam = cams[k].mirrored() if mirrored else cams[k]
                faces = detect_faces(img, max_faces=1)
                lm = np.full((468, 3), np.nan)
                if faces and faces[0].landmarks is not None:
                    lm = faces[0].landmarks
                out["labels"].append(cam.label())
                out["landmarks"].append(lm[:, :2])
                out["mp_z"].append(lm[:, 2])
                out["depth"].append(_sample_depth(dep, lm[:, :2]))
                out["head"].append(head_of_view[i])
                out["mirrored"].append(mirrored)
        log(f"  rendered and detected {sel[-1] + 1}/{len(angles)} views ({time.perf_counter() - t0:.0f} s)")
    return {**{k: np.asarray(v) for k, v in out.items()}, "images": np.concatenate(renders)}


def _sample_depth(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear depth at continuous pixels ``uv`` (N, 2) (centres at +0.5); NaN when a neighbour is
    background or the four neighbours straddle a depth edge (> 0.02 units)."""
    h, w = depth.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    ok = np.isfinite(x) & np.isfinite(y)
    x0 = np.clip(np.floor(np.nan_to_num(x)), 0, w - 2).astype(int)
    y0 = np.clip(np.floor(np.nan_to_num(y)), 0, h - 2).astype(int)
    fx, fy = np.clip(np.nan_to_num(x) - x0, 0, 1), np.clip(np.nan_to_num(y) - y0, 0, 1)
    d = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]], -1)
    val = (d[:, 0] * (1 - fx) * (1 - fy) + d[:, 1] * fx * (1 - fy) + d[:, 2] * (1 - fx) * fy
           + d[:, 3] * fx * fy)
    ok &= (d > 0).all(-1) & (d.max(-1) - d.min(-1) < 0.02)
    return np.where(ok, val, np.nan)


def spread_out(points: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """``k`` of ``candidates`` (indices into ``points`` (N, 3)) chosen by farthest-point sampling from the
    lowest point, so the template covers the whole face (brows to chin, cheek to cheek) instead of
    crowding the eye rings, where the face mesh is densest. Returns sorted indices."""
    sel = [int(candidates[np.argmin(points[candidates, 1])])]
    d = np.linalg.norm(points[candidates] - points[sel[0]], axis=1)
    for _ in range(min(k, len(candidates)) - 1):
        j = int(candidates[np.argmax(d)])
        sel.append(j)
        d = np.minimum(d, np.linalg.norm(points[candidates] - points[j], axis=1))
    return np.sort(np.array(sel, dtype=np.int64))


def mirror_twins(points: np.ndarray, candidates: np.ndarray, tolerance: float = 0.01) -> dict[int, int]:
    """MediaPipe's left/right twin of each candidate, found geometrically: mutual nearest neighbours
    between the points and their mirror images (x -> -x) within ``tolerance`` units (the points were
    fitted to renders and their mirror images, so twins nearly mirror each other; a landmark on the
    symmetry plane is its own twin). Returns {index: twin index}."""
    flip = np.array([-1.0, 1.0, 1.0])
    p = points[candidates]
    d = np.linalg.norm((p * flip)[:, None] - p[None], axis=-1)
    near = np.argmin(d, axis=1)
    return {int(candidates[a]): int(candidates[b]) for a, b in enumerate(near)
            if near[b] == a and d[a, b] < tolerance}


def symmetric_selection(points: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``k`` landmarks spread over the face in mirror pairs, and their exactly symmetrised points.

    Farthest-point sampling (:func:`spread_out`) over the candidates that have a twin picks ``k // 2``;
    their twins join them; each pair's points are averaged with the mirror of the other (a landmark that
    is its own twin gets x = 0), so the template is mirror-symmetric and the fit mirror-equivariant.
    Returns (sorted indices (K,), points (468, 3) with the selected rows symmetrised)."""
    twins = mirror_twins(points, candidates)
    paired = np.array(sorted(twins), dtype=np.int64)
    chosen = spread_out(points, paired, k // 2)
    kept = np.array(sorted(set(int(i) for i in chosen) | {twins[int(i)] for i in chosen}), dtype=np.int64)
    flip = np.array([-1.0, 1.0, 1.0])
    sym = points.copy()
    for i in kept:
        sym[i] = 0.5 * (points[i] + points[twins[int(i)]] * flip)
    return kept, sym


def fit_template(obs: dict[str, np.ndarray], keep: int, log=print) -> dict:
    """Fit the template to the observations (module docstring, steps 3-4); returns the JSON-ready
    template dict (without ``build``)."""
    from ide3d_core.cameras import Camera
    from ide3d_core.photo.pose import landmark_rays, triangulate_rays

    res = int(obs["resolution"])
    lm = obs["landmarks"]
    found = np.isfinite(lm).all(-1).all(-1)
    log(f"faces found in {found.sum()} of {len(found)} images "
        f"({(~found[~obs['mirrored']]).sum()} renders, {(~found[obs['mirrored']]).sum()} mirror images missed)")
    cams = [Camera.from_label(label) for label in obs["labels"][found]]
    rays = [landmark_rays(c, p, res, res) for c, p in zip(cams, lm[found])]
    origins = np.stack([o for o, _ in rays])
    dirs = np.stack([d for _, d in rays])
    points, spread = triangulate_rays(origins, dirs)
    focal = cams[0].intrinsics[0, 0]
    sigma = spread * focal                                     # normalised image units (fraction of width)
    lifted = origins[:, None] + obs["depth"][found][..., None] * dirs
    lifted_med = np.nanmedian(lifted, axis=0)
    order = np.argsort(sigma)
    candidates = np.nonzero(sigma <= np.quantile(sigma, 0.95))[0]
    kept, points = symmetric_selection(points, candidates, keep)
    w = 1.0 / np.maximum(sigma[kept], 1e-4) ** 2
    w = np.minimum(w, 10.0 * np.median(w))                    # no landmark worth more than 10 typical ones
    w /= w.mean()
    gap = np.linalg.norm(points - lifted_med, axis=-1)
    log(f"residual spread sigma (x {res} px): median {np.median(sigma) * res:.2f}, kept median "
        f"{np.median(sigma[kept]) * res:.2f}, worst {sigma.max() * res:.2f}")
    log(f"triangulated vs depth-lifted median point: median gap {np.nanmedian(gap):.4f} units, kept "
        f"{np.nanmedian(gap[kept]):.4f}, contour-like (worst 10% sigma) "
        f"{np.nanmedian(gap[order[-len(order) // 10:]]):.4f}")
    template = {"domain": "procedural", "indices": [int(i) for i in kept],
                "points": [[round(float(v), 5) for v in points[i]] for i in kept],
                "weights": [float(f"{v:.4g}") for v in w]}
    return template


def evaluate(obs: dict[str, np.ndarray], domain: str, log=print) -> np.ndarray:
    """Pose errors of the pipeline's model-framing alignment (``align_face``) on observations with known
    cameras: (M, 2) estimated minus true (yaw, pitch) in degrees, NaN where no face was found."""
    from ide3d_core.cameras import Camera
    from ide3d_core.photo.align import align_face

    res = int(obs["resolution"])
    err = np.full((len(obs["labels"]), 2), np.nan)
    for i, (label, lm) in enumerate(zip(obs["labels"], obs["landmarks"])):
        if not np.isfinite(lm).all():
            continue
        pose = align_face(lm, res, "model", domain=domain).pose
        yaw, pitch = (math.degrees(a) for a in Camera.from_label(label).yaw_pitch())
        err[i] = pose.yaw - yaw, pose.pitch - pitch
    a = np.abs(err)
    log(f"{domain:>10}: yaw |err| mean {np.nanmean(a[:, 0]):.2f} max {np.nanmax(a[:, 0]):.2f}; "
        f"pitch err mean {np.nanmean(err[:, 1]):+.2f} |mean| {np.nanmean(a[:, 1]):.2f} max {np.nanmax(a[:, 1]):.2f} "
        f"deg ({np.isfinite(err[:, 0]).sum()} images)")
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=96)
    ap.add_argument("--views", type=int, default=9, help="views per head")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--keep", type=int, default=128, help="landmarks kept (spread over the face)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="npz of detections: read if present, else written")
    ap.add_argument("--observe-only", action="store_true", help="stop after writing --cache")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--evaluate", type=Path, default=None, metavar="NPZ",
                    help="after writing, print pose errors on these (held-out) detections, e.g. a --cache "
                         "written with another --seed")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.cache is not None and args.cache.is_file():
        obs = dict(np.load(args.cache))
        print(f"read {len(obs['labels'])} observations from {args.cache}")
    else:
        obs = observe(args.heads, args.views, args.resolution, args.seed)
        obs.update(resolution=np.asarray(args.resolution), seed=np.asarray(args.seed),
                   heads=np.asarray(args.heads), views=np.asarray(args.views))
        if args.cache is not None:
            np.savez_compressed(args.cache, **obs)
    if args.observe_only:
        return
    template = fit_template(obs, args.keep)
    template["build"] = {"script": "scripts/build_pose_template.py", "seed": int(obs["seed"]),
                         "heads": int(obs["heads"]), "views_per_head": int(obs["views"]),
                         "resolution": int(obs["resolution"]),
                         "mirror_images": True, "keep": args.keep,
                         "images_with_face": int(np.isfinite(obs["landmarks"]).all(-1).all(-1).sum()),
                         "images": int(len(obs["labels"]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(template, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KB, {len(template['indices'])} landmarks)")
    if args.evaluate is not None and args.out.resolve() != DEFAULT_OUT.resolve():
        print("--evaluate measures the installed template; skipped because --out writes elsewhere")
    elif args.evaluate is not None:
        held_out = dict(np.load(args.evaluate))
        print(f"held-out detections {args.evaluate} (estimated - true, degrees):")
        for domain in ("human", "procedural"):
            evaluate(held_out, domain)


if __name__ == "__main__":
    main()
