# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers of the training tests: a tiny dataset folder writer and a shortened ``tiny`` config.

The synthetic dataset is an analytic picture: a skin-coloured disc with two eye dots, the subject's
left eye (``l_eye``) drawn on the image's right (frontal view), hair above, on a background.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core.cameras import orbit_camera
from ide3d_core.labels import ID
from training.config import TRAIN_CONFIGS, TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks on a shared 2-core machine: one torch thread avoids contention (and is faster);
    the thread count is restored afterwards. Import it into a test module to use it there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_sample(res: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(res, res, 3) uint8 image and (res, res) uint8 labels of the analytic face picture."""
    v, u = np.mgrid[0:res, 0:res]
    x, y = (u + 0.5) / res - 0.5 - shift, (v + 0.5) / res - 0.5
    labels = np.zeros((res, res), np.uint8)
    labels[x ** 2 + y ** 2 < 0.3 ** 2] = ID["skin"]
    labels[(x ** 2 + y ** 2 < 0.3 ** 2) & (y < -0.15)] = ID["hair"]
    labels[(x - 0.12) ** 2 + (y + 0.02) ** 2 < 0.05 ** 2] = ID["l_eye"]  # image right = subject's left
    labels[(x + 0.12) ** 2 + (y + 0.02) ** 2 < 0.05 ** 2] = ID["r_eye"]
    palette = np.zeros((19, 3), np.uint8)
    palette[ID["skin"]] = (220, 170, 140)
    palette[ID["hair"]] = (60, 40, 20)
    palette[ID["l_eye"]] = (20, 60, 200)
    palette[ID["r_eye"]] = (20, 160, 60)
    palette[0] = (120, 120, 130)
    return palette[labels], labels


def write_dataset(root: Path, n: int = 6, res: int = 32) -> Path:
    """Write a dataset folder in the training layout; returns ``root``."""
    entries = []
    for i in range(n):
        rel = f"00000/img{i:08d}.png"
        img, lab = synthetic_sample(res, shift=0.02 * (i % 3))
        for sub, arr in (("images", img), ("masks", lab)):
            p = root / sub / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(p)
        cam = orbit_camera(math.radians(10.0 * (i - n / 2)), math.radians(3.0 * (i % 2)))
        entries.append([rel, cam.label().tolist()])
    (root / "images" / "dataset.json").write_text(json.dumps({"labels": entries}))
    return root


def tiny_config(**changes) -> TrainConfig:
    """The ``tiny`` preset shortened for tests (log every step, a few steps)."""
    base = TRAIN_CONFIGS["tiny"].replace(batch_size=2, kimg=0.008, log_steps=1, image_steps=1000,
                                         checkpoint_steps=2, keep_checkpoints=3, density_points=32)
    return base.replace(**changes)
