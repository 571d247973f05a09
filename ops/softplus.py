# SPDX-License-Identifier: GPL-3.0-or-later
"""Softplus ``log(1 + exp(x))``: the decoders' activation, the largest single cost of a field query on a
CPU (PyTorch's CPU softplus evaluates ``exp`` and ``log1p`` at a few nanoseconds per element).

``softplus(x, impl)``: ``"torch"`` the twin (``F.softplus``, any device and dtype, autograd, CUDA-graph
capturable); ``"c"`` the CPU kernel ``max(x, 0) + log1p(exp(-|x|))`` (float32, vectorised, glibc's
vector ``expf``/``log1pf`` where present; same values to float32 rounding; the twin's threshold of 20
changes nothing in float32 since ``log1p(exp(-20)) < 2^-24 * 20``); ``"auto"``: the kernel for float32
CPU tensors when built, else the twin. Gradient: ``sigmoid(x)`` (the twin's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops import _native

IMPLS = ("auto", "torch", "c")


def softplus_torch(x: torch.Tensor) -> torch.Tensor:
    """The twin."""
    return F.softplus(x)


class _KernelFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, threads):
        ctx.save_for_backward(x)
        out = x.detach().contiguous().clone()
        lib = _native.load()
        _native.parallel_rows(lambda s, e: lib.softplus_inplace(out.data_ptr(), s, e), out.numel(), threads,
                              min_rows=1 << 16)
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x), None


def softplus(x: torch.Tensor, impl: str = "auto", threads: int | None = None) -> torch.Tensor:
    """Softplus of ``x`` (any shape) -> same shape and dtype (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        ok = x.device.type == "cpu" and x.dtype == torch.float32 and _native.load() is not None
        impl = "c" if ok else "torch"
    if impl == "torch":
        return softplus_torch(x)
    if _native.load() is None:
        raise RuntimeError(f"the C kernel is not available: {_native.unavailable_reason()}")
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError(f"impl='c' takes float32 CPU tensors, got {x.dtype} on {x.device}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    return _KernelFn.apply(x, threads)
