# SPDX-License-Identifier: GPL-3.0-or-later
"""Fused tri-plane sample + decoder MLP: the field query of the renderers and the mesh grids in one pass.

``triplane_decode(planes, points, plane_axes, box_size, aggregation, mlp, head, density_bias, impl)``:

* ``planes [n, C, P, P]`` (one item's planes; plane ``k`` sees world axes ``plane_axes[k] = (width
  axis, height axis)``), ``points [N, 3]`` model world. The feature ``f [N, F]`` is
  :func:`ops.triplane.triplane_sample` of the points (``grid_sample`` bilinear, zero padding,
  ``align_corners=False`` on ``point * 2 / box_size``; ``F = C`` for "mean"/"sum", ``n C`` for
  "concat").
* ``mlp`` (:class:`MLP`, :func:`pack_mlp`): one hidden layer with softplus, ``y = W2 softplus(W1 f + b1)
  + b2`` ``[N, O]``, effective weights (equalised-lr gains already multiplied in): the decoders of
  ``ide3d_core.networks.decoders`` (which this layer does not import: ops is below ide3d_core).
* ``head``: "linear" ``y``; "semantic" column 0 becomes the density ``softplus(y[:, 0] + density_bias)``,
  the other columns (class logits) stay; "colour" ``2 sigmoid(y) - 1``. :func:`decode_semantic` splits a
  semantic result into ``sigma [N]`` and ``logits [N, O - 1]``.
* ``impl``: "torch" the twin (``grid_sample`` + ``F.linear`` + ``F.softplus``; any device and dtype,
  autograd); "c" the CPU kernel (float32; one pass per point: the 4 x n texel taps, the two layers and
  the activations stay in registers and L1 instead of five ``[N, 64]`` tensors going through memory;
  rows split over ``threads``); "auto" the kernel for float32 CPU tensors when it is built, else the
  twin.
* Numerics of the kernel: float32 throughout, products summed in the twin's order per output (input
  feature by input feature); softplus as ``max(v, 0) + log1p(exp(-|v|))`` with its own ``exp`` (Cody-Waite
  + Cephes polynomial, about 1 ulp, argument clamped to [-87, 88]) and ``log1p(e) = 2 atanh(e / (2 +
  e))`` (series to the 13th power, < 2e-8 relative on ``e`` in (0, 1]), so the loops vectorise without
  libm calls; same values as the twin to a few float32 ulps (tests: ``tests/test_triplane_decode.py``).
  The hidden and output widths are zero-padded to multiples of 16 (one AVX-512 vector): padded hidden
  units have zero outgoing weights, padded outputs are not written.
* Gradients: the kernel's backward recomputes through the twin (inference fast path; training keeps
  the twin), so values and gradients agree with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ops import _native
from ops.triplane import _check, channels_last_planes, triplane_sample_torch

IMPLS = ("auto", "torch", "c")
HEADS = ("linear", "semantic", "colour")
_HEAD_CODE = {"linear": 0, "semantic": 1, "colour": 2}
_AGG_CODE = {"mean": 0, "sum": 1, "concat": 2}
#: Largest feature, hidden and output widths the kernel takes (its per-thread stack buffers).
MAX_WIDTH = 512
_PAD = 16


@dataclass(frozen=True, eq=False)
class MLP:
    """``y = w2 softplus(w1 x + b1) + b2``: ``w1 [H, F]``, ``b1 [H]``, ``w2 [O, H]``, ``b2 [O]`` (effective
    weights, float32), with the kernel's packed copies (``w1t [F, Hp]``, ``b1p [Hp]``, ``w2t [Hp, Op]``,
    ``b2p [Op]``, zero-padded; CPU, contiguous). Build with :func:`pack_mlp`."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w1t: torch.Tensor
    b1p: torch.Tensor
    w2t: torch.Tensor
    b2p: torch.Tensor

    @property
    def in_features(self) -> int:
        return int(self.w1.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.w2.shape[0])

    def rows(self, count: int) -> "MLP":
        """The same MLP with only its first ``count`` outputs (e.g. the density alone: ``rows(1)``)."""
        return pack_mlp(self.w1, self.b1, self.w2[:count], self.b2[:count])


