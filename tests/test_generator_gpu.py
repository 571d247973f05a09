# SPDX-License-Identifier: GPL-3.0-or-later
"""CUDA paths: device parity with the CPU, bf16 autocast, CUDA-graph capture (skipped without a GPU)."""
from contextlib import nullcontext

import pytest
import torch

from ide3d_core.cameras import orbit_camera, stack_labels
from ide3d_core.networks import Generator

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cams(device):
    return torch.from_numpy(stack_labels([orbit_camera(0.3, 0.1), orbit_camera(-0.2, 0.0)])).to(device)


def autocast(dtype):
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def test_cuda_matches_cpu():
    G = Generator("tiny").eval()
    ws = G.codes_from_seeds([0, 1])
    ref = G(ws, cams("cpu"))
    Gc = Generator("tiny").cuda().eval()
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        out = Gc(ws.cuda(), cams("cuda"))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    for key in ("image", "semantic", "depth", "opacity", "features_raw"):
        assert torch.allclose(getattr(out, key).cpu(), getattr(ref, key), atol=1e-3), key


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
@torch.no_grad()
def test_cuda_graph_capture_and_replay(autocast_dtype):
    from ide3d_core.networks.cuda_graph import GraphedForward, GraphedRender

    G = Generator("tiny").cuda().eval()
    ws = G.codes_from_seeds([0, 1])
    c = cams("cuda")
    planes = G.planes(ws)
    graphed = GraphedRender(G, planes, c, ws, autocast_dtype=autocast_dtype)
    c2 = c.flip(0).contiguous()
    out = graphed(c=c2)
    with autocast(autocast_dtype):
        eager = G.render(planes, c2, ws)
    assert torch.allclose(out.image.float(), eager.image.float(), atol=1e-3)
    assert torch.allclose(out.depth, eager.depth, atol=1e-5)
    full = GraphedForward(G, ws, c, autocast_dtype=autocast_dtype)
    out = full(ws=ws.flip(0).contiguous())
    with autocast(autocast_dtype):
        eager = G(ws.flip(0).contiguous(), c)
    assert torch.allclose(out.image.float(), eager.image.float(), atol=1e-3)
