# SPDX-License-Identifier: GPL-3.0-or-later
"""The schedule of an inversion: :class:`InversionPolicy` (steps, learning rates, loss weights, view
handling), :data:`THOROUGH_POLICY`, the learning-rate schedules of its two optimisation stages
(:func:`code_lr_at`, :func:`tune_lr_at`) and the early-stopping rule (:class:`Plateau`).

Used by :func:`~ide3d_core.inversion.procedure.invert_views`; re-exported by
:mod:`ide3d_core.inversion.procedure` and :mod:`ide3d_core.inversion`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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
    #: tune the tri-plane synthesis too (PTI); False tunes only the decoders and the super-resolution, so the
    #: frozen codes' planes are computed once and a tuning step skips the synthesis forward and backward
    tune_synthesis: bool = True
    #: fraction of the tuning steps rendered at ``coarse_resolution`` (the rest at the model's own)
    tune_coarse_fraction: float = 0.0
    #: render only the ray samples inside the cells of an occupancy grid of the current planes (rebuilt every
    #: step from the detached planes, dilated by one cell, so the surface can still move a cell a step):
    #: the forward pass equals the full one to about 80 dB at a third of the field evaluations (issue 15)
    skip_empty: bool = True
    #: bfloat16 autocast of the generator's networks (the ray sampling stays float32) in "off" (no stage),
    #: "tune" (the pivotal tuning) or "all" (both stages); used only where the CPU has native bf16 (AVX-512
    #: BF16 or AMX, :func:`ide3d_core.fast_render.network_dtype`), float32 elsewhere
    autocast: str = "off"
    #: refine each view's camera during the code optimisation: a (yaw, pitch) turn about the world origin
    #: (:func:`~ide3d_core.cameras.turn_labels`) per view, learned with the codes at ``pose_lr`` (radians,
    #: Adam) under a Gaussian prior of ``pose_prior_deg`` degrees; estimated or noisy poses are then fitted
    #: instead of bending the head to them (issue 17); the refined cameras are the result's. Measured
    #: (docs/multiview.md): 3 degrees of pose error cost one view 2.4 dB and three views 3.2 dB without it,
    #: nothing with it; with exact cameras it changes novel views by -0.06..+0.01 dB, at the same CPU time
    refine_pose: bool = True
    pose_lr: float = 0.004
    pose_prior_deg: float = 5.0
    #: learning rate of the environment background's mixing bias in the pivotal tuning (models with one,
    #: :mod:`ide3d_core.networks.background`); 0 (default) freezes the whole background there: it is
    #: solved in closed form before (:mod:`ide3d_core.inversion.backdrop`), and Adam's first steps only
    #: move it off the solution (measured: a solved flat backdrop, L1 0.006, went to 0.15 in 3 steps at 0.05)
    background_lr: float = 0.0
    #: render the model's surface detail (:mod:`ide3d_core.networks.detail`) in the objective. Off: the codes
    #: and the tuned weights are fitted to the image *without* it, and the detail, one texture shared by
    #: every head, is laid over the result. *Decision (measured, docs/training.md "Surface detail"):* issue
    #: 14's evaluation scored 26.00 dB at novel views this way and 25.95 fitting through the detail (26.06
    #: without any detail); on the same tuned portraits the detail itself gains 0.11 dB
    fit_detail: bool = False
    #: the portrait's surface-detail strength, solved in closed form at the input views after the fit
    #: (:mod:`ide3d_core.inversion.detail_strength`): "global" (one for the head), "class" (one per class,
    #: pulled towards the global one) or "off" (the strength the detail was trained at, 1). *Decision
    #: (measured, docs/multiview.md):* issue 14's evaluation 26.00 dB off, 26.18 global, 26.20 class;
    #: three views of issue 17's two heads 26.06 / 26.72 / 26.76
    detail_strength: str = "class"
    #: solve per-class label offsets at the views with a mask after the fit
    #: (:mod:`ide3d_core.inversion.label_offsets`; they move label maps only, never the image)
    label_offsets: bool = True
    #: stop a stage after this many steps without a ``plateau_tol`` gain (0 = never)
    plateau_patience: int = 6
    plateau_tol: float = 0.002  #: relative gain of the smoothed loss that counts as progress
    l2_weight: float = 1.0
    ssim_weight: float = 0.5
    ssim_resolution: int = 128  #: MS-SSIM on images average-pooled to this size (0 = full size)
    #: weight of the semantic cross-entropy (views with a given or parsed mask). 0.5 since 2026-12-03
    #: (measured with the environment background, docs/multiview.md): issue 14's one-view evaluation kept
    #: 26.06 dB and raised mIoU 0.676 -> 0.727 (Chamfer 0.0083 -> 0.0077) over 0.1
    semantic_weight: float = 0.5
    lpips_weight: float = 1.0  #: used only when an LPIPS module is passed
    robust_scale: float = 2.0  #: Cauchy scale of the view weights, times the median view loss (0 = equal)
    odd_view_db: float = 4.0  #: a view this many dB below the others' median residual PSNR is named
    delta_dtype: str = "float16"  #: dtype of the stored weight difference
    seed: int = 0  #: seed of the code noise

    def __post_init__(self) -> None:
        if self.code_space not in ("w", "group", "w+"):
            raise ValueError(f"code_space must be 'w', 'group' or 'w+', got {self.code_space!r}")
        if self.autocast not in ("off", "tune", "all"):
            raise ValueError(f"autocast must be 'off', 'tune' or 'all', got {self.autocast!r}")
        if self.detail_strength not in ("off", "global", "class"):
            raise ValueError(f"detail_strength must be 'off', 'global' or 'class', got {self.detail_strength!r}")
        if self.init not in ("frontal", "mean"):
            raise ValueError(f"init must be 'frontal' or 'mean', got {self.init!r}")
        if self.optimise_steps < 0 or self.tune_steps < 0:
            raise ValueError("step counts must be >= 0")
        for name in ("coarse_fraction", "tune_rampup", "tune_coarse_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.background_lr >= 0:
            raise ValueError(f"background_lr must be >= 0, got {self.background_lr}")
        if self.pose_lr < 0 or self.pose_prior_deg <= 0:
            raise ValueError("pose_lr must be >= 0 and pose_prior_deg > 0")
        if self.coarse_resolution and self.coarse_resolution < 4:
            raise ValueError(f"coarse_resolution must be 0 or >= 4, got {self.coarse_resolution}")

    def summary(self) -> dict[str, Any]:
        """The schedule fields a portrait document records."""
        return {k: getattr(self, k) for k in ("code_space", "init", "optimise_steps", "tune_steps", "tune_lr",
                                              "tune_rampup", "coarse_resolution", "coarse_fraction",
                                              "tune_coarse_fraction", "plateau_patience", "skip_empty",
                                              "autocast", "tune_synthesis", "refine_pose", "detail_strength",
                                              "label_offsets")}


#: The earlier default (issue 6): 200 code + 100 tuning steps at full resolution in W+, no early stopping,
#: MS-SSIM at full size. More than 15 minutes per photo on a 2-core CPU; kept for comparisons and as ``--thorough``.
THOROUGH_POLICY = InversionPolicy(optimise_steps=200, optimise_lr=0.01, coarse_resolution=0, coarse_fraction=0.0,
                                  tune_steps=100, tune_lr=3e-4, plateau_patience=0, ssim_resolution=0,
                                  code_space="w+", skip_empty=False, refine_pose=False, semantic_weight=0.1)


def code_lr_at(step: int, total: int, policy: InversionPolicy, base_lr: float) -> float:
    """Learning rate of code-optimisation step ``step`` of ``total`` (the PTI ramp): ``base_lr`` times a
    linear ramp up over the first ``lr_rampup`` of the steps and a cosine ramp down over the last
    ``lr_rampdown``, never below 1e-3 of ``base_lr``."""
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


class Plateau:
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