def _pad_to(n: int) -> int:
    return -(-n // _PAD) * _PAD


@torch.no_grad()
def pack_mlp(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> MLP:
    """An :class:`MLP` from effective weights ``w1 [H, F]``, ``b1 [H]``, ``w2 [O, H]``, ``b2 [O]``."""
    h, f = w1.shape
    o = w2.shape[0]
    if b1.shape != (h,) or w2.shape != (o, h) or b2.shape != (o,):
        raise ValueError(f"MLP shapes must be w1 [H, F], b1 [H], w2 [O, H], b2 [O], got {tuple(w1.shape)}, "
                         f"{tuple(b1.shape)}, {tuple(w2.shape)}, {tuple(b2.shape)}")
    hp, op = _pad_to(h), _pad_to(o)
    w1t = torch.zeros(f, hp)
    w1t[:, :h] = w1.detach().float().cpu().t()
    b1p = torch.zeros(hp)
    b1p[:h] = b1.detach().float().cpu()
    w2t = torch.zeros(hp, op)
    w2t[:h, :o] = w2.detach().float().cpu().t()
    b2p = torch.zeros(op)
    b2p[:o] = b2.detach().float().cpu()
    return MLP(w1, b1, w2, b2, w1t, b1p, w2t, b2p)


def _head(y: torch.Tensor, head: str, density_bias: float) -> torch.Tensor:
    if head == "colour":
        return torch.sigmoid(y) * 2.0 - 1.0
    if head == "semantic":
        return torch.cat([F.softplus(y[:, :1] + density_bias), y[:, 1:]], 1)
    return y


def triplane_decode_torch(planes: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float,
                          aggregation: str, mlp: MLP, head: str = "linear", density_bias: float = 0.0,
                          return_features: bool = False):
    """The twin: :func:`ops.triplane.triplane_sample_torch`, then the MLP and the head in PyTorch."""
    f = triplane_sample_torch(planes, points, plane_axes, box_size, aggregation)
    w1, b1, w2, b2 = (t.to(f.device, f.dtype) for t in (mlp.w1, mlp.b1, mlp.w2, mlp.b2))
    y = _head(F.linear(F.softplus(F.linear(f, w1, b1)), w2, b2), head, density_bias)
    return (y, f) if return_features else y


def _kernel(planes_cl, points, plane_axes, box_size, aggregation, mlp: MLP, head, density_bias, threads,
            want_features):
    lib = _native.load()
    n, p, _, c = planes_cl.shape
    pts = points.detach().float().contiguous()
    f_dim = n * c if aggregation == "concat" else c
    o = mlp.out_features
    out = torch.empty(pts.shape[0], o, dtype=torch.float32)
    feats = torch.empty(pts.shape[0], f_dim, dtype=torch.float32) if want_features else None
    axes = torch.tensor([int(i) for a in plane_axes for i in a], dtype=torch.int32)
    hp, op = mlp.w1t.shape[1], mlp.w2t.shape[1]
    fptr = feats.data_ptr() if feats is not None else None
    _native.parallel_rows(
        lambda s, e: lib.triplane_decode(planes_cl.data_ptr(), p, c, n, axes.data_ptr(), pts.data_ptr(),
                                         float(box_size), _AGG_CODE[aggregation], mlp.w1t.data_ptr(),
                                         mlp.b1p.data_ptr(), hp, mlp.w2t.data_ptr(), mlp.b2p.data_ptr(), op, o,
                                         _HEAD_CODE[head], float(density_bias), out.data_ptr(), fptr, s, e),
        pts.shape[0], threads, min_rows=1024)
    return out, feats


class _KernelFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, points, w1, b1, w2, b2, args, mlp, threads, planes_cl, want_features):
        ctx.save_for_backward(planes, points, w1, b1, w2, b2)
        ctx.args = args
        cl = planes_cl if planes_cl is not None else channels_last_planes(planes.detach())
        out, feats = _kernel(cl, points, args[0], args[1], args[2], mlp, args[3], args[4], threads, want_features)
        return (out, feats) if want_features else out

    @staticmethod
    def backward(ctx, grad, *rest):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip(saved, ctx.needs_input_grad[:6])]
            axes, box, agg, head, bias = ctx.args
            mlp = MLP(*leaves[2:], *([None] * 4))
            out = triplane_decode_torch(leaves[0], leaves[1], axes, box, agg, mlp, head, bias)
            inputs = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad, allow_unused=True))
        return (*[next(grads) if t.requires_grad else None for t in leaves], None, None, None, None, None)


