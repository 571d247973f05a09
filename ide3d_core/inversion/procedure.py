# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion (IDE-3D section 3.3) from one or more views of one head: encoder initialisation,
code optimisation, pivotal tuning.

:func:`invert_views` takes N >= 1 views (:class:`~ide3d_core.inversion.views.InversionView`: image,
optional mask, optional camera) and returns an :class:`InversionResult`: one set of pivot codes shared by
every view, the primary (most frontal) view's camera, one pivotal-tuned generator (stored as a
:class:`~ide3d_core.portrait.WeightDelta` from the base model), per-stage measurements and a per-view
report (camera, robust weight, residual PSNR per stage, notes). :func:`invert` is the one-view call of the
same procedure (there is no second implementation).

Stages (each can be switched off through :class:`InversionPolicy`):

1. **Initialisation** -- the texture encoder gives ``w_t`` and each view's yaw/pitch, the semantic encoder
   gives ``w_s`` from the mask; both from the primary view (``init="frontal"``) or averaged over the views
   (``init="mean"``). Without an encoder the codes start at the average codes (``Generator.average_codes``).
2. **Code optimisation** in W (one code repeated), "group" (one ``w_s`` repeated over the shape layers and one
   ``w_t`` over the texture layers: the layout an auto-decoded model's codes were learned in) or W+ (one code
   per layer), Adam with the PTI-style
   learning-rate ramp and decaying code noise; the generator is frozen. The first ``coarse_fraction`` of the
   steps render at neural resolution ``coarse_resolution`` (the image is still super-resolved to full size),
   about 2.7x cheaper per step on a CPU; the stage stops early when its loss plateaus.
3. **Pivotal tuning** of the generator weights with the codes frozen (PTI), Adam on all weights, at the
   model's neural resolution (optionally: a learning-rate warm-up, ``tune_rampup``, and coarse first steps,
   ``tune_coarse_fraction``; both off by default, see docs/multiview.md); it also stops early on a plateau.

Loss of one view (no downloaded weights needed): ``l2 * MSE + ssim * (1 - MS-SSIM) + semantic * CE(rendered
semantic logits, mask)`` plus ``lpips * LPIPS`` when the caller passes an LPIPS module (its weights are the
user's to supply). MS-SSIM is computed at ``ssim_resolution`` (2x2 average pooled: a sixth of its full-size
cost, the same structure terms at the scales that matter). The views' losses are combined with Cauchy
weights (:func:`~ide3d_core.inversion.views.robust_weights`), re-computed every step, so a bad view cannot
dominate; with one view the loss is that view's loss.

Masks: when a view's ``mask`` is None the ``parser`` callable (image -> label ids) is used if given;
otherwise the mask is the generator's own semantic render of the initial codes at that view, and that
view's semantic loss is switched off (it would only pull toward the start). A view whose given or parsed
mask shows no face is skipped with a note; no usable view raises
:class:`~ide3d_core.inversion.views.NoUsableViews`.

Camera: when a view's ``camera`` is None the encoder's predicted yaw/pitch give an orbit camera (radius 2.7,
pivot (0, 0, 0.2)); without an encoder the canonical camera is used (noted in the result).

Odd views: after fitting, a view whose residual PSNR is more than ``odd_view_db`` below the median of the
other views' is named in a note (apparently a different person, or a wrong camera).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import canonical_camera, orbit_camera
from ide3d_core.inversion.losses import ms_ssim, psnr
from ide3d_core.inversion.views import (InversionView, NoUsableViews, ViewReport, check_labels, has_face,
                                        image_to_tensor, odd_views, prepare_target, primary_view,
                                        robust_weights, yaw_pitch_deg)
from ide3d_core.portrait import (EditRecord, Portrait, PortraitState, SourceView, WeightDelta,
                                 generator_fingerprint)
from ide3d_core.progress import CancelToken, ProgressFn, report

__all__ = ["InversionPolicy", "InversionResult", "InversionView", "NoUsableViews", "ViewReport",
           "image_to_tensor", "invert", "invert_views", "tune_lr_at", "THOROUGH_POLICY"]


