# SPDX-License-Identifier: GPL-3.0-or-later
"""Training of the inversion encoders and the canonical editor on the generator's own samples.

Each step draws ``batch_codes`` codes from the frozen generator (canonical-camera conditioning,
truncation ``truncation_psi``), renders every code from ``views`` cameras (multi-view augmentation;
poses from :class:`~ide3d_core.cameras.PoseDistribution`), takes the argmax of the rendered semantic map
as the mask, and trains the encoder pair ``E(image, mask) -> (ws, yaw/pitch)`` with

* a latent loss: smooth-L1 between predicted and true codes, times ``latent_weight`` (50 as the original);
* a pose loss: MSE of the predicted yaw/pitch (radians);
* a view-consistency loss: the codes predicted from the k views of one code are pulled to their mean
  (the same codes rendered from k views must encode to the same codes);
* a re-render consistency loss: the predicted codes rendered from the same camera must reproduce the
  image (MSE) and the mask (cross-entropy); the gradient flows through the frozen generator.

The canonical editor (``encoder.config.canonical``) is trained the same way but every view is the
canonical front camera (``views`` is forced to 1); the procedure checks every camera label it renders
with and raises if one is not canonical.

**Sample bank** (:func:`render_bank`, ``train_encoders(..., bank=)``): on a CPU a render of the default
generator costs far more than an encoder step, so the codes and their views can be rendered once
(stored at the encoder's input resolution as uint8, resized exactly as the encoder resizes its inputs)
and every step draws a minibatch of codes from the bank. Steps then cost only the encoder's forward and
backward; the re-render terms are left out (they need a generator pass per step), the latent, pose and
view-consistency terms stay. A bank of N codes is N distinct heads; epochs over it repeat them.

A bank can also come from the **procedural heads** (:func:`render_procedural_bank`), for a generator
distilled from them (``training/distill.py``): the input is the exact procedural render and label map
of ``heads_from_latent(z)`` (about ten times cheaper than a generator render on a CPU, and the domain
of the photos the encoders meet in evaluation), the target the generator's codes ``mapping(z)`` of the
same ``z`` (untruncated: the head of ``z`` is the untruncated sample). The encoders then learn to map a
head to the codes the generator was taught to draw it with.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import PoseDistribution, canonical_camera, orbit_camera
from ide3d_core.images import from_uint8, to_uint8
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class EncoderTrainingPolicy:
    """Schedule and loss weights of :func:`train_encoders`."""

    steps: int = 20000
    batch_codes: int = 4  #: distinct codes per step
    views: int = 2  #: cameras per code (multi-view augmentation); 1 for the canonical editor
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    truncation_psi: float = 0.8
    latent_weight: float = 50.0
    pose_weight: float = 1.0
    view_consistency_weight: float = 10.0
    rerender_weight: float = 1.0
    semantic_weight: float = 0.1
    poses: PoseDistribution = PoseDistribution()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_codes < 1 or self.views < 1:
            raise ValueError("steps >= 0, batch_codes >= 1 and views >= 1 are required")


@dataclass
class EncoderTrainingResult:
    """Per-step loss terms (``history[i]`` is a dict of floats) and the wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _canonical_label() -> np.ndarray:
    return canonical_camera().label()


def sample_views(policy: EncoderTrainingPolicy, rng: np.random.Generator, n: int, canonical: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n, 25) float32, yaw_pitch (n, 2) radians) of the training cameras."""
    if canonical:
        return np.repeat(_canonical_label()[None], n, 0), np.zeros((n, 2), np.float32)
    angles = policy.poses.sample_angles(rng, n)
    labels = np.stack([orbit_camera(float(y), float(p), policy.poses.radius, focal=policy.poses.focal).label()
                       for y, p in angles])
    return labels.astype(np.float32), angles.astype(np.float32)


def check_canonical(labels: torch.Tensor) -> None:
    """Raise ``RuntimeError`` unless every row of labels [N, 25] is the canonical camera's label."""
    ref = torch.from_numpy(_canonical_label()).to(labels.device, labels.dtype)
    if not bool(torch.all(torch.abs(labels - ref) <= 1e-6)):
        raise RuntimeError("the canonical editor may only be trained on canonical-camera views")


