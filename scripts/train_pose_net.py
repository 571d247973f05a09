# SPDX-License-Identifier: GPL-3.0-or-later
"""Train the procedural-domain pose net (ide3d_core/photo/pose_net.py) and print held-out errors.

Deterministic (seeded torch.Generator for heads, cameras, batches and augmentation; one CPU thread count).
Data: procedural heads (training.procedural.sample_heads) rendered at orbit cameras drawn uniformly in
yaw [-45, 45] and pitch [-15, 15] degrees (ide3d_core.cameras.orbit_labels), passed through
``prepare(..., domain="procedural")`` so the net learns from the pipeline's own aligned crops (the crop
carries the landmark fit's small scale/rotation/shift errors, up to ~6 %), then area-resized to the net's
resolution. Faces MediaPipe misses go through the same fallback crop prepare uses. ``--raw-views N`` adds N
more views rendered straight at the net's resolution in the model framing, without MediaPipe (about 20x
cheaper per view); the training jitter stands in for the landmark crop's errors on those.

    .venv/bin/python scripts/train_pose_net.py --out ide3d_core/photo/templates/pose_net
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from ide3d_core.cameras import orbit_labels
from ide3d_core.images import to_uint8_hwc
from ide3d_core.photo.errors import PhotoError
from ide3d_core.photo.pipeline import prepare
from ide3d_core.photo.pose_net import (PoseNet, PoseNetConfig, crop_tensor, resize_crops, save_pose_net,
                                       symmetric_angles)
from training.procedural import render_heads, sample_heads

TRAIN_SEED, HELDOUT_SEED, RAW_SEED = 1000, 2000, 3000


def render_views(seed: int, count: int, resolution: int = 128, crop: int = 128, yaw_max: float = 45.0,
                 pitch_max: float = 15.0, angles_deg: np.ndarray | None = None, chunk: int = 64):
    """Render ``count`` heads (one random view each, or the given (count, 2) angles in degrees) and align them
    with prepare(domain="procedural"). Returns (crops (N, crop, crop, 3) uint8, angles (N, 2) degrees),
    views whose photo has no detectable face dropped."""
    g = torch.Generator().manual_seed(seed)
    if angles_deg is None:
        u = torch.rand(count, 2, generator=g, dtype=torch.float64).numpy() * 2 - 1
        angles_deg = u * np.array([yaw_max, pitch_max])
    crops, kept = [], []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        heads = sample_heads(n, g)
        ang = angles_deg[start:start + n]
        r = render_heads(heads, torch.from_numpy(orbit_labels(np.radians(ang))), resolution, antialias=2)
        imgs = to_uint8_hwc(r.image)
        for i in range(n):
            try:
                crops.append(prepare(imgs[i], size=crop, domain="procedural", pose_net=False).image)
                kept.append(ang[i])
            except PhotoError:
                pass
    return np.stack(crops), np.asarray(kept, dtype=np.float64)


def render_raw_views(seed: int, count: int, resolution: int, yaw_max: float = 45.0, pitch_max: float = 15.0,
                     chunk: int = 128):
    """``count`` heads, one random view each, rendered at ``resolution`` in the model framing (no landmark
    crop). Returns (crops (N, R, R, 3) uint8, angles (N, 2) degrees)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(count, 2, generator=g, dtype=torch.float64).numpy() * 2 - 1
    angles_deg = u * np.array([yaw_max, pitch_max])
    out = []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        heads = sample_heads(n, g)
        r = render_heads(heads, torch.from_numpy(orbit_labels(np.radians(angles_deg[start:start + n]))), resolution,
                         antialias=2)
        out.append(to_uint8_hwc(r.image))
        print(f"raw views {start + n}/{count}", flush=True)
    return np.concatenate(out), angles_deg


