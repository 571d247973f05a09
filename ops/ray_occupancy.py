# SPDX-License-Identifier: GPL-3.0-or-later
"""Occupancy of ray samples: which points ``o + t d`` of a batch of rays fall in occupied cells of a grid.

``ray_occupancy(occupied, origins, dirs, depths, box_size, impl)``:

* ``occupied [R, R, R]`` bool, cell ``(i, j, k)`` (axes x, y, z) the cube ``[-box/2 + i box/R, ...]``
  (``ide3d_core.fast_render.OccupancyGrid``, which this layer does not import); ``origins [n, 3]``,
  ``dirs [n, 3]``, ``depths [n, S]`` -> ``[n, S]`` bool: the sample is inside the box (faces included)
  and its cell is occupied. A point on a face between two cells belongs to the upper one (floor).
* ``impl``: "torch" the twin (points materialised, ``floor``, clamp, a gather; any device); "c" the CPU
  kernel (one pass, no ``[n, S, 3]`` temporaries); "auto" the kernel for float32 CPU tensors when built.
* The kernel computes the point with fused multiply-adds where the CPU has them, so a point within a
  float32 rounding of a cell face may land in the neighbouring cell; callers that skip empty space
  dilate their grids by a cell (``fast_render.occupancy_grid`` does), which makes that harmless.
Inference only (boolean output, no gradients).
"""
from __future__ import annotations

import torch

from ops import _native

IMPLS = ("auto", "torch", "c")


def ray_occupancy_torch(occupied: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor,
                        box_size: float) -> torch.Tensor:
    """The twin."""
    r, half = occupied.shape[-1], 0.5 * box_size
    points = origins[:, None] + dirs[:, None] * depths[..., None]
    inside = (points.abs() <= half).all(dim=-1)
    idx = ((points + half) * (r / box_size)).floor().long().clamp_(0, r - 1)
    flat = (idx[..., 0] * r + idx[..., 1]) * r + idx[..., 2]
    return occupied.reshape(-1)[flat] & inside


def ray_occupancy(occupied: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor,
                  box_size: float, impl: str = "auto", threads: int | None = None) -> torch.Tensor:
    """``[n, S]`` bool occupancy of the samples (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    r = occupied.shape[-1]
    if occupied.ndim != 3 or occupied.shape != (r, r, r):
        raise ValueError(f"occupied must be [R, R, R], got {tuple(occupied.shape)}")
    n = origins.shape[0]
    if origins.shape != (n, 3) or dirs.shape != (n, 3) or depths.ndim != 2 or depths.shape[0] != n:
        raise ValueError(f"origins/dirs must be [n, 3] and depths [n, S], got {tuple(origins.shape)}, "
                         f"{tuple(dirs.shape)}, {tuple(depths.shape)}")
    tensors = (occupied, origins, dirs, depths)
    if impl == "auto":
        ok = all(t.device.type == "cpu" for t in tensors) and depths.dtype == torch.float32 \
            and _native.load() is not None
        impl = "c" if ok else "torch"
    if impl == "torch":
        return ray_occupancy_torch(occupied, origins, dirs, depths, box_size)
    lib = _native.load()
    if lib is None:
        raise RuntimeError(f"the C kernel is not available: {_native.unavailable_reason()}")
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError("impl='c' runs on CPU tensors")
    occ = occupied.to(torch.uint8).contiguous()
    o, d, t = (x.detach().float().contiguous() for x in (origins, dirs, depths))
    out = torch.empty(depths.shape, dtype=torch.uint8)
    s = depths.shape[1]
    threads = torch.get_num_threads() if threads is None else int(threads)
    _native.parallel_rows(lambda a, b: lib.ray_occupancy(occ.data_ptr(), r, float(box_size), o.data_ptr(),
                                                         d.data_ptr(), t.data_ptr(), s, out.data_ptr(), a, b),
                          n, threads, min_rows=512)
    return out.bool()
