# SPDX-License-Identifier: GPL-3.0-or-later
"""Run logs: scalars as JSON lines (always), plus TensorBoard scalars and image grids when installed.

``RUN_DIR/log.jsonl`` gets one JSON object per logging step (machine-readable, used by the model
card); ``RUN_DIR/tensorboard/`` holds the TensorBoard event files; ``RUN_DIR/images/`` PNG grids.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ide3d_core.image_files import save_image


class RunLog:
    """Writes scalars and image grids of one process (use only on rank 0)."""

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "log.jsonl", "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: JSON lines only
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def image(self, step: int, name: str, grid: np.ndarray) -> Path:
        """grid: (H, W, 3) uint8. Saved as ``images/<name>-<step>.png`` and logged to TensorBoard."""
        out = self.run_dir / "images" / f"{name}-{step:08d}.png"
        out.parent.mkdir(exist_ok=True)
        save_image(grid, out)
        if self._tb is not None:
            self._tb.add_image(name, grid, step, dataformats="HWC")
        return out

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows * H, columns * W, 3) grid, row-major, black padding."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.zeros((rows * h, columns * w, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return out
