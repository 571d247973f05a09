# SPDX-License-Identifier: GPL-3.0-or-later
"""The project's face parser (a stand-in for BiSeNet): model, strict save/load, and parsers for inference.

:class:`SegNet` maps an RGB portrait ``[B, 3, R, R]`` in [-1, 1] to 19-class logits ``[B, 19, R, R]``
(:mod:`ide3d_core.labels` order). Inference uses it for the mask of a photo (``ide3d invert``, photo
import; :func:`tensor_parser`, :func:`array_parser`); training (``training/segnet.py``) fits it on
procedural heads and uses it for the semantic-consistency metric.

Architecture: a three-scale U-Net (two 3x3 convs per scale, group norm, SiLU, bilinear upsampling with
skip connections); ``R`` must be divisible by 4. Saved as ``config.json`` + ``segnet.safetensors``; a
model folder may hold one in ``segnet/`` (:func:`ide3d_core.model_loading.load_model_segnet`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.images import from_uint8_hwc
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.weights_io import CONFIG_FILE, dataclass_from_dict, load_weights, read_config, save_module

FORMAT = "ide3d-segnet"
VERSION = 1
WEIGHTS_FILE = "segnet.safetensors"


@dataclass(frozen=True)
class SegNetConfig:
    """widths: channels at full, 1/2 and 1/4 resolution."""

    widths: tuple[int, int, int] = (32, 64, 128)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive ints, got {self.widths}")


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class SegNet(nn.Module):
    """RGB [B, 3, R, R] in [-1, 1] -> logits [B, 19, R, R] (R divisible by 4)."""

    def __init__(self, config: SegNetConfig = SegNetConfig()) -> None:
        super().__init__()
        self.config = config
        a, b, c = config.widths
        self.enc0, self.enc1, self.enc2 = _block(3, a), _block(a, b), _block(b, c)
        self.dec1, self.dec0 = _block(c + b, b), _block(b + a, a)
        self.head = nn.Conv2d(a, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"SegNet expects [B, 3, R, R] with R divisible by 4, got {tuple(x.shape)}")
        e0 = self.enc0(x)
        e1 = self.enc1(F.avg_pool2d(e0, 2))
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        d1 = self.dec1(torch.cat([up(e2, e1), e1], 1))
        d0 = self.dec0(torch.cat([up(d1, e0), e0], 1))
        return self.head(d0)


def save_segnet(net: SegNet, folder: str | os.PathLike) -> Path:
    """Write ``folder/config.json`` and ``folder/segnet.safetensors`` (see :mod:`ide3d_core.weights_io`)."""
    return save_module(net, folder, format=FORMAT, version=VERSION, config=asdict(net.config),
                       weights_file=WEIGHTS_FILE)


def load_segnet(folder: str | os.PathLike, device: torch.device | str = "cpu") -> SegNet:
    """Strict load: unknown config keys or unmatched weights raise ``ValueError``."""
    data = read_config(folder, format=FORMAT, version=VERSION)
    net = SegNet(dataclass_from_dict(SegNetConfig, data, str(Path(folder) / CONFIG_FILE)))
    return load_weights(net, folder, WEIGHTS_FILE).to(device).eval()



def tensor_parser(net: SegNet) -> Callable[[torch.Tensor], np.ndarray]:
    """``image [1, 3, R, R] in [-1, 1] -> (R, R) uint8 label ids`` (for ``ide3d_core.inversion.invert(parser=)``)."""

    def parse(image: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return net(image).argmax(1)[0].to(torch.uint8).cpu().numpy()

    return parse


def array_parser(net: SegNet) -> Callable[[np.ndarray], np.ndarray]:
    """``(S, S, 3) uint8 sRGB -> (S, S) uint8 label ids`` (for ``ide3d_core.photo.prepare(parser=)``)."""
    parse = tensor_parser(net)
    device = next(net.parameters()).device

    def parse_array(image: np.ndarray) -> np.ndarray:
        return parse(from_uint8_hwc(image).to(device))

    return parse_array
