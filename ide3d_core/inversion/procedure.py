# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion (IDE-3D section 3.3): encoder initialisation, code optimisation, pivotal tuning.

``invert`` takes one portrait image (and optionally its label mask and camera) and returns an
:class:`InversionResult`: the pivot codes, the source camera, the pivotal-tuned generator (stored as a
:class:`~ide3d_core.portrait.WeightDelta` from the base model) and per-stage measurements.

Stages (each can be switched off through :class:`InversionPolicy`):

1. **Encoder initialisation** -- the texture encoder gives ``w_t`` and the camera's yaw/pitch, the
   semantic encoder gives ``w_s`` from the mask. Without an encoder the codes start at ``w_avg``.
2. **Code optimisation** in W (one code repeated) or W+ (one code per layer), Adam with the PTI-style
   learning-rate ramp and decaying code noise; the generator is frozen.
3. **Pivotal tuning** of the generator weights with the codes frozen (PTI), Adam on all weights.

Loss (no downloaded weights needed): ``l2 * MSE + ssim * (1 - MS-SSIM) + semantic * CE(rendered
semantic logits, mask)`` plus ``lpips * LPIPS`` when the caller passes an LPIPS module (its weights are
the user's to supply).

Masks: when ``mask`` is None the ``parser`` callable (image -> label ids) is used if given (the project's
segmentation network once it exists); otherwise the mask is the generator's own semantic render of the
encoder's initial codes, and the semantic loss is switched off (it would only pull toward the start).

Camera: when ``camera`` is None the encoder's predicted yaw/pitch give an orbit camera (radius 2.7,
pivot (0, 0, 0.2)); without an encoder the canonical camera is used (noted in the result).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import canonical_camera, orbit_camera
from ide3d_core.inversion.losses import ms_ssim, psnr, semantic_cross_entropy
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.portrait import (EditRecord, Portrait, PortraitState, WeightDelta,
                                 generator_fingerprint)
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class InversionPolicy:
    """Steps, learning rates and loss weights of :func:`invert`.

    Defaults follow PTI's schedule scaled to a CPU-friendly budget (PTI: 450 projection + 350 tuning
    steps, lr 0.01 with ramps, tuning lr 3e-4).
    """

    use_encoder: bool = True
    code_space: str = "w+"  #: "w" (one code repeated) or "w+" (one per layer)
    optimise_steps: int = 200
    optimise_lr: float = 0.01
    lr_rampup: float = 0.05  #: fraction of steps with a linear learning-rate ramp up
    lr_rampdown: float = 0.25  #: fraction of steps with a cosine ramp down
    code_noise: float = 0.05  #: initial code noise, times the codes' std; decays to 0 at 75 % of steps
    tune_steps: int = 100
    tune_lr: float = 3e-4
    l2_weight: float = 1.0
    ssim_weight: float = 0.5
    semantic_weight: float = 0.1
    lpips_weight: float = 1.0  #: used only when an LPIPS module is passed
    delta_dtype: str = "float16"  #: dtype of the stored weight difference
    seed: int = 0  #: seed of the code noise

    def __post_init__(self) -> None:
        if self.code_space not in ("w", "w+"):
            raise ValueError(f"code_space must be 'w' or 'w+', got {self.code_space!r}")
        if self.optimise_steps < 0 or self.tune_steps < 0:
            raise ValueError("step counts must be >= 0")


@dataclass(eq=False)
class InversionResult:
    """What :func:`invert` found.

    Attributes:
        ws: [1, num_ws, w_dim] pivot codes (after optimisation).
        ws_init: [1, num_ws, w_dim] codes after the encoder stage (or ``w_avg``).
        camera: (25,) float32 label of the source view.
        generator: the generator to render with: ``delta.apply(base)`` (bit-identical to what a saved
            document rebuilds), or the base model when there was no tuning.
        delta: the tuned weights as a difference from the base (None without tuning).
        mask: (H, W) uint8 label ids used (given, parsed or self-rendered); mask_source says which.
        stages: per stage name -> {"psnr": dB on the source view, "loss": final loss, "seconds": time}.
        notes: human-readable remarks (fallbacks taken).
    """

    ws: torch.Tensor
    ws_init: torch.Tensor
    camera: np.ndarray
    generator: nn.Module
    delta: Optional[WeightDelta]
    mask: np.ndarray
    mask_source: str
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def portrait(self, base: nn.Module, source_image: np.ndarray | None = None,
                 source_mask: np.ndarray | None = None, generator_config: dict[str, Any] | None = None,
                 model_hint: str | None = None, params: dict[str, Any] | None = None) -> Portrait:
        """A portrait document (history = one "invert" record) for this result."""
        rec = EditRecord("invert", {"stages": self.stages, "mask_source": self.mask_source, **(params or {})},
                         PortraitState(self.ws.detach().float().cpu().clone()))
        return Portrait(camera=self.camera, generator_config=generator_config or {},
                        base_fingerprint=generator_fingerprint(base), history=(rec,), delta=self.delta,
                        source_image=source_image, source_mask=source_mask, model_hint=model_hint)


