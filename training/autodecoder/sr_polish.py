# SPDX-License-Identifier: GPL-3.0-or-later
"""Super-resolution polish: train only the super-resolution network on cached neural renders.

Why: in the joint step the super-resolution sees one head every ``sr_interval`` steps, so it lags the
field (measured on the first run at step 1412: the raw 64 px render of a bank head scored 22-24 dB on
the head while the super-resolved image, box-filtered back to 64 px, scored 20-21 dB: the super-
resolution blurred what the field had). With the field frozen, a head's 64 px feature and semantic
maps can be rendered once (``no_grad``, about 0.4 s a head) and the super-resolution trained on them
for many epochs at the cost of the super-resolution alone.

The targets are the bank heads' exact renders at the generator's output resolution, from the same
cameras (:mod:`training.autodecoder.output_views`, built on first use: about 0.4 s a head at 256 px on a
shared core, measured), so the super-resolution is asked for detail at every pixel it writes; earlier polishes (and the
joint step) box-filtered the output to the bank's 128 px view, which left samples at half the sharpness
of a bicubic upsampling of a perfect neural render.

The polish reads the run's newest checkpoint and writes the same step's checkpoint back with new
super-resolution weights (and their Adam state left untouched); the codes, the field and the joint
step's optimiser state are unchanged, so the joint training can resume after it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ide3d_core.networks.generator import TriPlanes
from ide3d_core.progress import Cancelled, CancelToken, ProgressFn, report
from training.autodecoder.bank import load_bank
from training.autodecoder.losses import class_weights, laplacian_pyramid_l1, weighted_ce, weighted_l1
from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, Trainer, codes_to_ws
from training.autodecoder.output_views import build_output_views, load_output_views
from training.checkpoint import latest_checkpoint


@torch.no_grad()
def cache_renders(tr: Trainer, chunk: int = 4, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F, h, h], semantic log-probabilities [N, 19, h, h]) of every bank head seen from its
    128 px view's camera, float16."""
    G, bank = tr.G.eval(), tr.bank
    n = bank["cam128"].shape[0]
    feats, sems = [], []
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(n, s + chunk), device=tr.device)
        ws = codes_to_ws(tr.codes(idx), G)
        with torch.autocast(tr.device.type, dtype=torch.bfloat16, enabled=tr.bf16):
            planes = G.planes(ws)
            out = G.render(TriPlanes(planes.semantic, planes.texture), bank["cam128"][idx], ws)
        feats.append(out.features_raw.half())
        sems.append(out.semantic_raw.half())
        report(progress, int(idx[-1]) + 1, n, "rendering the bank heads for the super-resolution", cancel)
    G.train()
    return torch.cat(feats), torch.cat(sems)


def polish_superresolution(run_dir: str | Path, minutes: float, batch: int = 4, lr: float = 1e-3,
                           progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> dict:
    """Train the run's super-resolution on cached renders for ``minutes``; returns a summary dict."""
    run_dir = Path(run_dir)
    cfg = AutoDecoderConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    bank = load_bank(run_dir / "bank", cfg.bank)
    tr = Trainer(run_dir, cfg, bank)
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to polish")
    tr.load(last)
    t0 = time.monotonic()
    res = tr.G.config.img_resolution
    build_output_views(run_dir / "bank", cfg.bank, bank["cam128"], res, progress, cancel)
    views = load_output_views(run_dir / "bank", cfg.bank, res)
    feats, sems = cache_renders(tr, progress=progress, cancel=cancel)
    t_cache = time.monotonic() - t0
    G = tr.G
    cw = class_weights(cfg.small_part_weight)
    opt = torch.optim.Adam(G.superresolution.parameters(), lr=lr, betas=(0.9, 0.99))
    n = feats.shape[0]
    step, losses = 0, []
    start = time.monotonic()
    try:
        while time.monotonic() - start < 60 * minutes:
            rng = np.random.default_rng([cfg.seed, 7, step])
            idx = torch.from_numpy(rng.choice(n, batch, replace=False))
            with torch.no_grad():
                ws = codes_to_ws(tr.codes(idx), G)
            w_sr = ws[:, G.config.num_shape_ws + G.config.num_head_ws:]
            image, semantic = G.superresolution(feats[idx].float(), sems[idx].float(), w_sr)
            img = image.float()
            target, lab = views["img"][idx].float(), views["lab"][idx].long()
            loss_img = (weighted_l1(img.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1), cw[lab])
                        + laplacian_pyramid_l1(img, target))
            if semantic.shape[-1] != res:
                lab = F.interpolate(lab[:, None].float(), size=semantic.shape[-1], mode="nearest")[:, 0].long()
            loss = loss_img + 0.25 * weighted_ce(semantic.permute(0, 2, 3, 1), lab, cw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss_img.detach()))
            step += 1
            report(progress, step, 0, f"super-resolution polish: image loss {losses[-1]:.4f}", cancel)
    except Cancelled:
        pass
    path = tr.save()
    summary = {"checkpoint": str(path), "steps": step, "cache_seconds": round(t_cache, 1), "target_resolution": res,
               "image_loss_first_50": float(np.mean(losses[:50])) if losses else None,
               "image_loss_last_50": float(np.mean(losses[-50:])) if losses else None}
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"sr_polish": summary, "step": tr.step}) + "\n")
    return summary
