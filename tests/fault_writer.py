# SPDX-License-Identifier: GPL-3.0-or-later
"""Helper process of tests/test_fault_writes.py (not a test module): writes one kind of file over and
over, alternating between two versions, until it is killed.

    python tests/fault_writer.py KIND TARGET

Prints ``ready`` once the first complete write is on disk. ``version(kind, i)`` is also used by the
test itself to produce the two reference files.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def version(kind: str, i: int, target: Path) -> None:
    """Write version ``i`` (0 or 1) of a ``kind`` file to ``target`` with the project's own writer."""
    rng = np.random.default_rng(i)
    if kind == "bytes":
        from ide3d_core.atomic_file import write_atomic

        write_atomic(target, rng.integers(0, 256, 16 << 20, dtype=np.uint8).tobytes())
    elif kind == "image":
        from ide3d_core.image_files import save_image

        save_image(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), target)
    elif kind == "glb":
        from ide3d_core.mesh.export import export_glb
        from ide3d_core.mesh.types import HeadMesh

        v = rng.normal(size=(200_000, 3)).astype(np.float32)
        f = rng.integers(0, len(v), (400_000, 3)).astype(np.int64)
        export_glb(HeadMesh(vertices=v, faces=f), target)
    elif kind == "portrait":
        import torch

        from ide3d_core import portrait as P
        from ide3d_core.cameras import orbit_camera

        g = torch.Generator().manual_seed(i)
        records = tuple(P.EditRecord("invert", {"i": k}, P.PortraitState(torch.randn(1, 14, 512, generator=g)))
                        for k in range(200))
        P.save_portrait(P.Portrait(camera=orbit_camera(0.1 * i).label(), generator_config={}, base_fingerprint="x",
                                   history=records, source_image=rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
                        target)
    elif kind == "generator":
        from ide3d_core.networks import Generator, save_generator

        save_generator(Generator("default", seed=i), target)
    elif kind == "train_config":
        from training.config import TRAIN_CONFIGS

        TRAIN_CONFIGS["tiny"].replace(seed=i).save(target)
    elif kind == "checkpoint":
        import torch

        from training.checkpoint import save_checkpoint

        g = torch.Generator().manual_seed(i)
        save_checkpoint(target, {"w": torch.randn(4 << 20, generator=g)}, {"step": i})
    else:
        raise SystemExit(f"unknown kind {kind}")


def main() -> None:
    kind, target = sys.argv[1], Path(sys.argv[2])
    i = 0
    while True:
        version(kind, i % 2, target)
        if i == 0:
            print("ready", flush=True)
        i += 1


if __name__ == "__main__":
    main()