@dataclass(frozen=True)
class InversionPolicy:
    """Steps, learning rates, loss weights and view handling of :func:`invert_views`.

    The default is the fast schedule of issue 15 (see docs/multiview.md for its measurement against
    :data:`THOROUGH_POLICY`, the earlier 200 + 100 step default): encoder initialisation, code steps that
    start at a low neural resolution, early stopping on a plateau, MS-SSIM at half size. PTI itself uses
    450 projection + 350 tuning steps at 512 px on a GPU.
    """

    use_encoder: bool = True
    #: "w" (one code repeated), "group" (one w_s + one w_t: how the auto-decoded model's codes were learned;
    #: +0.5 dB novel-view PSNR over "w+" for 1 and 3 views on the current model, docs/multiview.md) or "w+"
    code_space: str = "group"
    init: str = "frontal"  #: encoder codes from the most "frontal" view, or the "mean" over the views
    optimise_steps: int = 24
    optimise_lr: float = 0.02
    lr_rampup: float = 0.05  #: fraction of steps with a linear learning-rate ramp up
    lr_rampdown: float = 0.25  #: fraction of steps with a cosine ramp down
    code_noise: float = 0.05  #: initial code noise, times the codes' std; decays to 0 at 75 % of steps
    coarse_resolution: int = 32  #: neural resolution of the early code steps (0 = the model's own)
    coarse_fraction: float = 0.8  #: fraction of the code steps rendered at ``coarse_resolution``
    tune_steps: int = 6
    tune_lr: float = 1e-3
    #: fraction of the tuning steps over which the tuning learning rate ramps up linearly from
    #: ``tune_lr / (ramp steps)``: Adam's first steps move every weight by about the learning rate whatever
    #: its gradient, so a high ``tune_lr`` without a ramp first disturbs the model (0 = no ramp)
    tune_rampup: float = 0.0
    #: fraction of the tuning steps rendered at ``coarse_resolution`` (the rest at the model's own)
    tune_coarse_fraction: float = 0.0
    plateau_patience: int = 6  #: stop a stage after this many steps without a ``plateau_tol`` gain (0 = never)
    plateau_tol: float = 0.002  #: relative gain of the smoothed loss that counts as progress
    l2_weight: float = 1.0
    ssim_weight: float = 0.5
    ssim_resolution: int = 128  #: MS-SSIM on images average-pooled to this size (0 = full size)
    semantic_weight: float = 0.1
    lpips_weight: float = 1.0  #: used only when an LPIPS module is passed
    robust_scale: float = 2.0  #: Cauchy scale of the view weights, times the median view loss (0 = equal)
    odd_view_db: float = 4.0  #: a view this many dB below the others' median residual PSNR is named
    delta_dtype: str = "float16"  #: dtype of the stored weight difference
    seed: int = 0  #: seed of the code noise

    def __post_init__(self) -> None:
        if self.code_space not in ("w", "group", "w+"):
            raise ValueError(f"code_space must be 'w', 'group' or 'w+', got {self.code_space!r}")
        if self.init not in ("frontal", "mean"):
            raise ValueError(f"init must be 'frontal' or 'mean', got {self.init!r}")
        if self.optimise_steps < 0 or self.tune_steps < 0:
            raise ValueError("step counts must be >= 0")
        for name in ("coarse_fraction", "tune_rampup", "tune_coarse_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.coarse_resolution and self.coarse_resolution < 4:
            raise ValueError(f"coarse_resolution must be 0 or >= 4, got {self.coarse_resolution}")

    def summary(self) -> dict[str, Any]:
        """The schedule fields a portrait document records."""
        return {k: getattr(self, k) for k in ("code_space", "init", "optimise_steps", "tune_steps", "tune_lr",
                                              "tune_rampup", "coarse_resolution", "coarse_fraction",
                                              "tune_coarse_fraction", "plateau_patience")}


#: The earlier default (issue 6): 200 code + 100 tuning steps at full resolution in W+, no early stopping,
#: MS-SSIM at full size. More than 15 minutes per photo on a 2-core CPU; kept for comparisons and as ``--thorough``.
THOROUGH_POLICY = InversionPolicy(optimise_steps=200, optimise_lr=0.01, coarse_resolution=0, coarse_fraction=0.0,
                                  tune_steps=100, tune_lr=3e-4, plateau_patience=0, ssim_resolution=0,
                                  code_space="w+")


@dataclass(eq=False)
class InversionResult:
    """What :func:`invert_views` found.

    Attributes:
        ws: [1, num_ws, w_dim] pivot codes (after optimisation), shared by every view.
        ws_init: [1, num_ws, w_dim] codes after the encoder stage (or the average codes).
        camera: (25,) float32 label of the primary (most frontal) view.
        generator: the generator to render with: ``delta.apply(base)`` (bit-identical to what a saved
            document rebuilds), or the base model when there was no tuning.
        delta: the tuned weights as a difference from the base (None without tuning).
        mask: (H, W) uint8 label ids of the primary view (given, parsed or self-rendered); mask_source says
            which.
        stages: per stage name -> {"psnr": dB (mean over the used views), "loss": final combined loss,
            "seconds": time, "steps": steps run}.
        notes: human-readable remarks (fallbacks taken, skipped and odd views).
        views: one :class:`ViewReport` per input view, in input order.
        primary: index (into the input views) of the primary view.
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
    views: tuple[ViewReport, ...] = ()
    primary: int = 0

    def portrait(self, base: nn.Module, source_image: np.ndarray | None = None,
                 source_mask: np.ndarray | None = None, generator_config: dict[str, Any] | None = None,
                 model_hint: str | None = None, params: dict[str, Any] | None = None,
                 sources: Sequence[tuple[np.ndarray, np.ndarray | None] | None] | None = None) -> Portrait:
        """A portrait document (history = one "invert" record) for this result.

        ``source_image``/``source_mask`` are the primary view's picture (the document's source view).
        ``sources`` -- one (uint8 image, mask or None) per *input* view, or None -- records every used view
        of a multi-view inversion (:class:`~ide3d_core.portrait.SourceView`); with one used view nothing
        more is stored (the document is that of a single-view inversion)."""
        rec_params: dict[str, Any] = {"stages": self.stages, "mask_source": self.mask_source, **(params or {})}
        if len(self.views) > 1:
            rec_params["views"] = [v.summary() for v in self.views]
        rec = EditRecord("invert", rec_params, PortraitState(self.ws.detach().float().cpu().clone()))
        views: tuple[SourceView, ...] = ()
        used = [v for v in self.views if v.used]
        if sources is not None and len(used) > 1:
            if len(sources) != len(self.views):
                raise ValueError(f"sources has {len(sources)} entries for {len(self.views)} views")
            views = tuple(SourceView(image=sources[v.index][0], camera=v.camera, mask=sources[v.index][1],
                                     params=v.summary()) for v in used if sources[v.index] is not None)
        return Portrait(camera=self.camera, generator_config=generator_config or {},
                        base_fingerprint=generator_fingerprint(base), history=(rec,), delta=self.delta,
                        source_image=source_image, source_mask=source_mask, model_hint=model_hint,
                        source_views=views)


def _lr_at(step: int, total: int, policy: InversionPolicy, base_lr: float) -> float:
    t = step / max(total, 1)
    ramp_down = min(1.0, (1.0 - t) / policy.lr_rampdown) if policy.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
    if policy.lr_rampup > 0:
        ramp *= min(1.0, t / policy.lr_rampup)
    return base_lr * max(ramp, 1e-3)


def tune_lr_at(step: int, policy: InversionPolicy) -> float:
    """Learning rate of pivotal-tuning step ``step`` (0-based): ``tune_lr`` times a linear warm-up over the
    first ``tune_rampup * tune_steps`` steps (step k gets ``(k + 1) / ramp_steps`` of it), then constant."""
    ramp_steps = policy.tune_rampup * policy.tune_steps
    return policy.tune_lr * (min(1.0, (step + 1) / ramp_steps) if ramp_steps > 0 else 1.0)


class _Plateau:
    """Early stopping: true once the smoothed loss has not improved by ``tol`` (relative) for
    ``patience`` steps. The loss is smoothed (EMA 0.5) because code noise makes single steps jumpy."""

    def __init__(self, patience: int, tol: float) -> None:
        self.patience, self.tol = patience, tol
        self.ema: float | None = None
        self.best = math.inf
        self.since = 0

    def __call__(self, loss: float) -> bool:
        if self.patience <= 0:
            return False
        self.ema = loss if self.ema is None else 0.5 * self.ema + 0.5 * loss
        if self.ema < self.best * (1.0 - self.tol):
            self.best, self.since = self.ema, 0
        else:
            self.since += 1
        return self.since >= self.patience


class _Objective:
    """The inversion loss of N views of one head, rendered in one batch from one set of tri-planes."""

    def __init__(self, targets: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor,
                 semantic: torch.Tensor, policy: InversionPolicy, lpips: Optional[nn.Module]) -> None:
        """targets [N, 3, R, R] in [-1, 1]; labels [N, R, R] int64; cameras [N, 25]; semantic [N] 0/1 (which
        views have a mask worth fitting)."""
        self.targets, self.labels, self.cameras, self.semantic = targets, labels, cameras, semantic
        self.policy, self.lpips = policy, lpips
        s = policy.ssim_resolution
        self.ssim_pool = targets.shape[-1] // s if s and targets.shape[-1] > s else 1
        self.ssim_targets = F.avg_pool2d(targets, self.ssim_pool) if self.ssim_pool > 1 else targets

    def per_view(self, generator: nn.Module, ws: torch.Tensor, neural_resolution: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses [N], images [N, 3, R, R]) of codes ws [1, num_ws, w_dim]."""
        from ide3d_core.networks.generator import TriPlanes

        n = self.targets.shape[0]
        planes = generator.planes(ws)
        if n > 1:
            planes = TriPlanes(planes.semantic.expand(n, -1, -1, -1, -1), planes.texture.expand(n, -1, -1, -1, -1))
        out = generator.render(planes, self.cameras, ws.expand(n, -1, -1), neural_resolution=neural_resolution)
        img, p = out.image, self.policy
        loss = p.l2_weight * (img - self.targets).pow(2).mean((1, 2, 3))
        if p.ssim_weight:
            x = F.avg_pool2d(img, self.ssim_pool) if self.ssim_pool > 1 else img
            if min(x.shape[-2:]) >= 11:
                loss = loss + p.ssim_weight * (1.0 - ms_ssim(x, self.ssim_targets))
        if p.semantic_weight and bool(self.semantic.any()):
            labels = self.labels
            if labels.shape[-2:] != out.semantic.shape[-2:]:
                labels = F.interpolate(labels[:, None].float(), size=out.semantic.shape[-2:], mode="nearest")[:, 0]
            ce = F.cross_entropy(out.semantic, labels.long(), reduction="none").mean((1, 2))
            loss = loss + p.semantic_weight * ce * self.semantic
        if self.lpips is not None and p.lpips_weight:
            loss = loss + p.lpips_weight * self.lpips(img, self.targets).reshape(n, -1).mean(1)
        return loss, img

    def __call__(self, generator: nn.Module, ws: torch.Tensor, neural_resolution: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(robustly weighted loss, per-view losses [N] (detached), images)."""
        losses, img = self.per_view(generator, ws, neural_resolution)
        w = robust_weights(losses, self.policy.robust_scale)
        return (w * losses).sum(), losses.detach(), img


def invert(generator: nn.Module, image: np.ndarray | torch.Tensor, mask: np.ndarray | None = None,
           camera: np.ndarray | None = None, encoder: nn.Module | None = None,
           policy: InversionPolicy = InversionPolicy(), lpips: nn.Module | None = None,
           parser: Callable[[torch.Tensor], np.ndarray] | None = None,
           progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InversionResult:
    """Invert one portrait: :func:`invert_views` with one view (see the module docstring).

    Args:
        generator: the base generator (left unchanged; tuning works on a copy).
        image: (H, W, 3) uint8 RGB or [1, 3, H, W] float in [-1, 1]; resized to the generator's size.
        mask: (H, W) label ids of the image, or None.
        camera: (25,) packed label of the image's camera, or None (predicted by the encoder).
        encoder: the standard :class:`~ide3d_core.encoders.HybridEncoder`, or None.
    """
    return invert_views(generator, [InversionView(image, mask, camera, "photo")], encoder=encoder, policy=policy,
                        lpips=lpips, parser=parser, progress=progress, cancel=cancel)


def invert_views(generator: nn.Module, views: Sequence[InversionView], encoder: nn.Module | None = None,
                 policy: InversionPolicy = InversionPolicy(), lpips: nn.Module | None = None,
                 parser: Callable[[torch.Tensor], np.ndarray] | None = None,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InversionResult:
    """Invert N >= 1 views of one head into one set of codes and one tuned generator (module docstring).

    Raises:
        NoUsableViews: no views, or none shows a face.
        ValueError: a malformed image, mask or camera (names the view).
    """
    if not views:
        raise NoUsableViews("no views to invert")
    dev = next(generator.parameters()).device
    size = int(generator.img_resolution)
    base = generator.eval()
    notes: list[str] = []
    stages: dict[str, dict[str, float]] = {}
    total = policy.optimise_steps + policy.tune_steps + 1
    use_encoder = policy.use_encoder and encoder is not None
    if policy.use_encoder and encoder is None:
        notes.append("no encoder given: codes start at the average code")
    names = [v.name or f"view {i}" for i, v in enumerate(views)]

    # -- stage 1: targets, cameras, masks and initial codes ------------------------------------------
    t0 = time.perf_counter()
    targets = []
    for name, v in zip(names, views):
        try:
            targets.append(prepare_target(v.image, size, dev))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    target_all = torch.cat(targets)
    ns = int(generator.num_shape_ws)
    with torch.no_grad():
        w_t_all, pose_all = encoder.encode_texture(target_all) if use_encoder else (None, None)
    cameras: list[np.ndarray] = []
    angles: list[tuple[float, float]] = []  # (yaw, pitch) degrees per view
    for i, v in enumerate(views):
        cam = v.camera
        if cam is None:
            if pose_all is not None:
                pitch = float(np.clip(float(pose_all[i, 1]), -math.radians(60), math.radians(60)))
                cam = orbit_camera(float(pose_all[i, 0]), pitch).label()
            else:
                cam = canonical_camera().label()
                notes.append(f"{names[i]}: no camera and no encoder: the canonical camera is assumed"
                             if len(views) > 1 else "no camera and no encoder: the canonical camera is assumed")
        try:
            cam = np.asarray(cam, dtype=np.float32).reshape(25)
            angles.append(yaw_pitch_deg(cam))
        except ValueError as exc:
            raise ValueError(f"{names[i]}: bad camera ({exc})") from None
        cameras.append(cam)

    # masks of the views that bring or parse one; views without a face are dropped here
    masks: list[np.ndarray | None] = []
    sources: list[str] = []
    reports: dict[int, ViewReport] = {}
    for i, v in enumerate(views):
        if v.mask is not None:
            try:
                m, src = check_labels(v.mask, size), "given"
            except ValueError as exc:
                raise ValueError(f"{names[i]}: {exc}") from None
        elif parser is not None:
            m, src = check_labels(parser(targets[i]), size), "parser"
        else:
            m, src = None, "self"
        if m is not None and not has_face(m):
            msg = f"{names[i]}: no face in its {'mask' if src == 'given' else 'parsed mask'}; view skipped"
            notes.append(msg)
            reports[i] = ViewReport(names[i], i, False, note=msg)
        masks.append(m)
        sources.append(src)
    used = [i for i in range(len(views)) if i not in reports]
    if not used:
        raise NoUsableViews(f"none of the {len(views)} view(s) shows a face" if len(views) > 1
                            else f"{names[0]} shows no face")
    primary = used[primary_view([angles[i] for i in used])]

    ws_init = generator.average_codes(1).detach().float().clone()  # per group for a code prior
    with torch.no_grad():
        if use_encoder:
            w_t = w_t_all[used].mean(0, keepdim=True) if policy.init == "mean" else w_t_all[primary:primary + 1]
            ws_init[:, ns:] = w_t.to(ws_init.dtype)
        cams_t = torch.from_numpy(np.stack([cameras[i] for i in used])).to(dev)
        need_self = [k for k, i in enumerate(used) if masks[i] is None]
        if need_self:
            sem = base(ws_init.expand(len(need_self), -1, -1), cams_t[need_self]).semantic.argmax(1)
            for k, s in zip(need_self, sem):
                masks[used[k]] = s.to(torch.uint8).cpu().numpy()
            notes.append("no mask and no parser: the generator's own semantic render of the initial codes is "
                         "used, semantic loss off" + ("" if len(views) == 1 else
                                                      f" ({', '.join(names[used[k]] for k in need_self)})"))
        labels = torch.from_numpy(np.stack([masks[i].astype(np.int64) for i in used])).to(dev)
        if use_encoder:
            with_mask = [k for k, i in enumerate(used) if sources[i] != "self"] or list(range(len(used)))
            if policy.init == "mean":
                w_s = encoder.encode_shape(labels[with_mask]).mean(0, keepdim=True)
            else:
                k0 = used.index(primary)
                w_s = encoder.encode_shape(labels[k0:k0 + 1] if k0 in with_mask else labels[with_mask[:1]])
            ws_init[:, :ns] = w_s.to(ws_init.dtype)
    semantic_on = torch.tensor([float(sources[i] != "self") for i in used], device=dev)
    objective = _Objective(target_all[used], labels, cams_t, semantic_on, policy, lpips)
    per_view: dict[str, tuple[list[float], list[float]]] = {}

    def measure(stage: str, g: nn.Module, ws: torch.Tensor, t_start: float, steps: int) -> None:
        with torch.no_grad():
            loss, losses, img = objective(g, ws)
        p = psnr(img, objective.targets)
        per_view[stage] = ([float(x) for x in p], [float(x) for x in losses])
        stages[stage] = {"psnr": float(p.mean()), "loss": float(loss), "seconds": time.perf_counter() - t_start,
                         "steps": steps}

    measure("init", base, ws_init, t0, 0)
    report(progress, 1, total, "initialised", cancel)

    # -- stage 2: code optimisation ---------------------------------------------------------------
    t0 = time.perf_counter()
    ws = ws_init.clone()
    steps_run = 0
    if policy.optimise_steps:
        gen = torch.Generator(device=dev).manual_seed(policy.seed)
        if policy.code_space == "w":
            var = ws_init.mean(1, keepdim=True).clone().requires_grad_(True)
            expand = lambda v: v.expand(-1, ws_init.shape[1], -1)  # noqa: E731
        elif policy.code_space == "group":
            nt = ws_init.shape[1] - ns
            var = torch.stack([ws_init[:, :ns].mean(1), ws_init[:, ns:].mean(1)], 1).clone().requires_grad_(True)
            expand = lambda v: torch.cat([v[:, :1].expand(-1, ns, -1), v[:, 1:].expand(-1, nt, -1)], 1)  # noqa: E731
        else:
            var = ws_init.clone().requires_grad_(True)
            expand = lambda v: v  # noqa: E731
        std = float(ws_init.std()) if ws_init.numel() > 1 else 1.0
        opt = torch.optim.Adam([var], lr=policy.optimise_lr, betas=(0.9, 0.999))
        n_steps = policy.optimise_steps
        coarse_until = int(round(policy.coarse_fraction * n_steps)) if policy.coarse_resolution else 0
        plateau = _Plateau(policy.plateau_patience, policy.plateau_tol)
        for step in range(n_steps):
            lr = _lr_at(step, n_steps, policy, policy.optimise_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            decay = max(0.0, 1.0 - step / (0.75 * n_steps)) ** 2
            noise = torch.randn(var.shape, generator=gen, device=dev) * (std * policy.code_noise * decay)
            coarse = step < coarse_until
            if step == coarse_until:
                plateau = _Plateau(policy.plateau_patience, policy.plateau_tol)  # the loss scale changes here
            loss, _, _ = objective(base, expand(var + noise), policy.coarse_resolution if coarse else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps_run = step + 1
            value = float(loss.detach()) if policy.plateau_patience > 0 or progress is not None else 0.0
            report(progress, 1 + steps_run, total, f"codes loss {value:.4f}" + (" (coarse)" if coarse else ""),
                   cancel)
            # a plateau ends the stage, but never inside the coarse phase (the fine phase must run)
            if plateau(value) and not coarse and step < n_steps - 1:
                notes.append(f"code optimisation stopped early on a plateau after {steps_run} of {n_steps} steps")
                report(progress, 1 + n_steps, total, "codes converged", cancel)
                break
        ws = expand(var.detach()).clone()
    measure("optimise", base, ws, t0, steps_run)

    # -- stage 3: pivotal tuning -------------------------------------------------------------------
    tuned_module: nn.Module = base
    delta = None
    if policy.tune_steps:
        t0 = time.perf_counter()
        tuned = copy.deepcopy(base).train(False).requires_grad_(True)
        opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=policy.tune_lr,
                               betas=(0.9, 0.999))
        plateau = _Plateau(policy.plateau_patience, policy.plateau_tol)
        steps_run = 0
        n_tune = policy.tune_steps
        ramp_steps = policy.tune_rampup * n_tune
        coarse_until = int(round(policy.tune_coarse_fraction * n_tune)) if policy.coarse_resolution else 0
        for step in range(n_tune):
            for g in opt.param_groups:
                g["lr"] = tune_lr_at(step, policy)
            coarse = step < coarse_until
            if coarse_until and step == coarse_until:
                plateau = _Plateau(policy.plateau_patience, policy.plateau_tol)  # the loss scale changes here
            loss, _, _ = objective(tuned, ws, policy.coarse_resolution if coarse else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps_run = step + 1
            value = float(loss.detach()) if policy.plateau_patience > 0 or progress is not None else 0.0
            report(progress, 1 + policy.optimise_steps + steps_run, total, f"tuning loss {value:.4f}", cancel)
            # a plateau ends the stage, but never inside the warm-up or the coarse phase
            if plateau(value) and not coarse and step + 1 >= ramp_steps and step < n_tune - 1:
                notes.append(f"pivotal tuning stopped early on a plateau after {steps_run} of "
                             f"{policy.tune_steps} steps")
                report(progress, total, total, "tuning converged", cancel)
                break
        tuned.requires_grad_(False)
        delta = WeightDelta.between(base, tuned, policy.delta_dtype)
        tuned_module = delta.apply(base, check=False).requires_grad_(False).eval()
        measure("tune", tuned_module, ws, t0, steps_run)

    # -- per-view report ----------------------------------------------------------------------------
    final = list(stages)[-1]
    final_losses = torch.tensor(per_view[final][1])
    weights = robust_weights(final_losses, policy.robust_scale)
    odd = set(odd_views(per_view[final][0], policy.odd_view_db)) if len(used) > 1 else set()
    for k, i in enumerate(used):
        note = ""
        if k in odd:
            med = float(np.median([p for j, p in enumerate(per_view[final][0]) if j != k]))
            note = (f"{names[i]} fits far worse than the other views ({per_view[final][0][k]:.1f} dB vs "
                    f"{med:.1f} dB): is it the same person, with the right camera? (or the model cannot fit "
                    f"it together with the others)")
            notes.append(note)
        reports[i] = ViewReport(names[i], i, True, cameras[i], angles[i][0], angles[i][1], sources[i],
                                float(weights[k]), {s: v[0][k] for s, v in per_view.items()},
                                {s: v[1][k] for s, v in per_view.items()}, note)
    return InversionResult(ws=ws.detach().cpu(), ws_init=ws_init.detach().cpu(), camera=cameras[primary],
                           generator=tuned_module, delta=delta, mask=masks[primary], mask_source=sources[primary],
                           stages=stages, notes=notes, views=tuple(reports[i] for i in range(len(views))),
                           primary=primary)