def kernel_available(tensor: torch.Tensor) -> bool:
    """Whether ``impl="auto"`` runs the C kernel for this tensor (float32 on the CPU, kernel built)."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32 and _native.load() is not None


def triplane_decode(planes: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float, aggregation: str,
                    mlp: MLP, head: str = "linear", density_bias: float = 0.0, impl: str = "auto",
                    threads: int | None = None, planes_cl: torch.Tensor | None = None,
                    return_features: bool = False):
    """Decode the field at ``points [N, 3]`` (see the module docstring) -> ``y [N, O]``, and the
    aggregated features ``[N, F]`` too with ``return_features``. ``planes_cl``: the planes'
    :func:`ops.triplane.channels_last_planes`, passed by callers that decode the same planes many times."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    _check(planes, points, plane_axes, aggregation, "torch")
    n, c = planes.shape[:2]
    f_dim = n * c if aggregation == "concat" else c
    if mlp.in_features != f_dim:
        raise ValueError(f"the MLP takes {mlp.in_features} features, the planes give {f_dim}")
    if head == "semantic" and mlp.out_features < 1:
        raise ValueError("the semantic head needs at least one output (the density)")
    if impl == "auto":
        impl = "c" if kernel_available(planes) and points.device.type == "cpu" else "torch"
    if impl == "torch":
        return triplane_decode_torch(planes, points, plane_axes, box_size, aggregation, mlp, head, density_bias,
                                     return_features)
    if _native.load() is None:
        raise RuntimeError(f"the C kernel is not available: {_native.unavailable_reason()}")
    if planes.device.type != "cpu" or points.device.type != "cpu":
        raise ValueError("impl='c' runs on CPU tensors")
    if max(f_dim, mlp.w1t.shape[1], mlp.w2t.shape[1]) > MAX_WIDTH:
        raise ValueError(f"impl='c' takes feature, hidden and output widths up to {MAX_WIDTH}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    args = (tuple(tuple(int(i) for i in a) for a in plane_axes), float(box_size), aggregation, head,
            float(density_bias))
    return _KernelFn.apply(planes, points, mlp.w1, mlp.b1, mlp.w2, mlp.b2, args, mlp, threads, planes_cl,
                           return_features)


def decode_semantic(planes: torch.Tensor, points: torch.Tensor, plane_axes, box_size: float, aggregation: str,
                    mlp: MLP, density_bias: float, impl: str = "auto", threads: int | None = None,
                    planes_cl: torch.Tensor | None = None, return_features: bool = False):
    """The semantic field at ``points [N, 3]`` -> ``(sigma [N], logits [N, O - 1])`` (and features
    ``[N, F]`` with ``return_features``): :func:`triplane_decode` with ``head="semantic"``."""
    res = triplane_decode(planes, points, plane_axes, box_size, aggregation, mlp, "semantic", density_bias, impl,
                          threads, planes_cl, return_features)
    y, feats = res if return_features else (res, None)
    out = (y[:, 0], y[:, 1:])
    return (*out, feats) if return_features else out