def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> [1, 3, H, W] float32 in [-1, 1]; tensors [3,H,W]/[1,3,H,W] pass through."""
    if torch.is_tensor(image):
        t = image.float()
        return t[None] if t.ndim == 3 else t
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def _lr_at(step: int, total: int, policy: InversionPolicy, base_lr: float) -> float:
    t = step / max(total, 1)
    ramp_down = min(1.0, (1.0 - t) / policy.lr_rampdown) if policy.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
    if policy.lr_rampup > 0:
        ramp *= min(1.0, t / policy.lr_rampup)
    return base_lr * max(ramp, 1e-3)


class _Objective:
    """The inversion loss of one target view."""

    def __init__(self, target: torch.Tensor, labels: torch.Tensor, camera: torch.Tensor,
                 policy: InversionPolicy, use_semantic: bool, lpips: Optional[nn.Module]) -> None:
        self.target, self.labels, self.camera = target, labels, camera
        self.policy, self.use_semantic, self.lpips = policy, use_semantic, lpips

    def __call__(self, generator: nn.Module, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = generator(ws, self.camera)
        img = out.image
        p = self.policy
        loss = p.l2_weight * F.mse_loss(img, self.target)
        if p.ssim_weight and min(img.shape[-2:]) >= 11:
            loss = loss + p.ssim_weight * (1.0 - ms_ssim(img, self.target).mean())
        if self.use_semantic and p.semantic_weight:
            loss = loss + p.semantic_weight * semantic_cross_entropy(out.semantic, self.labels)
        if self.lpips is not None and p.lpips_weight:
            loss = loss + p.lpips_weight * self.lpips(img, self.target).mean()
        return loss, img


def _check_labels(mask: np.ndarray, size: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W) label ids, got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() >= NUM_CLASSES):
        raise ValueError(f"mask ids must be in 0..{NUM_CLASSES - 1}")
    t = torch.from_numpy(m.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].to(torch.uint8).numpy()


def invert(generator: nn.Module, image: np.ndarray | torch.Tensor, mask: np.ndarray | None = None,
           camera: np.ndarray | None = None, encoder: nn.Module | None = None,
           policy: InversionPolicy = InversionPolicy(), lpips: nn.Module | None = None,
           parser: Callable[[torch.Tensor], np.ndarray] | None = None,
           progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InversionResult:
    """Invert one portrait (see the module docstring).

    Args:
        generator: the base generator (left unchanged; tuning works on a copy).
        image: (H, W, 3) uint8 RGB or [1, 3, H, W] float in [-1, 1]; resized to the generator's size.
        mask: (H, W) label ids of the image, or None.
        camera: (25,) packed label of the image's camera, or None (predicted by the encoder).
        encoder: the standard :class:`~ide3d_core.encoders.HybridEncoder`, or None.
    """
    dev = next(generator.parameters()).device
    size = int(generator.img_resolution)
    target = image_to_tensor(image).to(dev)
    if target.shape[-2:] != (size, size):
        target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=target.shape[-1] > size)
    base = generator.eval()
    notes: list[str] = []
    stages: dict[str, dict[str, float]] = {}
    total = policy.optimise_steps + policy.tune_steps + 1
    use_encoder = policy.use_encoder and encoder is not None
    if policy.use_encoder and encoder is None:
        notes.append("no encoder given: codes start at the average code")

    # -- stage 1: initial codes, camera and mask ---------------------------------------------------
    t0 = time.perf_counter()
    ns = int(generator.num_shape_ws)
    w_avg = generator.mapping.w_avg.detach().float().reshape(1, 1, -1)
    ws_init = w_avg.expand(1, int(generator.num_ws), -1).clone()
    mask_source = "given"
    with torch.no_grad():
        pose = None
        if use_encoder:
            w_t, pose = encoder.encode_texture(target)
            ws_init[:, ns:] = w_t.to(ws_init.dtype)
        if camera is None:
            if pose is not None:
                yaw = float(pose[0, 0])
                pitch = float(np.clip(float(pose[0, 1]), -math.radians(60), math.radians(60)))
                camera = orbit_camera(yaw, pitch).label()
            else:
                camera = canonical_camera().label()
                notes.append("no camera and no encoder: the canonical camera is assumed")
        camera = np.asarray(camera, dtype=np.float32).reshape(25)
        c = torch.from_numpy(camera.copy()).to(dev)[None]
        if mask is not None:
            labels_np = _check_labels(mask, size)
        elif parser is not None:
            labels_np, mask_source = _check_labels(parser(target), size), "parser"
        else:
            labels_np = base(ws_init, c).semantic[0].argmax(0).to(torch.uint8).cpu().numpy()
            mask_source = "self"
            notes.append("no mask and no parser: the generator's own semantic render of the initial "
                         "codes is used, semantic loss off")
        labels = torch.from_numpy(labels_np.astype(np.int64)).to(dev)[None]
        if use_encoder:
            ws_init[:, :ns] = encoder.encode_shape(labels).to(ws_init.dtype)
    objective = _Objective(target, labels, c, policy, mask_source != "self", lpips)
    with torch.no_grad():
        loss0, img0 = objective(base, ws_init)
    stages["init"] = {"psnr": float(psnr(img0, target)), "loss": float(loss0),
                      "seconds": time.perf_counter() - t0}
    report(progress, 1, total, "initialised", cancel)

    # -- stage 2: code optimisation ---------------------------------------------------------------
    t0 = time.perf_counter()
    ws = ws_init.clone()
    if policy.optimise_steps:
        gen = torch.Generator(device=dev).manual_seed(policy.seed)
        if policy.code_space == "w":
            var = ws_init.mean(1, keepdim=True).clone().requires_grad_(True)
            expand = lambda v: v.expand(-1, ws_init.shape[1], -1)  # noqa: E731
        else:
            var = ws_init.clone().requires_grad_(True)
            expand = lambda v: v  # noqa: E731
        std = float(ws_init.std()) if ws_init.numel() > 1 else 1.0
        opt = torch.optim.Adam([var], lr=policy.optimise_lr, betas=(0.9, 0.999))
        for step in range(policy.optimise_steps):
            lr = _lr_at(step, policy.optimise_steps, policy, policy.optimise_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            decay = max(0.0, 1.0 - step / (0.75 * policy.optimise_steps)) ** 2
            noise = torch.randn(var.shape, generator=gen, device=dev) * (std * policy.code_noise * decay)
            loss, _ = objective(base, expand(var + noise))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # the loss is read back (a device sync) only every 10th step
            msg = f"codes loss {loss.item():.4f}" if progress is not None and step % 10 == 0 else "codes"
            report(progress, 2 + step, total, msg, cancel)
        ws = expand(var.detach()).clone()
    with torch.no_grad():
        loss1, img1 = objective(base, ws)
    stages["optimise"] = {"psnr": float(psnr(img1, target)), "loss": float(loss1),
                          "seconds": time.perf_counter() - t0}

    # -- stage 3: pivotal tuning -------------------------------------------------------------------
    tuned_module: nn.Module = base
    delta = None
    if policy.tune_steps:
        t0 = time.perf_counter()
        tuned = copy.deepcopy(base).train(False).requires_grad_(True)
        opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=policy.tune_lr,
                               betas=(0.9, 0.999))
        for step in range(policy.tune_steps):
            loss, _ = objective(tuned, ws)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            msg = f"tuning loss {loss.item():.4f}" if progress is not None and step % 10 == 0 else "tuning"
            report(progress, 1 + policy.optimise_steps + step + 1, total, msg, cancel)
        tuned.requires_grad_(False)
        delta = WeightDelta.between(base, tuned, policy.delta_dtype)
        tuned_module = delta.apply(base, check=False).requires_grad_(False).eval()
        with torch.no_grad():
            loss2, img2 = objective(tuned_module, ws)
        stages["tune"] = {"psnr": float(psnr(img2, target)), "loss": float(loss2),
                          "seconds": time.perf_counter() - t0}
    return InversionResult(ws=ws.detach().cpu(), ws_init=ws_init.detach().cpu(), camera=camera,
                           generator=tuned_module, delta=delta, mask=labels_np, mask_source=mask_source,
                           stages=stages, notes=notes)
