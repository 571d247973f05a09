# SPDX-License-Identifier: GPL-3.0-or-later
"""The training policy: one frozen dataclass of hyper-parameters and schedules, and its presets.

Values come from the IDE-3D supplement where it states them (batch 32, learning rates 0.0025 / 0.002,
R1 gammas 2 (RGB) and 200 (semantic), GPC swap with a random pose, blur initialisation and style
mixing, 64 px neural rendering for 10 M images then 128 px for 2.5 M) and from EG3D otherwise
(Adam betas (0, 0.99), lazy R1 every 16 steps, density regularisation 0.25 every 4 steps with 1000
points perturbed by 0.004, GPC probability 0.5 faded from 1 over 1000 kimg, blur sigma 10 faded over
200 kimg, EMA half-life 10 kimg with ramp-up 0.05). See docs/training.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (saved as ``RUN_DIR/train_config.json``).

    Attributes:
        generator: name of the generator configuration (``ide3d_core.networks.CONFIGS``).
        batch_size: images per step over all processes (divisible by the number of processes).
        kimg: length of the run in thousands of real images shown to the discriminator.
        lr_g, lr_d: Adam learning rates; betas: Adam betas (before the lazy-regularisation rescale).
        gamma_rgb, gamma_semantic: R1 weights of the two discriminator branches.
        r1_interval: lazy R1 every this many steps (0 disables R1).
        density_weight, density_interval, density_points, density_perturbation: density
            regularisation (weight, lazy interval in steps, points per sample, perturbation std in
            model units); weight 0 disables it.
        gpc_prob, gpc_fade_kimg: generator pose-conditioning swap probability and its fade from 1.
        style_mixing_prob: probability of mixing two latent codes per sample.
        blur_sigma, blur_fade_kimg: initial blur (pixels of the output image) of the discriminator
            inputs and its linear fade-out length.
        ema_kimg, ema_rampup: EMA half-life (kimg) and ramp-up (None = off).
        w_avg_beta: decay of the mapping network's running mean ``w_avg`` (for truncation).
        neural_resolution_final, neural_resolution_start_kimg, neural_resolution_fade_kimg: raise
            the neural rendering resolution from the generator's own to this (None = keep).
        d_channel_base, d_channel_max, d_cmap_dim, d_mapping_layers, mbstd_group: discriminator
            architecture (see :class:`training.discriminator.DiscriminatorConfig`).
        xflip: mirror half of the dataset-folder samples (camera and l_/r_ labels mirrored too).
        mixed_precision: bfloat16 autocast of the forward passes on CUDA (ignored on CPU).
        seed: seed of every random draw (weights, data, latent codes); a run is a pure function of it.
        checkpoint_steps, keep_checkpoints: checkpoint period (steps) and how many to keep.
        log_steps, image_steps: scalar logging and image-grid periods (steps).
        objective: "gan" (adversarial, the paper) or "distill" (supervised regression onto the
            procedural head of each latent, :mod:`training.distill`; no discriminator step).
        distill_points, distill_render_interval, distill_render_batch, distill_weights: distillation
            points per head (uniform + near-surface; half as many colour points), the period and
            number of heads of its rendered-image loss, and the weights of (density, semantic,
            colour, image) losses.
        mapping_lr_scale: Adam learning-rate factor of the mapping network's parameters on top of
            its equalised-lr multiplier (1 = StyleGAN; the distillation raises it so the mapping
            learns as fast as the rest).
    """

    generator: str = "default"
    batch_size: int = 32
    kimg: float = 4000.0
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    gamma_rgb: float = 2.0
    gamma_semantic: float = 200.0
    r1_interval: int = 16
    density_weight: float = 0.25
    density_interval: int = 4
    density_points: int = 1000
    density_perturbation: float = 0.004
    gpc_prob: float = 0.5
    gpc_fade_kimg: float = 1000.0
    style_mixing_prob: float = 0.5
    blur_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    w_avg_beta: float = 0.995
    neural_resolution_final: int | None = None
    neural_resolution_start_kimg: float = 0.0
    neural_resolution_fade_kimg: float = 1000.0
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_cmap_dim: int = 512
    d_mapping_layers: int = 8
    mbstd_group: int = 4
    xflip: bool = True
    mixed_precision: bool = True
    seed: int = 0
    checkpoint_steps: int = 1000
    keep_checkpoints: int = 3
    log_steps: int = 20
    image_steps: int = 1000
    objective: str = "gan"
    distill_points: int = 4096
    distill_render_interval: int = 2
    distill_render_batch: int = 2
    distill_weights: tuple[float, float, float, float] = (1.0, 0.5, 1.0, 1.0)
    mapping_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.kimg <= 0:
            raise ValueError(f"kimg must be positive, got {self.kimg}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "distill_weights", tuple(float(w) for w in self.distill_weights))
        if self.objective not in ("gan", "distill"):
            raise ValueError(f"objective must be 'gan' or 'distill', got {self.objective!r}")

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run (ceil(kimg * 1000 / batch_size))."""
        return max(1, -(-int(round(self.kimg * 1000)) // self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Strict: unknown or missing keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"train config: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        from ide3d_core.atomic_file import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


#: Presets for ``ide3d train --config``.
TRAIN_CONFIGS: dict[str, TrainConfig] = {
    # Seconds on 2 CPU cores: tests and smoke runs. Short fades so every schedule moves.
    "tiny": TrainConfig(
        generator="tiny", batch_size=4, kimg=0.2, r1_interval=4, density_interval=2,
        density_points=64, gpc_fade_kimg=0.1, blur_sigma=1.0, blur_fade_kimg=0.1, ema_kimg=0.01,
        d_channel_base=256, d_channel_max=32, d_cmap_dim=32, d_mapping_layers=2, mbstd_group=2,
        checkpoint_steps=10, keep_checkpoints=2, log_steps=5, image_steps=25),
    # The bundled model: 256 px output, 64 px neural rendering, trained on procedural heads. The
    # dual discriminator is sized to the 6.2 M-parameter generator: 12.1 M parameters (6.1 M per
    # branch; 32 channels at 256 px up to 256 from 32 px down, a 128-d camera embedding through 2
    # layers), so G + G_ema + D fit a 47 MiB float16 transfer checkpoint (docs/training.md).
    "default": TrainConfig(
        generator="default", batch_size=32, kimg=4000.0, blur_sigma=5.0, d_channel_base=8192,
        d_channel_max=256, d_cmap_dim=128, d_mapping_layers=2, checkpoint_steps=1000, image_steps=1000),
    # The bundled model's CPU route: the same generator and run layout, trained by supervised
    # distillation of the procedural heads (training/distill.py). Batch 8 of 3D-supervised heads, 2 of
    # them also rendered; EMA half-life 1 kimg (125 steps). docs/training.md has the measured speed.
    "default-distill": TrainConfig(
        generator="default", objective="distill", batch_size=8, kimg=400.0, lr_g=0.002,
        betas=(0.9, 0.99), ema_kimg=1.0, mapping_lr_scale=100.0, density_weight=0.0, r1_interval=0,
        d_channel_base=8192, d_channel_max=256, d_cmap_dim=128, d_mapping_layers=2,
        checkpoint_steps=50, keep_checkpoints=2, log_steps=10, image_steps=100),
    "tiny-distill": TrainConfig(
        generator="tiny", objective="distill", batch_size=4, kimg=0.2, lr_g=0.002, betas=(0.9, 0.99),
        ema_kimg=0.01, mapping_lr_scale=100.0, density_weight=0.0, r1_interval=0, distill_points=256,
        d_channel_base=256, d_channel_max=32, d_cmap_dim=32, d_mapping_layers=2, mbstd_group=2,
        checkpoint_steps=10, keep_checkpoints=2, log_steps=5, image_steps=25),
    # The paper's configuration: 512 px, 64 px for 10 M images then 128 px for 2.5 M.
    "paper": TrainConfig(
        generator="paper", batch_size=32, kimg=12500.0, neural_resolution_final=128,
        neural_resolution_start_kimg=10000.0, neural_resolution_fade_kimg=500.0),
}
