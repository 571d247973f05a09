# SPDX-License-Identifier: GPL-3.0-or-later
"""Encoders of the hybrid inversion and the canonical editor (IDE-3D section 3.3).

* Texture encoder: an RGB image -> texture codes ``w_t`` ([B, num_texture_ws, w_dim]) plus the camera's
  yaw and pitch (radians, :func:`ide3d_core.cameras.orbit_camera` convention).
* Semantic encoder: a label map (19-class one-hot) -> shape codes ``w_s`` ([B, num_shape_ws, w_dim]).

Both towers have the same layout (1x1 stem, residual down-sampling blocks to 4 x 4, a 4 x 4 head) and
predict an offset from the generator's average code ``w_avg`` (held as a buffer, copied from the
generator's mapping network when the encoder is built), as the original's ``start_from_latent_avg``.

The *canonical editor* is a second :class:`HybridEncoder` with the same architecture whose config has
``canonical=True``: its training procedure (``training/encoders.py``) only ever shows it images and
masks rendered from the canonical front camera, so at edit time it maps a front-view label map painted
by the user straight to ``w_s``.

On disk: ``config.json`` (format tag, version, :class:`EncoderConfig`) beside ``encoder.safetensors``;
loading is strict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.labels import NUM_CLASSES
from ide3d_core.networks.layers import Conv2dLayer, FullyConnected, ResidualDownBlock, init_parameters
from ide3d_core.weights_io import CONFIG_FILE, dataclass_from_dict, load_weights, read_config, save_module

FORMAT = "ide3d-encoder"
VERSION = 1
CONFIG_NAME = CONFIG_FILE
WEIGHTS_NAME = "encoder.safetensors"


@dataclass(frozen=True)
class EncoderConfig:
    """Size of one encoder pair.

    Attributes:
        resolution: input size in pixels; images and masks are resized to it (power of two, >= 8).
        base_channels: channels of the full-resolution stage; doubled at every halving.
        max_channels: cap on the channel count.
        w_dim: width of one code (the generator's ``w_dim``).
        num_shape_ws: number of shape codes ``w_s`` (the generator's ``num_shape_ws``).
        num_texture_ws: number of texture codes ``w_t`` (the generator's ``num_texture_ws``).
        canonical: True for the canonical editor (trained on canonical-camera views only).
    """

    resolution: int = 256
    base_channels: int = 16
    max_channels: int = 256
    w_dim: int = 512
    num_shape_ws: int = 8
    num_texture_ws: int = 10
    canonical: bool = False

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"encoder resolution must be a power of two >= 8, got {self.resolution}")
        for name in ("base_channels", "max_channels", "w_dim", "num_shape_ws", "num_texture_ws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def num_ws(self) -> int:
        return self.num_shape_ws + self.num_texture_ws


#: Size presets; the code counts are filled in from the generator by :func:`config_for_generator`.
PRESETS: dict[str, EncoderConfig] = {
    "tiny": EncoderConfig(resolution=32, base_channels=8, max_channels=32),
    "default": EncoderConfig(resolution=256, base_channels=16, max_channels=256),
    "paper": EncoderConfig(resolution=512, base_channels=32, max_channels=512),
}


def resize_inputs(image: torch.Tensor | None, labels: torch.Tensor | None,
                  resolution: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The encoders' input resizing (either argument may be None): image [B, 3, H, W] bilinear
    (anti-aliased when shrinking), labels [B, H, W] class ids nearest (never invents a class at a
    border), both to ``resolution`` squared; ids come back as int64."""
    r = int(resolution)
    if image is not None:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {tuple(image.shape)}")
        if image.shape[-2:] != (r, r):
            image = F.interpolate(image, size=(r, r), mode="bilinear", align_corners=False,
                                  antialias=image.shape[-1] > r)
    if labels is not None:
        if labels.ndim != 3:
            raise ValueError(f"labels must be [B, H, W] class ids, got {tuple(labels.shape)}")
        labels = labels.long()
        if labels.shape[-2:] != (r, r):
            labels = F.interpolate(labels[:, None].float(), size=(r, r), mode="nearest").long()[:, 0]
    return image, labels


def config_for_generator(generator: nn.Module, preset: str = "default",
                         canonical: bool = False) -> EncoderConfig:
    """The preset ``preset`` sized for ``generator``'s codes (w_dim, num_shape_ws, num_texture_ws)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown encoder preset {preset!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[preset], w_dim=int(generator.w_dim), num_shape_ws=int(generator.num_shape_ws),
                   num_texture_ws=int(generator.num_texture_ws), canonical=canonical)


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------

class EncoderTower(nn.Module):
    """[B, in_channels, R, R] -> [B, num_outputs]: a 1x1 linear stem, residual down-sampling blocks
    (:class:`~ide3d_core.networks.layers.ResidualDownBlock`) to 4 x 4, and a fully connected head over
    the 4 x 4 features whose initial weights are scaled by 0.1, so the tower starts with small outputs
    (codes near the average code)."""

    def __init__(self, in_channels: int, num_outputs: int, cfg: EncoderConfig) -> None:
        super().__init__()
        res, ch = cfg.resolution, min(cfg.base_channels, cfg.max_channels)
        self.stem = Conv2dLayer(in_channels, ch, 1, activation="linear")
        blocks = []
        while res > 4:
            nxt = min(ch * 2, cfg.max_channels)
            blocks.append(ResidualDownBlock(ch, nxt))
            ch, res = nxt, res // 2
        self.blocks = nn.Sequential(*blocks)
        self.head = FullyConnected(ch * 4 * 4, num_outputs, weight_init=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).flatten(1))


class HybridEncoder(nn.Module):
    """The texture and semantic encoders of one pair (standard or canonical editor).

    Buffers: ``w_avg`` [w_dim], the generator's average code the predictions are offsets from.
    Weights are drawn from ``torch.Generator().manual_seed(seed)`` (the same on every machine).
    """

    def __init__(self, cfg: EncoderConfig, w_avg: torch.Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = cfg
        self.texture = EncoderTower(3, cfg.num_texture_ws * cfg.w_dim + 2, cfg)
        self.semantic = EncoderTower(NUM_CLASSES, cfg.num_shape_ws * cfg.w_dim, cfg)
        init_parameters(self, torch.Generator().manual_seed(seed))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim) if w_avg is None
                             else w_avg.detach().clone().float().reshape(cfg.w_dim))

    # -- inputs ------------------------------------------------------------------------------------
    def _resize_image(self, image: torch.Tensor) -> torch.Tensor:
        return resize_inputs(image, None, self.config.resolution)[0]

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        ids = resize_inputs(None, labels, self.config.resolution)[1]
        one_hot = F.one_hot(ids.clamp(0, NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2)
        return one_hot.to(self.w_avg.dtype) * 2.0 - 1.0

    # -- heads ------------------------------------------------------------------------------------
    def encode_texture(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B, 3, H, W] in [-1, 1] -> (w_t [B, num_texture_ws, w_dim], yaw_pitch [B, 2] radians)."""
        cfg = self.config
        out = self.texture(self._resize_image(image))
        w_t = out[:, :-2].view(-1, cfg.num_texture_ws, cfg.w_dim) + self.w_avg
        return w_t, out[:, -2:]

    def encode_shape(self, labels: torch.Tensor) -> torch.Tensor:
        """labels [B, H, W] int ids 0..18 -> w_s [B, num_shape_ws, w_dim]."""
        cfg = self.config
        return self.semantic(self._one_hot(labels)).view(-1, cfg.num_shape_ws, cfg.w_dim) + self.w_avg

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [B,3,H,W], labels [B,H,W]) -> (ws [B, num_ws, w_dim] = cat(w_s, w_t), yaw_pitch [B, 2])."""
        w_t, pose = self.encode_texture(image)
        return torch.cat([self.encode_shape(labels), w_t], 1), pose


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def save_encoder(encoder: HybridEncoder, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``folder/config.json`` and ``folder/encoder.safetensors`` (float32, or ``dtype``: the bundled
    encoders are float16, loaded back as float32); returns the folder."""
    return save_module(encoder, folder, format=FORMAT, version=VERSION, config=asdict(encoder.config),
                       weights_file=WEIGHTS_NAME, dtype=dtype)


def load_encoder(folder: str | Path, device: str | torch.device = "cpu") -> HybridEncoder:
    """Strict inverse of :func:`save_encoder`; raises ``ValueError`` with one line on a bad folder."""
    data = read_config(folder, format=FORMAT, version=VERSION)
    encoder = HybridEncoder(dataclass_from_dict(EncoderConfig, data, str(Path(folder) / CONFIG_NAME)))
    return load_weights(encoder, folder, WEIGHTS_NAME).to(device).eval()
