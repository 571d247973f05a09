# SPDX-License-Identifier: GPL-3.0-or-later
"""A small CNN that reads head yaw and pitch from an aligned crop of a procedural head.

Why: MediaPipe's landmarks on the stylised procedural heads follow only ~0.6 of the true pitch (see
docs/photo_import.md, "Accuracy"), so landmark PnP cannot meet a 5-degree bound there. Like the paper's
encoders, which predict the camera from the image, this net regresses the angles directly; it is trained
(``scripts/train_pose_net.py``) on the pipeline's own ``framing="model"`` crops of procedural renders at
exactly known orbit cameras, so it sees at inference the same kind of crop it was trained on.

Input: (B, 3, R, R) float in [-1, 1] (R = ``config.resolution``; larger aligned images are area-resized by
:func:`estimate_pose`). Output: (B, 2) yaw, pitch in degrees with the signs of
:func:`ide3d_core.cameras.orbit_camera` (positive yaw: the camera sees the subject's left cheek; positive
pitch: the camera is above). :func:`estimate_pose` averages the net over the image and its mirror image
(yaw odd, pitch even), so a mirrored image gets exactly the negated yaw.

Shipped weights: ``templates/pose_net/`` (config.json + pose_net.safetensors, float16, ~0.2 MB).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ide3d_core.images import from_uint8_hwc
from ide3d_core.weights_io import dataclass_from_dict, load_weights, read_config, save_module

FORMAT = "ide3d-pose-net"
VERSION = 1
WEIGHTS_FILE = "pose_net.safetensors"
#: Folder of the shipped weights (trained on procedural heads).
DEFAULT_FOLDER = Path(__file__).with_name("templates") / "pose_net"


@dataclass(frozen=True)
class PoseNetConfig:
    """Architecture of :class:`PoseNet`.

    Attributes:
        resolution: side R of the input crop in pixels (a power of two, >= 16).
        channels: output channels of each stride-2 stage (R halves per stage).
        hidden: width of the fully connected layer before the 2 outputs.
        angle_scale: degrees per unit of the raw output (keeps the regression targets near unit size).
    """

    resolution: int = 64
    channels: tuple[int, ...] = (24, 48, 64, 96)
    hidden: int = 96
    angle_scale: float = 30.0


class PoseNet(nn.Module):
    """Conv stages (3x3 conv + SiLU, 3x3 stride-2 conv + SiLU) -> flatten -> MLP -> (yaw, pitch) degrees."""

    def __init__(self, config: PoseNetConfig = PoseNetConfig()):
        super().__init__()
        r = config.resolution
        if r < 16 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two >= 16, got {r}")
        if r >> len(config.channels) < 2:
            raise ValueError(f"{len(config.channels)} stages reduce {r} px below 2 px")
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = r >> len(config.channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, config.hidden), nn.SiLU(),
                                  nn.Linear(config.hidden, 2))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, 2) yaw, pitch in degrees."""
        r = self.config.resolution
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, r, r):
            raise ValueError(f"expected (B, 3, {r}, {r}) images, got {tuple(image.shape)}")
        return self.head(self.features(image)) * self.config.angle_scale


def symmetric_angles(net: PoseNet, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) -> (B, 2) degrees, averaged with the mirror image: yaw = (f(x) - f(flip x)) / 2,
    pitch = (f(x) + f(flip x)) / 2 (mirroring a view negates its yaw and keeps its pitch)."""
    both = net(torch.cat([image, image.flip(-1)]))
    a, b = both[: len(image)], both[len(image):]
    return torch.stack([(a[:, 0] - b[:, 0]) / 2, (a[:, 1] + b[:, 1]) / 2], 1)


def resize_crops(images: np.ndarray, resolution: int) -> np.ndarray:
    """(B, S, S, 3) or (S, S, 3) uint8 aligned crops -> (B, R, R, 3) uint8, area-resized (the net's input
    resizing, one place for inference and training data)."""
    import cv2

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"expected (B, S, S, 3) images, got {arr.shape}")
    if arr.shape[1] != resolution:
        arr = np.stack([cv2.resize(a, (resolution, resolution), interpolation=cv2.INTER_AREA) for a in arr])
    return arr


def crop_tensor(images: np.ndarray, resolution: int) -> torch.Tensor:
    """(B, S, S, 3) or (S, S, 3) uint8 aligned crops -> (B, 3, R, R) float32 in [-1, 1] (area resize)."""
    crops = resize_crops(images, resolution)
    return from_uint8_hwc(crops if crops.ndim == 4 else crops[None])


@torch.no_grad()
def estimate_pose(net: PoseNet, image: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch (degrees) of one (S, S, 3) uint8 aligned crop (``framing="model"``), on CPU."""
    net.eval()
    yaw, pitch = symmetric_angles(net, crop_tensor(image, net.config.resolution))[0].tolist()
    return float(yaw), float(pitch)


def save_pose_net(net: PoseNet, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``folder/config.json`` and ``folder/pose_net.safetensors``."""
    return save_module(net, folder, format=FORMAT, version=VERSION, config=asdict(net.config),
                       weights_file=WEIGHTS_FILE, dtype=dtype)


def load_pose_net(folder: str | Path = DEFAULT_FOLDER) -> PoseNet:
    """A :class:`PoseNet` (CPU, eval mode) from a folder written by :func:`save_pose_net`; strict."""
    cfg = dataclass_from_dict(PoseNetConfig, read_config(folder, format=FORMAT, version=VERSION), str(folder))
    return load_weights(PoseNet(cfg), folder, WEIGHTS_FILE).eval()


def default_pose_net_available(folder: str | Path = DEFAULT_FOLDER) -> bool:
    """True when the shipped weights are present."""
    return (Path(folder) / WEIGHTS_FILE).is_file()
