# SPDX-License-Identifier: GPL-3.0-or-later
"""CUDA-graph wrappers of the generator's inference passes (fixed batch size and resolution).

The generator's inference forward has no host synchronisation, no data-dependent shapes and no random
draws (``generator=None``), so a whole pass can be captured once and replayed: this removes the
per-kernel launch overhead that dominates at batch 1. Inputs are copied into static buffers before each
replay; the returned tensors are the graph's static outputs (overwritten by the next replay: clone them
to keep them). Usable as ``with torch.autocast("cuda", dtype=torch.bfloat16)`` captures by passing
``autocast_dtype``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from ide3d_core.networks.generator import Generator, RenderResult, TriPlanes


def _autocast(device: torch.device, dtype: torch.dtype | None):
    # cache_enabled=False: the autocast weight-cast cache must not outlive a graph capture.
    return (torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype is not None
            else nullcontext())


def _capture(run: Callable[[], RenderResult], warmup: int) -> tuple[torch.cuda.CUDAGraph, RenderResult]:
    """Call ``run`` ``warmup`` times on a side stream (library autotuning and lazy allocations happen
    outside the capture), then capture one call; returns the graph and its static outputs."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(warmup):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = run()
    return graph, out


class GraphedRender:
    """Replays ``G.render(planes, c, ws, neural_resolution)`` for cached planes (a camera change)."""

    def __init__(self, G: Generator, planes: TriPlanes, c: torch.Tensor, ws: torch.Tensor,
                 neural_resolution: int | None = None, autocast_dtype: torch.dtype | None = None,
                 warmup: int = 2) -> None:
        if c.device.type != "cuda":
            raise ValueError("CUDA graphs need CUDA tensors")
        self.G, self.neural_resolution, self.autocast_dtype = G, neural_resolution, autocast_dtype
        self.planes = TriPlanes(planes.semantic.clone(), planes.texture.clone())
        self.c, self.ws = c.clone(), ws.clone()
        self.graph, self.out = _capture(self._run, warmup)

    def _run(self) -> RenderResult:
        with _autocast(self.c.device, self.autocast_dtype):
            return self.G.render(self.planes, self.c, self.ws, neural_resolution=self.neural_resolution)

    def __call__(self, planes: TriPlanes | None = None, c: torch.Tensor | None = None,
                 ws: torch.Tensor | None = None) -> RenderResult:
        if planes is not None:
            self.planes.semantic.copy_(planes.semantic)
            self.planes.texture.copy_(planes.texture)
        if c is not None:
            self.c.copy_(c)
        if ws is not None:
            self.ws.copy_(ws)
        self.graph.replay()
        return self.out


class GraphedForward:
    """Replays the full pass ``ws, c -> G(ws, c)`` (tri-planes and rendering)."""

    def __init__(self, G: Generator, ws: torch.Tensor, c: torch.Tensor,
                 neural_resolution: int | None = None, autocast_dtype: torch.dtype | None = None,
                 warmup: int = 2) -> None:
        if c.device.type != "cuda":
            raise ValueError("CUDA graphs need CUDA tensors")
        self.G, self.neural_resolution, self.autocast_dtype = G, neural_resolution, autocast_dtype
        self.ws, self.c = ws.clone(), c.clone()
        self.graph, self.out = _capture(self._run, warmup)

    def _run(self) -> RenderResult:
        with _autocast(self.c.device, self.autocast_dtype):
            return self.G(self.ws, self.c, neural_resolution=self.neural_resolution)

    def __call__(self, ws: torch.Tensor | None = None, c: torch.Tensor | None = None) -> RenderResult:
        if ws is not None:
            self.ws.copy_(ws)
        if c is not None:
            self.c.copy_(c)
        self.graph.replay()
        return self.out
