# SPDX-License-Identifier: GPL-3.0-or-later
"""A portrait's shape residual: a learned offset on the semantic tri-planes that makes a mask edit follow the
paint where the shape codes cannot.

Why: the canonical editor maps a painted label map to shape codes ``w_s``, and the model's shape space holds
only heads like the ones it was trained on. A painted hat comes back covering about half of what was painted,
and optimising the codes against the paint does no better (docs/editing.md). The residual is a
``[1, 3, Cs, r, r]`` grid (``r`` = :attr:`RefineConfig.resolution`) upsampled bilinearly to the plane
resolution and added to the semantic planes: it moves density and semantics (the shape) and never the texture
planes, so the shape/texture split holds. A portrait state carries it
(:attr:`ide3d_core.portrait.PortraitState.shape_residual`); :func:`state_planes` is where every renderer of a
state adds it.

*Refinement* (:func:`refine_residual`): after the editor's codes, Adam steps on the residual. Each step:

* renders the canonical view (super-resolution included: thin classes live there) and takes the
  cross-entropy of its labels against the painted map, plus the colour kept where the paint did not change;
* renders one side view at the neural resolution (cycling :attr:`RefineConfig.side_yaws`). There the colour
  features and labels are kept where the pre-edit surface point projects onto an unchanged pixel of the
  canonical map. Without this, the fit of the front view would carve or grow the head freely behind it;
* in that side view, pushes out the classes the paint removed from the map altogether (hair painted out
  everywhere also goes at the back).

The result is the iterate whose canonical render follows the paint best (mIoU against the painted map,
:func:`ide3d_core.metrics.mean_iou`), the starting one included: Adam's first steps disturb the classes
around a small edit (a brow grown by 3 pixels) more than 20 steps repair, and then the edit keeps the
residual it started from rather than make the render follow the paint less.

Units: plane features are the synthesis network's raw outputs (standard deviation about 200 on the bundled
model, about 1 on an untrained one), so the learning rate is relative to the planes' standard deviation.
Frames: cameras are packed 25-float labels (:mod:`ide3d_core.cameras`); maps are row-major, row 0 at the top.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.camera_torch import project_points, rays_from_labels
from ide3d_core.cameras import canonical_camera, orbit_camera
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.metrics import mean_iou
from ide3d_core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:  # not at run time: the add-on's tests stand a small module in for ide3d_core.networks
    from ide3d_core.networks.generator import TriPlanes

#: the largest probability of the removed classes whose log(1 - p) the side views take (keeps it finite)
_P_MAX = 1.0 - 1e-6


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`refine_residual`. *Decision (measured, docs/editing.md):* 20 steps on a 64 grid.

    Attributes:
        steps: Adam steps (0: no refinement).
        lr: Adam learning rate, in units of the edited codes' semantic planes' standard deviation.
        resolution: edge of the residual grid (upsampled to the plane resolution).
        side_resolution: rays per side of the side views.
        side_yaws: the side views' yaws, degrees (one per step, in turn).
        keep_colour: weight of the kept colour (canonical image; side views' colour features).
        keep_side: weight of the side views' terms.
        keep_side_labels: weight of the side views' kept labels, relative to their colour.
        clear_removed: weight pushing the classes the paint removed altogether out of the side views.
    """

    steps: int = 20
    lr: float = 0.05
    resolution: int = 64
    side_resolution: int = 48
    side_yaws: tuple[float, ...] = (-50.0, -25.0, 25.0, 50.0)
    keep_colour: float = 1.0
    keep_side: float = 1.0
    keep_side_labels: float = 0.1
    clear_removed: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("resolution", "side_resolution"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name} must be >= 4, got {getattr(self, name)}")
        object.__setattr__(self, "side_yaws", tuple(float(y) for y in self.side_yaws))
        if any(not -90.0 < y < 90.0 for y in self.side_yaws):
            raise ValueError(f"side yaws must lie in (-90, 90) degrees, got {self.side_yaws}")
        for name in ("keep_colour", "keep_side", "keep_side_labels", "clear_removed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "side_yaws": list(self.side_yaws)}


def with_residual(planes: TriPlanes, residual: torch.Tensor | None) -> TriPlanes:
    """``planes`` with ``residual [1, 3, Cs, r, r]`` upsampled bilinearly to the plane resolution and added
    to the semantic planes (broadcast over the batch); the texture planes are the same tensor."""
    if residual is None:
        return planes
    sem = planes.semantic
    if residual.ndim != 5 or residual.shape[:3] != (1, 3, sem.shape[2]):
        raise ValueError(f"a shape residual for these planes must be [1, 3, {sem.shape[2]}, r, r], "
                         f"got {tuple(residual.shape)}")
    r = residual.to(sem.device, sem.dtype)
    size = tuple(sem.shape[-2:])
    if tuple(r.shape[-2:]) != size:
        r = F.interpolate(r[0], size=size, mode="bilinear", align_corners=False)[None]
    return replace(planes, semantic=sem + r)


def state_planes(generator: nn.Module, state: Any) -> TriPlanes:
    """The tri-planes a :class:`~ide3d_core.portrait.PortraitState` renders with: its codes' planes plus its
    shape residual (if any). Every renderer of a portrait state goes through here."""
    dev = next(generator.parameters()).device
    return with_residual(generator.planes(state.ws.to(dev)), state.shape_residual)


def _neural_maps(generator: nn.Module, planes: TriPlanes, c: torch.Tensor, h: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log class probabilities [19, h, h] with the background filling the transparency, colour features
    [F, h, h], depth [h*h]) of one camera ``c [1, 25]``."""
    from ide3d_core.networks.generator import semantic_log_probs  # here: see the TYPE_CHECKING import

    features, probs, opacity, depth = generator.render_neural(planes, c, h)
    logp = semantic_log_probs(probs, opacity)[0].T.reshape(-1, h, h)
    return logp, features[0].T.reshape(-1, h, h), depth[0, :, 0]


def _label(yaw_deg: float, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(orbit_camera(math.radians(yaw_deg)).label(), device=device).float()[None]


@torch.no_grad()
def _side_targets(generator: nn.Module, before: TriPlanes, canon: torch.Tensor, unchanged: torch.Tensor,
                  removed: torch.Tensor, config: RefineConfig) -> list[tuple[torch.Tensor, ...]]:
    """Per side yaw: (camera [1, 25], colour features [F, h, h], labels [h, h], kept rays [h, h], cleared rays [h, h])
    of the pre-edit field (float masks). A ray is kept where its pre-edit surface point (the expected depth)
    projects onto an unchanged pixel of the canonical map ``unchanged [H, W]`` (bool); a ray is cleared
    instead where its pre-edit label is one of the classes the paint removed from the map altogether
    (``removed [19]`` bool: hair painted out everywhere goes at the back too)."""
    dev = unchanged.device
    h = config.side_resolution
    grid_src = unchanged.float()[None, None]
    out = []
    for yaw in config.side_yaws:
        c = _label(yaw, dev)
        logp, colour, depth = _neural_maps(generator, before, c, h)
        origins, dirs = rays_from_labels(c, h, h)
        points = origins + dirs * depth.reshape(1, -1, 1)
        uv, _ = project_points(canon, points)
        kept = F.grid_sample(grid_src, (2 * uv - 1)[:, :, None], mode="nearest", align_corners=False)
        labels = logp.argmax(0)
        cleared = removed[labels]
        kept = (kept.reshape(h, h) > 0.5) & ~cleared
        out.append((c, colour, labels, kept.float(), cleared.float()))
    return out


def refine_residual(generator: nn.Module, ws: torch.Tensor, before: Any, painted: np.ndarray,
                    current: np.ndarray, config: RefineConfig = RefineConfig(),
                    progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> torch.Tensor:
    """Fit a shape residual so that codes ``ws [1, num_ws, w_dim]`` render the painted canonical map.

    Args:
        generator: the portrait's generator (not modified; its parameters get no gradients).
        ws: the edited codes (the canonical editor's result).
        before: the pre-edit :class:`~ide3d_core.portrait.PortraitState` (its residual, if any, is where the
            new one starts, on the same grid; its renders are what the unchanged regions keep).
        painted, current: (H, W) uint8 label ids: the painted map and the pre-edit canonical map.
    Returns:
        the residual ``[1, 3, Cs, r, r]`` float32 on the CPU, rounded to float16 values (as stored); the
        starting one (``before``'s, None when it had none) when no step follows the paint better.
    """
    dev = next(generator.parameters()).device
    with torch.no_grad():
        base = generator.planes(ws.to(dev))
        before_planes = state_planes(generator, before)
    start = before.shape_residual  # an earlier refined edit's (checked by state_planes): go on from it
    if start is not None:
        residual = start.detach().clone().float().to(dev)
    else:
        residual = torch.zeros(1, 3, base.semantic.shape[2], config.resolution, config.resolution, device=dev)
    fitted = None
    if config.steps > 0:
        fitted = _fit(generator, ws.to(dev), base, before_planes, residual.requires_grad_(True), painted, current,
                      config, progress, cancel)
    return start if fitted is None else fitted


@torch.enable_grad()
def _fit(generator: nn.Module, ws: torch.Tensor, base: TriPlanes, before_planes: TriPlanes, residual: torch.Tensor,
         painted: np.ndarray, current: np.ndarray, config: RefineConfig, progress: ProgressFn | None,
         cancel: CancelToken | None) -> torch.Tensor | None:
    """The fit itself: the iterate that follows the paint best, or None when that is the starting one."""
    dev = residual.device
    unchanged = torch.as_tensor(np.asarray(painted) == np.asarray(current), device=dev)
    canon = torch.as_tensor(canonical_camera().label(), device=dev).float()[None]
    with torch.no_grad():
        image0 = generator.render(before_planes, canon, ws).image[0]
    painted_t = torch.as_tensor(np.asarray(painted).astype(np.int64), device=dev)
    before_ids = torch.as_tensor(np.asarray(current).astype(np.int64), device=dev)
    removed = torch.zeros(NUM_CLASSES, dtype=torch.bool, device=dev)
    removed[before_ids.unique()] = True
    removed[painted_t.unique()] = False
    removed[0] = False  # the background is never "removed"
    sides = _side_targets(generator, before_planes, canon, unchanged, removed, config) if config.keep_side > 0 else []
    opt = torch.optim.Adam([residual], lr=config.lr * float(base.semantic.std()))
    best, best_score = None, -1.0  # None: the starting residual
    for step in range(config.steps):
        report(progress, step, config.steps, "refining the edit", cancel)
        planes = with_residual(base, residual)
        out = generator.render(planes, canon, ws)
        score = mean_iou(out.semantic[0].detach().argmax(0), painted_t)
        if score > best_score:  # this step's residual (before its update) follows the paint best so far
            best, best_score = (residual.detach().clone() if step else None), score
        loss = F.cross_entropy(out.semantic, painted_t[None])
        if config.keep_colour > 0:
            loss = loss + config.keep_colour * ((out.image[0] - image0).square().mean(0) * unchanged).mean()
        if sides:
            c, side_colour, side_labels, side_kept, side_cleared = sides[step % len(sides)]
            logp_s, colour_s, _ = _neural_maps(generator, planes, c, config.side_resolution)
            colour_term = (colour_s - side_colour).square().mean(0)
            label_term = -logp_s.gather(0, side_labels[None])[0]
            loss = loss + config.keep_side * ((config.keep_colour * colour_term
                                               + config.keep_side_labels * label_term) * side_kept).mean()
            if config.clear_removed > 0 and removed.any():
                p_removed = logp_s[removed].exp().sum(0).clamp(max=_P_MAX)
                loss = loss - config.clear_removed * (torch.log1p(-p_removed) * side_cleared).mean()
        (residual.grad,) = torch.autograd.grad(loss, [residual])  # the generator's parameters get none
        opt.step()
    with torch.no_grad():
        out = generator.render(with_residual(base, residual), canon, ws)
    if mean_iou(out.semantic[0].argmax(0), painted_t) > best_score:
        best = residual.detach()
    report(progress, config.steps, config.steps, "refining the edit", cancel)
    return None if best is None else best.cpu().half().float()  # as documents store it (exact round trip)