def encoder_losses(generator: nn.Module | None, encoder: nn.Module, ws: torch.Tensor, labels: torch.Tensor | None,
                   yaw_pitch: torch.Tensor, views: int, policy: EncoderTrainingPolicy,
                   image: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one batch: ``ws`` [B*views, num_ws, w_dim] (each code repeated ``views`` times,
    consecutively), ``labels`` [B*views, 25], ``yaw_pitch`` [B*views, 2]. With ``image``/``mask`` given
    (a sample bank) nothing is rendered and the re-render terms are skipped."""
    banked = image is not None
    if not banked:
        with torch.no_grad():
            out = generator(ws, labels)
            image = out.image
            mask = out.semantic.argmax(1)
    rec_ws, pose = encoder(image, mask)
    terms = {"latent": policy.latent_weight * F.smooth_l1_loss(rec_ws, ws),
             "pose": policy.pose_weight * F.mse_loss(pose, yaw_pitch)}
    if views > 1 and policy.view_consistency_weight:
        grouped = rec_ws.view(-1, views, *rec_ws.shape[1:])
        terms["views"] = policy.view_consistency_weight * F.mse_loss(grouped, grouped.mean(1, keepdim=True).expand_as(grouped))
    if not banked and (policy.rerender_weight or policy.semantic_weight):
        rec = generator(rec_ws, labels)
        if policy.rerender_weight:
            terms["rerender"] = policy.rerender_weight * F.mse_loss(rec.image, image)
        if policy.semantic_weight:
            terms["semantic"] = policy.semantic_weight * F.cross_entropy(rec.semantic, mask)
    return terms


@dataclass
class SampleBank:
    """Generator samples rendered once (see the module docstring). N codes, V views each, inputs at the
    encoder resolution R.

    Attributes:
        ws: [N, num_ws, w_dim] float32 codes. images: [N, V, 3, R, R] uint8 (0..255 for -1..1).
        masks: [N, V, R, R] uint8 label ids. yaw_pitch: [N, V, 2] float32 radians.
        canonical: every view is the canonical camera.
    """

    ws: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    yaw_pitch: torch.Tensor
    canonical: bool

    def __len__(self) -> int:
        return int(self.ws.shape[0])


def _to_bank_images(image: torch.Tensor) -> torch.Tensor:
    """[N, 3, R, R] in [-1, 1] -> uint8 0..255 on the CPU."""
    return to_uint8(image)


def _fill_bank(generator: nn.Module, codes: int, views: int, canonical: bool, policy: EncoderTrainingPolicy,
               seed: int, chunk: int, render, truncation_psi: float, progress, cancel, message: str) -> SampleBank:
    """The loop both bank makers share: draw ``z`` and the cameras, codes ``mapping(z)``, and inputs from
    ``render(z [n, z_dim] on the CPU, ws [n, num_ws, w_dim], labels [n*views, 25] float32 numpy)`` ->
    (image [n*views, 3, R, R] in [-1, 1], ids [n*views, R, R])."""
    views = 1 if canonical else views
    dev = next(generator.parameters()).device
    generator.eval().requires_grad_(False)
    rng = np.random.default_rng(seed)
    zgen = torch.Generator(device="cpu").manual_seed(seed)
    ws_all, imgs, masks, poses = [], [], [], []
    for start in range(0, codes, chunk):
        n = min(chunk, codes - start)
        z = torch.randn(n, generator.z_dim, generator=zgen)
        with torch.no_grad():
            c_map = torch.from_numpy(_canonical_label()).to(dev)[None].expand(n, -1)
            ws = generator.mapping(z.to(dev), c_map, truncation_psi=truncation_psi)
        labels_np, yp_np = sample_views(policy, rng, n * views, canonical)
        if canonical:
            check_canonical(torch.from_numpy(labels_np))
        with torch.no_grad():
            image, ids = render(z, ws, labels_np)
        r = image.shape[-1]
        imgs.append(_to_bank_images(image).view(n, views, 3, r, r))
        masks.append(ids.to(torch.uint8).cpu().view(n, views, r, r))
        ws_all.append(ws.float().cpu())
        poses.append(torch.from_numpy(yp_np).view(n, views, 2))
        report(progress, start + n, codes, message, cancel)
    return SampleBank(torch.cat(ws_all), torch.cat(imgs), torch.cat(masks), torch.cat(poses), canonical)


def render_bank(generator: nn.Module, codes: int, views: int, resolution: int, canonical: bool,
                policy: EncoderTrainingPolicy = EncoderTrainingPolicy(), chunk: int = 8,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                quality: str = "full") -> SampleBank:
    """Render ``codes`` codes (truncation ``policy.truncation_psi``, seed from ``policy.seed``) from
    ``views`` cameras each (1 canonical view when ``canonical``) into a :class:`SampleBank`.

    ``quality``: :data:`ide3d_core.fast_render.QUALITIES`; "full" (default) renders through the fast path
    (empty-space skipping; the same images to >= 40 dB and labels, tested against the reference on the
    bundled model), each code's tri-planes once for all its views; "reference" through
    :meth:`Generator.render`."""
    from ide3d_core.encoders import resize_inputs
    from ide3d_core.fast_render import render_quality

    v = 1 if canonical else views
    dev = next(generator.parameters()).device

    def render(z, ws, labels_np):
        planes = generator.planes(ws)
        if v > 1:
            planes = type(planes)(planes.semantic.repeat_interleave(v, 0), planes.texture.repeat_interleave(v, 0))
        out = render_quality(generator, planes, torch.from_numpy(labels_np).to(dev), ws.repeat_interleave(v, 0),
                             quality)
        return resize_inputs(out.image, out.semantic.argmax(1), resolution)

    return _fill_bank(generator, codes, views, canonical, policy, policy.seed + 7919, chunk, render,
                      policy.truncation_psi, progress, cancel, "rendering the sample bank")


def render_procedural_bank(generator: nn.Module, codes: int, views: int, resolution: int, canonical: bool,
                           policy: EncoderTrainingPolicy = EncoderTrainingPolicy(), chunk: int = 32,
                           antialias: int = 2, progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None) -> SampleBank:
    """A :class:`SampleBank` of procedural heads (see the module docstring): ``codes`` latents
    ``z ~ N(0, I)`` (seed from ``policy.seed``), inputs = renders of ``heads_from_latent(z)`` at
    ``resolution`` from ``views`` cameras (the canonical one when ``canonical``), targets =
    ``generator.mapping(z)`` (untruncated)."""
    from training.procedural import heads_from_latent, median_padded, render_heads

    v = 1 if canonical else views

    def render(z, ws, labels_np):
        r = render_heads(heads_from_latent(median_padded(z.repeat_interleave(v, 0))), torch.from_numpy(labels_np),
                         resolution, antialias=antialias)
        return r.image, r.labels

    return _fill_bank(generator, codes, views, canonical, policy, policy.seed + 104729, chunk, render, 1.0,
                      progress, cancel, "rendering procedural heads")


def render_autodecoder_bank(generator: nn.Module, run_dir, views: int, resolution: int, canonical: bool,
                            policy: EncoderTrainingPolicy = EncoderTrainingPolicy(), chunk: int = 32,
                            antialias: int = 2, progress: ProgressFn | None = None,
                            cancel: CancelToken | None = None) -> SampleBank:
    """A :class:`SampleBank` of an auto-decoder run's heads (training/autodecoder): inputs = exact
    procedural renders of every bank head from ``views`` cameras (the canonical one when ``canonical``),
    targets = the head's learned codes. The encoders then map a head to the code the generator learned
    to draw it with (an auto-decoded model has no "code of z" besides these)."""
    import json
    from pathlib import Path

    from training.autodecoder.bank import bank_latents
    from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, codes_to_ws
    from training.autodecoder.prior import run_codes
    from training.procedural import heads_from_latent, median_padded, render_heads

    cfg = AutoDecoderConfig.from_dict(json.loads((Path(run_dir) / CONFIG_FILE).read_text()))
    _, codes, _ = run_codes(run_dir)
    z = bank_latents(cfg.bank)
    v = 1 if canonical else views
    rng = np.random.default_rng(policy.seed + 15485863)
    ws_all, imgs, masks, poses = [], [], [], []
    for start in range(0, len(z), chunk):
        n = min(chunk, len(z) - start)
        labels_np, yp_np = sample_views(policy, rng, n * v, canonical)
        heads = heads_from_latent(median_padded(z[start:start + n].repeat_interleave(v, 0)))
        r = render_heads(heads, torch.from_numpy(labels_np), resolution, antialias=antialias)
        imgs.append(_to_bank_images(r.image).view(n, v, 3, resolution, resolution))
        masks.append(r.labels.to(torch.uint8).view(n, v, resolution, resolution))
        ws_all.append(codes_to_ws(codes[start:start + n].float(), generator).cpu())
        poses.append(torch.from_numpy(yp_np).view(n, v, 2))
        report(progress, start + n, len(z), "rendering the auto-decoder's heads", cancel)
    return SampleBank(torch.cat(ws_all), torch.cat(imgs), torch.cat(masks), torch.cat(poses), canonical)


def concat_banks(*banks: SampleBank) -> SampleBank:
    """One bank holding every code of ``banks`` (equal views per code and the same ``canonical``)."""
    if len({b.canonical for b in banks}) != 1 or len({b.images.shape[1:] for b in banks}) != 1:
        raise ValueError("banks to concatenate must have the same views, resolution and canonical flag")
    return SampleBank(torch.cat([b.ws for b in banks]), torch.cat([b.images for b in banks]),
                      torch.cat([b.masks for b in banks]), torch.cat([b.yaw_pitch for b in banks]), banks[0].canonical)


def train_encoders(generator: nn.Module, encoder: nn.Module, policy: EncoderTrainingPolicy = EncoderTrainingPolicy(),
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   bank: SampleBank | None = None) -> EncoderTrainingResult:
    """Train ``encoder`` (in place) against the frozen ``generator``; both on the same device. With a
    ``bank`` the minibatches come from it (``policy.views`` is then the bank's view count)."""
    dev = next(encoder.parameters()).device
    canonical = bool(getattr(encoder.config, "canonical", False))
    views = 1 if canonical else policy.views
    generator.eval().requires_grad_(False)
    encoder.train()
    rng = np.random.default_rng(policy.seed)
    zgen = torch.Generator(device="cpu").manual_seed(policy.seed)
    opt = torch.optim.Adam(encoder.parameters(), lr=policy.lr, betas=policy.betas)
    c_map = torch.from_numpy(_canonical_label()).to(dev)[None].expand(policy.batch_codes, -1)
    result = EncoderTrainingResult()
    pending: list[dict[str, torch.Tensor]] = []
    t0 = time.perf_counter()
    if bank is not None:
        if bank.canonical != canonical:
            raise ValueError("the sample bank's views must be canonical exactly when the encoder is the canonical editor")
        views = int(bank.images.shape[1])
    for step in range(policy.steps):
        if bank is not None:
            idx = torch.randint(len(bank), (policy.batch_codes,), generator=zgen)
            image = from_uint8(bank.images[idx].flatten(0, 1).to(dev))
            mask = bank.masks[idx].flatten(0, 1).to(dev).long()
            terms = encoder_losses(None, encoder, bank.ws[idx].to(dev).repeat_interleave(views, 0), None,
                                   bank.yaw_pitch[idx].flatten(0, 1).to(dev), views, policy, image, mask)
        else:
            z = torch.randn(policy.batch_codes, generator.z_dim, generator=zgen).to(dev)
            with torch.no_grad():
                ws = generator.mapping(z, c_map, truncation_psi=policy.truncation_psi)
            labels_np, yp_np = sample_views(policy, rng, policy.batch_codes * views, canonical)
            labels = torch.from_numpy(labels_np).to(dev)
            if canonical:
                check_canonical(labels)
            terms = encoder_losses(generator, encoder, ws.repeat_interleave(views, 0), labels,
                                   torch.from_numpy(yp_np).to(dev), views, policy)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pending.append({k: v.detach() for k, v in terms.items()} | {"total": loss.detach()})
        if len(pending) == 50 or step + 1 == policy.steps:  # read losses back (a device sync) in bunches
            result.history += [{k: float(v) for k, v in h.items()} for h in pending]
            pending.clear()
        msg = f"loss {result.history[-1]['total']:.4f}" if result.history else ""
        report(progress, step + 1, policy.steps, msg, cancel)
    encoder.eval()
    result.seconds = time.perf_counter() - t0
    return result


def evaluate_latent_loss(generator: nn.Module, encoder: nn.Module, seeds: list[int], canonical: bool,
                         truncation_psi: float = 0.8) -> float:
    """Mean smooth-L1 code error of the encoder on held-out seeds rendered from yaw 0 or +-30 degrees
    (canonical: the front view only)."""
    dev = next(encoder.parameters()).device
    ws = generator.codes_from_seeds(seeds, truncation_psi=truncation_psi).to(dev)
    yaws = [0.0] if canonical else [-math.radians(30), 0.0, math.radians(30)]
    errs = []
    with torch.no_grad():
        for yaw in yaws:
            c = torch.from_numpy(orbit_camera(yaw, 0.0).label()).to(dev)[None].expand(len(seeds), -1)
            out = generator(ws, c)
            rec, _ = encoder(out.image, out.semantic.argmax(1))
            errs.append(float(F.smooth_l1_loss(rec, ws)))
    return float(np.mean(errs))
