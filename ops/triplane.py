# SPDX-License-Identifier: GPL-3.0-or-later
"""Tri-plane sampling at points: projection, bilinear taps of three planes, aggregation, in one pass.

``triplane_sample(planes, points, plane_axes, box_size, aggregation, impl)``:

* ``planes`` ``[n, C, P, P]`` (one item's planes; plane ``k`` sees world axes ``plane_axes[k] =
  (width axis, height axis)``), ``points`` ``[N, 3]`` model world -> ``[N, C]`` ("mean", "sum") or
  ``[N, n * C]`` ("concat").
* Semantics are those of ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``
  on the coordinates ``point * 2 / box_size`` (``ide3d_core.triplane``, which this layer does not
  import: ops is below ide3d_core).
* ``impl``: ``"torch"`` the twin (``grid_sample``; any device and dtype, autograd, CUDA-graph
  capturable, sampling in float32 also under bf16 autocast); ``"c"`` the CPU kernel (float32,
  channels-last texel rows: 16 channels are one AVX-512 vector; rows split over ``threads``); ``"auto"``
  the kernel for float32 CPU tensors when it is built, else the twin. On CUDA ``auto`` is the twin.
* Gradients: the kernel's backward recomputes through the twin (the kernel is an inference fast path;
  training keeps the twin), so values and gradients agree with it.

Callers that sample the same planes many times pass ``channels_last_planes(planes)`` once (``[n, P,
P, C]`` contiguous) as ``planes_cl`` to skip the per-call layout change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops import _native

IMPLS = ("auto", "torch", "c")
AGGREGATIONS = ("mean", "sum", "concat")
_AGG_CODE = {"mean": 0, "sum": 1, "concat": 2}


def _check(planes: torch.Tensor, points: torch.Tensor, plane_axes, aggregation: str, impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if planes.ndim != 4 or planes.shape[-1] != planes.shape[-2] or planes.shape[0] != len(plane_axes):
        raise ValueError(f"planes must be [n={len(plane_axes)}, C, P, P], got {tuple(planes.shape)}")
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if any(len(a) != 2 or not all(0 <= int(i) < 3 for i in a) for a in plane_axes):
        raise ValueError(f"plane_axes must be pairs of world axes 0..2, got {plane_axes}")


def triplane_sample_torch(planes: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float = 1.0,
                          aggregation: str = "mean") -> torch.Tensor:
    """The twin: ``grid_sample`` per plane (float32 at least, autocast off), then aggregation."""
    n, c, p, _ = planes.shape
    dtype = torch.promote_types(planes.dtype, torch.float32)
    coords = torch.stack([points[:, [int(a), int(b)]] for a, b in plane_axes], 0) * (2.0 / box_size)
    with torch.autocast(planes.device.type, enabled=False) if planes.device.type in ("cpu", "cuda") \
            else _null():
        out = F.grid_sample(planes.to(dtype), coords[:, None].to(dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # [n, C, 1, N]
    out = out[:, :, 0]  # [n, C, N]
    if aggregation == "mean":
        return out.mean(0).t()
    if aggregation == "sum":
        return out.sum(0).t()
    return out.reshape(n * c, -1).t()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def channels_last_planes(planes: torch.Tensor) -> torch.Tensor:
    """``[n, C, P, P]`` -> contiguous float32 ``[n, P, P, C]`` (the kernel's layout)."""
    return planes.float().permute(0, 2, 3, 1).contiguous()


def _kernel(planes_cl: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float, aggregation: str,
            threads: int) -> torch.Tensor:
    lib = _native.load()
    n, p, _, c = planes_cl.shape
    pts = points.detach().float().contiguous()
    f = n * c if aggregation == "concat" else c
    out = torch.empty(pts.shape[0], f, dtype=torch.float32)
    axes = torch.tensor([int(i) for a in plane_axes for i in a], dtype=torch.int32)
    code = _AGG_CODE[aggregation]
    _native.parallel_rows(
        lambda s, e: lib.triplane_sample(planes_cl.data_ptr(), p, c, n, axes.data_ptr(), pts.data_ptr(),
                                         float(box_size), code, out.data_ptr(), s, e),
        pts.shape[0], threads)
    return out


class _KernelFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, points, plane_axes, box_size, aggregation, threads, planes_cl):
        ctx.save_for_backward(planes, points)
        ctx.args = (plane_axes, box_size, aggregation)
        cl = planes_cl if planes_cl is not None else channels_last_planes(planes.detach())
        return _kernel(cl, points, plane_axes, box_size, aggregation, threads)

    @staticmethod
    def backward(ctx, grad):
        planes, points = ctx.saved_tensors
        with torch.enable_grad():
            p = planes.detach().requires_grad_(ctx.needs_input_grad[0])
            x = points.detach().requires_grad_(ctx.needs_input_grad[1])
            out = triplane_sample_torch(p, x, *ctx.args)
            inputs = [t for t in (p, x) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad))
        gp = next(grads) if ctx.needs_input_grad[0] else None
        gx = next(grads) if ctx.needs_input_grad[1] else None
        return gp, gx, None, None, None, None, None


def kernel_available(tensor: torch.Tensor) -> bool:
    """Whether ``impl="auto"`` runs the C kernel for this tensor (float32 on the CPU, kernel built)."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32 and _native.load() is not None


def triplane_sample(planes: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float = 1.0,
                    aggregation: str = "mean", impl: str = "auto", threads: int | None = None,
                    planes_cl: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``planes [n, C, P, P]`` at ``points [N, 3]`` (see the module docstring) -> ``[N, F]``."""
    _check(planes, points, plane_axes, aggregation, impl)
    if impl == "auto":
        impl = "c" if kernel_available(planes) and points.device.type == "cpu" else "torch"
    if impl == "torch":
        return triplane_sample_torch(planes, points, plane_axes, box_size, aggregation)
    if _native.load() is None:
        raise RuntimeError(f"the C kernel is not available: {_native.unavailable_reason()}")
    if planes.device.type != "cpu" or points.device.type != "cpu":
        raise ValueError("impl='c' runs on CPU tensors")
    threads = torch.get_num_threads() if threads is None else int(threads)
    return _KernelFn.apply(planes, points, tuple(tuple(a) for a in plane_axes), float(box_size), aggregation,
                           threads, planes_cl)