def train(crops: np.ndarray, angles: np.ndarray, config: PoseNetConfig, steps: int, batch: int, seed: int,
          lr: float = 2e-3, log_every: int = 200) -> PoseNet:
    """Adam + cosine schedule on smooth-L1 of angles / angle_scale; augmentation: mirror (yaw negated) and
    small random similarities (:func:`_jitter`)."""
    g = torch.Generator().manual_seed(seed)
    x_all = crop_tensor(crops, config.resolution)
    y_all = torch.from_numpy(angles).float()
    torch.manual_seed(seed)  # parameter init (nn defaults draw from the global generator)
    net = PoseNet(config)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=g)
        x, y = x_all[idx], y_all[idx].clone()
        flip = torch.rand(batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y[:, 0] = torch.where(flip, -y[:, 0], y[:, 0])
        x = _jitter(x, g)
        loss = torch.nn.functional.smooth_l1_loss(net(x) / config.angle_scale, y / config.angle_scale, beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"step {step + 1:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:6.1f} s", flush=True)
    return net.eval()


def _jitter(x: torch.Tensor, g: torch.Generator, scale: float = 0.05, degrees: float = 3.0,
            shift: float = 0.05) -> torch.Tensor:
    """Random similarity per image (scale +-5 %, rotation +-3 degrees, shift +-5 % of the side: the size of
    the landmark crop's own errors), reflection padding."""
    b = len(x)
    u = torch.rand(b, 4, generator=g) * 2 - 1
    s = 1 + scale * u[:, 0]
    a = torch.deg2rad(degrees * u[:, 1])
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = s * a.cos(), -s * a.sin(), s * a.sin(), s * a.cos()
    theta[:, :, 2] = 2 * shift * u[:, 2:]
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


@torch.no_grad()
def errors(net: PoseNet, crops: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(N, 2) estimated minus true yaw, pitch in degrees (mirror-averaged net)."""
    est = torch.cat([symmetric_angles(net, crop_tensor(crops[i:i + 256], net.config.resolution))
                     for i in range(0, len(crops), 256)])
    return est.numpy() - angles


def print_errors(name: str, err: np.ndarray) -> None:
    a = np.abs(err)
    print(f"| {name} | {len(err)} | {a[:, 0].mean():.2f} | {a[:, 0].max():.2f} | {(a[:, 0] > 5).mean():.1%} | "
          f"{err[:, 1].mean():+.2f} | {a[:, 1].mean():.2f} | {a[:, 1].max():.2f} | {(a[:, 1] > 5).mean():.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for config.json + pose_net.safetensors")
    ap.add_argument("--heads", type=int, default=2048, help="training views (one per head)")
    ap.add_argument("--heldout", type=int, default=256, help="held-out random views (other seed)")
    ap.add_argument("--raw-views", type=int, default=0, help="extra views rendered without MediaPipe")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="npz of rendered crops (written if missing)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PoseNetConfig()
    t0 = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        d = np.load(args.cache)
        tr_x, tr_y, ho_x, ho_y = d["tr_x"], d["tr_y"], d["ho_x"], d["ho_y"]
    else:
        tr_x, tr_y = render_views(TRAIN_SEED, args.heads)
        ho_x, ho_y = render_views(HELDOUT_SEED, args.heldout)
        if args.cache is not None:
            np.savez_compressed(args.cache, tr_x=tr_x, tr_y=tr_y, ho_x=ho_x, ho_y=ho_y)
    if args.raw_views:
        raw_x, raw_y = render_raw_views(RAW_SEED, args.raw_views, cfg.resolution)
        tr_x = np.concatenate([resize_crops(tr_x, cfg.resolution), raw_x])
        tr_y = np.concatenate([tr_y, raw_y])
    print(f"data: {len(tr_x)} train / {len(ho_x)} held-out crops, {time.perf_counter() - t0:.0f} s", flush=True)
    net = train(tr_x, tr_y, cfg, args.steps, args.batch, seed=0)
    print("| set | views | yaw mean abs | yaw max | yaw > 5 | pitch mean | pitch mean abs | pitch max | pitch > 5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print_errors("train", errors(net, tr_x, tr_y))
    print_errors(f"held-out seed {HELDOUT_SEED}", errors(net, ho_x, ho_y))
    if args.out is not None:
        save_pose_net(net, args.out)
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
