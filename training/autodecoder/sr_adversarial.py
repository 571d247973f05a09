# SPDX-License-Identifier: GPL-3.0-or-later
"""Adversarial polish of the super-resolution: a patch discriminator asks it for plausible detail.

Why (issue 14): L1 losses against the exact 256 px renders (:mod:`training.autodecoder.sr_polish`)
teach the super-resolution the *mean* of the details a 64 px render leaves uncertain, i.e. a blur:
samples scored a sharpness ratio of 0.115 against the procedural heads, while a perfect 64 px render
upsampled bicubically scores about 0.20 and the target is 0.6. A discriminator that tells the exact
renders from the super-resolved ones rewards detail of the right statistics, which no per-pixel loss
does.

What is trained: only ``G.superresolution`` (both outputs; the semantic head is kept by its weighted
cross-entropy, as in the L1 polish). The field and the codes are frozen: every bank head's 64 px
features and semantic log-probabilities are rendered once (:func:`~training.autodecoder.sr_polish.
cache_renders`) from its 128 px view's camera, and the targets are the head's exact renders at the
output resolution from the same camera (:mod:`training.autodecoder.output_views`).

One step (``batch`` heads drawn from ``(seed, 11, step)``):

* discriminator: :class:`PatchDiscriminator` on ``[B, 6, R, R]`` = the 256 px image (exact or
  super-resolved) beside the head's 64 px raw neural RGB upsampled bilinearly to ``R`` (the same
  condition for both: a paired, pix2pix-style discriminator, so it judges whether the detail fits the
  content, not the content itself); logistic loss, lazy R1 on the exact images every ``r1_interval``
  steps (``gamma / 2 * interval``);
* super-resolution: ``rec_weight`` x (class-weighted L1 + Laplacian-pyramid L1, the L1 polish's image
  loss, which keeps the content faithful) + ``adv_weight`` x non-saturating loss + ``fm_weight`` x
  feature matching (L1 between the discriminator's hidden features of the super-resolved and of the
  exact image of the same head, pix2pixHD) + ``sem_weight`` x weighted cross-entropy of the semantic
  output against the exact labels.

Like the L1 polish it reads the run's newest checkpoint and writes the same step's checkpoint back with
new super-resolution weights (codes, field and the joint step's optimiser state unchanged). The
discriminator, its optimiser and the polish's own super-resolution optimiser live in
``RUN/sr_adversarial.safetensors``, so a later sitting resumes the game instead of starting a new
discriminator (the super-resolution's optimiser state is resumed only on the same checkpoint step).

Measured (2026-12-02, CPU, one shared core at about 20 %: 11-15 s a step of 4 heads): on the run
``ad2``'s step-403 checkpoint, 80 steps on the first 64 bank heads, the adversarial polish (adversarial
weight 0.05 or 0.2, feature matching 1 or 2) and the same polish with both weights 0 (L1 only) gave the
same figures within the noise (``scripts/eval_model.py --samples 8``: sharpness ratio 0.119 for all
three vs 0.109 unpolished; fit 19.51-19.53 dB vs 19.41): the discriminator was still near chance
(logistic loss 1.365, chance 1.386), so its gradient had not yet shaped the super-resolution. It needs
far more steps than a CPU sitting gives before it can be said to help.

A longer run (2026-12-03: 95 minutes on one quiet thread, 2,943 steps of 4 heads over the whole 512-head
bank of ``ad2``, default hyper-parameters) did move it: the sample sharpness ratio went from 0.127 (the L1
polish on the same field) to 0.149 (``scripts/eval_model.py --samples 24``), and SWD improved at two of the
three yaws. The fit PSNR went from 20.13 to 20.57 dB, against 20.83 for the shipped model. The
discriminator's logistic loss was 1.36 at the end, still near chance. Full table in docs/training.md
("Candidates evaluated and not shipped").
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.progress import Cancelled, CancelToken, ProgressFn, report
from training.autodecoder.bank import CHUNK, BankSpec, bank_latents, load_bank
from training.autodecoder.losses import class_weights, laplacian_pyramid_l1, weighted_ce, weighted_l1
from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, Trainer, codes_to_ws
from training.autodecoder.output_views import build_output_views, load_output_views
from training.autodecoder.sr_polish import cache_renders
from training.checkpoint import (latest_checkpoint, load_checkpoint, load_module, load_optimizer,
                                 module_tensors, optimizer_tensors, save_checkpoint)
from training.losses import discriminator_loss, generator_loss

#: The discriminator's state beside the run's checkpoints.
STATE_FILE = "sr_adversarial.safetensors"


class DiscriminatorStateError(ValueError):
    """``RUN/sr_adversarial.safetensors`` does not fit the discriminator asked for."""


@dataclass(frozen=True)
class AdversarialPolishConfig:
    """Hyper-parameters of the adversarial polish (the figures in the module's report, issue 14).

    ``channels``: the discriminator's strided 4x4 convolutions (each halves the resolution; a last 3x3
    convolution gives one logit per patch, receptive field 46 px for three). ``heads``: polish on the
    first ``heads`` bank heads only (development; None: all)."""

    batch: int = 4
    lr: float = 5e-4
    d_lr: float = 1e-3
    rec_weight: float = 1.0
    adv_weight: float = 0.05
    fm_weight: float = 1.0
    sem_weight: float = 0.25
    r1_gamma: float = 1.0
    r1_interval: int = 4
    channels: tuple[int, ...] = (32, 64, 128)
    heads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if self.batch < 1 or self.r1_interval < 1:
            raise ValueError("batch and r1_interval must be >= 1")


class PatchDiscriminator(nn.Module):
    """``x [B, in_channels, R, R] -> (logits [B, 1, R / 2^k, R / 2^k], hidden features)``: k strided 4x4
    convolutions with leaky ReLU (no normalisation: R1 keeps it smooth), then a 3x3 convolution to one
    logit per patch. Weights from ``torch.Generator().manual_seed(seed)``."""

    def __init__(self, in_channels: int = 6, channels: tuple[int, ...] = (32, 64, 128), seed: int = 0) -> None:
        super().__init__()
        layers, c = [], in_channels
        for out in channels:
            layers.append(nn.Conv2d(c, out, 4, stride=2, padding=1))
            c = out
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in [*self.layers, self.out]:
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for conv in self.layers:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


def discriminator_input(image: torch.Tensor, low_rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 6, R, R]``: the image ``[B, 3, R, R]`` beside the raw neural RGB ``[B, 3, r, r]`` upsampled
    bilinearly (``align_corners=False``) to R."""
    up = F.interpolate(low_rgb.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([image.float(), up], 1)


def feature_matching(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the L1 between paired hidden features (the real ones detached)."""
    return torch.stack([(a - b.detach()).abs().mean() for a, b in zip(fake, real)]).mean()


def r1_patch(d: PatchDiscriminator, real: torch.Tensor) -> torch.Tensor:
    """R1 per patch at the exact images ``real [B, 6, R, R]``: mean over the batch of
    ``|| d sum(D(x)) / dx ||^2`` divided by the number P of patch logits of an image (graph kept for the
    backward). The logits' loss is a mean over patches, so the penalty is too: undivided, it grew with P
    (measured: 344 at P = 32 x 32 on the first dev run, 500 times the logistic loss, and the
    discriminator stayed at chance for 80 steps)."""
    x = real.detach().requires_grad_(True)
    logits, _ = d(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.square().flatten(1).sum(1).mean() / logits[0].numel()


def laplacian_sharpness(images: torch.Tensor) -> float:
    """Mean |Laplacian| of the grey images ``[B, 3, H, W]`` (the measure of ``scripts/eval_model.py``)."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(images.float().mean(1, keepdim=True), k)[:, 0].abs().mean())


def _state_tensors(d: nn.Module, opt_d: torch.optim.Optimizer, opt_sr: torch.optim.Optimizer,
                   info: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    t1, d1 = optimizer_tensors(opt_d, "opt_d")
    t2, d2 = optimizer_tensors(opt_sr, "opt_sr")
    return {**module_tensors(d, "D"), **t1, **t2}, {**info, "opt_d": d1, "opt_sr": d2}


def load_state(path: Path, d: nn.Module, opt_d: torch.optim.Optimizer, opt_sr: torch.optim.Optimizer,
               checkpoint_step: int) -> dict[str, Any]:
    """Resume the discriminator (and the SR optimiser when ``checkpoint_step`` matches) from ``path``;
    returns the saved info (``steps``: polish steps so far). Raises :class:`DiscriminatorStateError`."""
    tensors, state = load_checkpoint(path)
    try:
        load_module(d, tensors, "D")
    except Exception as exc:  # strict load: another architecture
        raise DiscriminatorStateError(f"{path}: {exc}; delete it to start a new discriminator") from None
    load_optimizer(opt_d, tensors, state["opt_d"], "opt_d")
    if state.get("checkpoint_step") == checkpoint_step:
        load_optimizer(opt_sr, tensors, state["opt_sr"], "opt_sr")
    return state


def output_views_of_first(folder: Path, spec: BankSpec, cameras: torch.Tensor, resolution: int, n: int,
                          progress: ProgressFn | None = None,
                          cancel: CancelToken | None = None) -> dict[str, torch.Tensor]:
    """The output views of (at least) the first ``n`` bank heads, building only the chunks they need:
    a bank spec cut to whole chunks draws the same first latents (checked), so its chunks are the full
    bank's."""
    size = min(spec.size, math.ceil(n / CHUNK) * CHUNK)
    sub = dataclasses.replace(spec, size=size)
    if size < spec.size and not torch.equal(bank_latents(sub), bank_latents(spec)[:size]):
        sub = spec  # (a torch whose draws are not prefix-stable: build them all)
    build_output_views(folder, sub, cameras[:sub.size], resolution, progress, cancel)
    return load_output_views(folder, sub, resolution)


def polish_superresolution_adversarial(run_dir: str | Path, minutes: float,
                                       cfg: AdversarialPolishConfig = AdversarialPolishConfig(),
                                       progress: ProgressFn | None = None,
                                       cancel: CancelToken | None = None) -> dict:
    """Train the run's super-resolution adversarially for ``minutes`` (after the one-off caching);
    write the same step's checkpoint back and the discriminator's state; returns a summary dict."""
    run_dir = Path(run_dir)
    acfg = AutoDecoderConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    bank = load_bank(run_dir / "bank", acfg.bank)
    # the codes come from the checkpoint: skip the run's own initialisation (an encoder pass over the bank)
    tr = Trainer(run_dir, dataclasses.replace(acfg, init_codes="mapping"), bank)
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to polish")
    tr.load(last)
    G = tr.G
    for p in G.parameters():
        p.requires_grad_(False)
    for p in G.superresolution.parameters():
        p.requires_grad_(True)
    t0 = time.monotonic()
    res = G.config.img_resolution
    n = acfg.bank.size if cfg.heads is None else min(cfg.heads, acfg.bank.size)
    views = output_views_of_first(run_dir / "bank", acfg.bank, bank["cam128"], res, n, progress, cancel)
    sub = types.SimpleNamespace(G=G, cfg=acfg, codes=tr.codes, bank={"cam128": bank["cam128"][:n]},
                                device=tr.device, bf16=tr.bf16)
    feats, sems = cache_renders(sub, progress=progress, cancel=cancel)
    with torch.no_grad():
        w_all = codes_to_ws(tr.codes(torch.arange(n)), G)[:, G.config.num_shape_ws + G.config.num_head_ws:]
    t_cache = time.monotonic() - t0

    D = PatchDiscriminator(6, cfg.channels, cfg.seed)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=(0.0, 0.99))
    opt_sr = torch.optim.Adam(G.superresolution.parameters(), lr=cfg.lr, betas=(0.5, 0.99))
    state_path = run_dir / STATE_FILE
    done = 0
    if state_path.exists():
        done = int(load_state(state_path, D, opt_d, opt_sr, tr.step)["steps"])
    cw = class_weights(acfg.small_part_weight)
    batch = min(cfg.batch, n)
    logs: dict[str, list[float]] = {k: [] for k in ("rec", "adv", "fm", "d", "r1", "sharp_ratio")}
    step = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < 60 * minutes:
            k = done + step
            rng = np.random.default_rng([cfg.seed, 11, k])
            idx = torch.from_numpy(rng.choice(n, batch, replace=False))
            f, s, w_sr = feats[idx].float(), sems[idx].float(), w_all[idx]
            target, lab = views["img"][idx].float(), views["lab"][idx].long()
            image, semantic = G.superresolution(f, s, w_sr)
            img = image.float()
            real_in, fake_in = discriminator_input(target, f[:, :3]), discriminator_input(img, f[:, :3])

            # discriminator
            D.requires_grad_(True)
            real_logits, _ = D(real_in)
            fake_logits, _ = D(fake_in.detach())
            loss_d = discriminator_loss(real_logits, fake_logits)
            if k % cfg.r1_interval == 0 and cfg.r1_gamma > 0:
                r1 = r1_patch(D, real_in)
                loss_d = loss_d + 0.5 * cfg.r1_gamma * cfg.r1_interval * r1
                logs["r1"].append(float(r1.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # super-resolution
            D.requires_grad_(False)
            fake_logits, fake_feats = D(fake_in)
            with torch.no_grad():
                _, real_feats = D(real_in)
            loss_rec = (weighted_l1(img.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1), cw[lab])
                        + laplacian_pyramid_l1(img, target))
            loss_adv = generator_loss(fake_logits)
            loss_fm = feature_matching(fake_feats, real_feats)
            if semantic.shape[-1] != res:
                lab = F.interpolate(lab[:, None].float(), size=semantic.shape[-1], mode="nearest")[:, 0].long()
            loss = (cfg.rec_weight * loss_rec + cfg.adv_weight * loss_adv + cfg.fm_weight * loss_fm
                    + cfg.sem_weight * weighted_ce(semantic.permute(0, 2, 3, 1), lab, cw))
            opt_sr.zero_grad(set_to_none=True)
            loss.backward()
            opt_sr.step()

            for key, v in (("rec", loss_rec), ("adv", loss_adv), ("fm", loss_fm), ("d", loss_d)):
                logs[key].append(float(v.detach()))
            logs["sharp_ratio"].append(laplacian_sharpness(img.detach()) / max(laplacian_sharpness(target), 1e-8))
            step += 1
            report(progress, step, 0, f"adversarial super-resolution polish: rec {logs['rec'][-1]:.4f} "
                   f"adv {logs['adv'][-1]:.3f} D {logs['d'][-1]:.3f}", cancel)
    except Cancelled:
        pass
    G.requires_grad_(True)
    path = tr.save()
    info = {"steps": done + step, "checkpoint_step": tr.step, "config": dataclasses.asdict(cfg)}
    save_checkpoint(state_path, *_state_tensors(D, opt_d, opt_sr, info))

    def mean(key: str, first: bool) -> float | None:
        v = logs[key][:50] if first else logs[key][-50:]
        return round(float(np.mean(v)), 5) if v else None

    summary = {"checkpoint": str(path), "steps": step, "total_steps": done + step, "heads": n,
               "cache_seconds": round(t_cache, 1), "target_resolution": res,
               **{f"{k}_first_50": mean(k, True) for k in logs}, **{f"{k}_last_50": mean(k, False) for k in logs}}
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"sr_adversarial": summary, "step": tr.step}) + "\n")
    return summary
