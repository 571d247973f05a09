# SPDX-License-Identifier: GPL-3.0-or-later
"""ops/: every kernel against its plain-PyTorch twin (values and gradients), the twins against finite
differences (gradcheck, float64, tiny inputs) and against independent arithmetic, the fallback when
no C compiler is present (simulated), and the CUDA twins under graph capture and bf16 autocast (skipped
without CUDA)."""
from __future__ import annotations

import pytest
import torch

from ops import _native
from ops.softplus import softplus, softplus_torch
from ops.triplane import channels_last_planes, triplane_sample, triplane_sample_torch

AXES = ((0, 1), (1, 2), (0, 2))
needs_kernel = pytest.mark.skipif(_native.load() is None, reason=f"no C kernels: {_native.unavailable_reason()}")


def _inputs(n=3, c=5, p=7, m=300, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(n, c, p, p, generator=g, dtype=dtype)
    # points inside, on the faces and outside the box (zero padding), some on texel centres
    pts = (torch.rand(m, 3, generator=g, dtype=dtype) - 0.5) * 1.3
    pts[:4] = torch.tensor([[0.5, 0.5, 0.5], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5 / p, -1.5 / p, 0.2]], dtype=dtype)
    return planes, pts


def test_twin_matches_hand_bilinear_interpolation():
    # Independent arithmetic: a point at texel-centre coordinates reads the texel exactly; half way
    # between two texel centres reads their mean; outside the box reads zero.
    planes = torch.arange(3 * 1 * 4 * 4, dtype=torch.float32).reshape(3, 1, 4, 4)
    centre = lambda i: -0.5 + (i + 0.5) / 4  # texel i's centre along an axis (box 1)
    pts = torch.tensor([[centre(1), centre(2), centre(3)],
                        [0.5 * (centre(0) + centre(1)), centre(2), centre(3)],
                        [2.0, 2.0, 2.0]])
    out = triplane_sample_torch(planes, pts, AXES, 1.0, "concat")
    # plane k sees (width axis, height axis); tensor index [k, 0, height, width]
    assert out[0].tolist() == [planes[0, 0, 2, 1].item(), planes[1, 0, 3, 2].item(), planes[2, 0, 3, 1].item()]
    assert out[1, 0].item() == pytest.approx(0.5 * (planes[0, 0, 2, 0] + planes[0, 0, 2, 1]).item())
    assert out[2].abs().max().item() == 0.0


@needs_kernel
@pytest.mark.parametrize("aggregation", ["mean", "sum", "concat"])
def test_triplane_kernel_matches_twin_values_and_gradients(aggregation):
    planes, pts = _inputs()
    planes.requires_grad_(True)
    pts.requires_grad_(True)
    ref = triplane_sample(planes, pts, AXES, 1.0, aggregation, impl="torch")
    out = triplane_sample(planes, pts, AXES, 1.0, aggregation, impl="c")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    gp_ref, gx_ref = torch.autograd.grad(ref, (planes, pts), g)
    gp, gx = torch.autograd.grad(out, (planes, pts), g)
    torch.testing.assert_close(gp, gp_ref)
    torch.testing.assert_close(gx, gx_ref)


@needs_kernel
def test_triplane_kernel_threads_box_and_cached_layout():
    planes, pts = _inputs(c=16, p=16, m=20_000, seed=1)
    ref = triplane_sample(planes, pts * 2.0, AXES, 2.0, "mean", impl="torch")
    out = triplane_sample(planes, pts * 2.0, AXES, 2.0, "mean", impl="c", threads=2,
                          planes_cl=channels_last_planes(planes))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert triplane_sample(planes, pts, AXES, impl="auto").shape == (20_000, 16)


def test_triplane_twin_gradcheck_float64():
    planes, pts = _inputs(n=3, c=2, p=4, m=6, dtype=torch.float64)
    pts = pts * 0.7  # away from the box faces, where the zero padding makes the field non-smooth
    planes.requires_grad_(True)
    pts.requires_grad_(True)
    for aggregation in ("mean", "concat"):
        assert torch.autograd.gradcheck(lambda p, x: triplane_sample_torch(p, x, AXES, 1.0, aggregation),
                                        (planes, pts), eps=1e-6, atol=1e-5)


@needs_kernel
def test_softplus_kernel_matches_twin_values_and_gradients():
    x = torch.cat([torch.linspace(-40, 40, 2001), torch.randn(100_000) * 4]).requires_grad_(True)
    ref, out = softplus(x, impl="torch"), softplus(x, impl="c")
    torch.testing.assert_close(out, ref, rtol=2e-6, atol=2e-6)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert softplus(torch.zeros(3, 4), impl="c").shape == (3, 4)


def test_softplus_twin_against_formula_and_gradcheck():
    x = torch.linspace(-10, 10, 41, dtype=torch.float64)
    torch.testing.assert_close(softplus_torch(x), torch.log(1 + torch.exp(x)))
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softplus_torch, (x,))


def test_fallback_without_a_compiler(monkeypatch, tmp_path):
    # Simulate a machine without a C compiler (an empty cache, no CC, nothing on the PATH): "auto"
    # runs the twins, "c" says why it cannot run, and values stay the twin's.
    monkeypatch.setenv("IDE3D_OPS_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "find_compiler", lambda: None)
    _native.reset()
    try:
        assert _native.load() is None
        assert "compiler" in _native.unavailable_reason()
        planes, pts = _inputs()
        torch.testing.assert_close(triplane_sample(planes, pts, AXES, impl="auto"),
                                   triplane_sample_torch(planes, pts, AXES))
        x = torch.randn(50)
        torch.testing.assert_close(softplus(x, impl="auto"), softplus_torch(x))
        with pytest.raises(RuntimeError, match="not available"):
            triplane_sample(planes, pts, AXES, impl="c")
        with pytest.raises(RuntimeError, match="not available"):
            softplus(x, impl="c")
        assert not list(tmp_path.iterdir())
    finally:
        _native.reset()


def test_broken_compiler_falls_back(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: fatal error: no input' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IDE3D_OPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "find_compiler", lambda: str(fake))
    _native.reset()
    try:
        assert _native.load() is None
        assert "failed" in _native.unavailable_reason()
        x = torch.randn(10)
        torch.testing.assert_close(softplus(x), softplus_torch(x))
    finally:
        _native.reset()


def test_bad_arguments_raise():
    planes, pts = _inputs()
    with pytest.raises(ValueError, match="impl"):
        triplane_sample(planes, pts, AXES, impl="cuda-magic")
    with pytest.raises(ValueError, match="aggregation"):
        triplane_sample(planes, pts, AXES, aggregation="max")
    with pytest.raises(ValueError, match="points"):
        triplane_sample(planes, pts[:, :2], AXES)
    with pytest.raises(ValueError, match="planes"):
        triplane_sample(planes[:2], pts, AXES)
    with pytest.raises(ValueError, match="impl"):
        softplus(pts, impl="fast")


def test_ops_do_not_import_ide3d_core():
    import subprocess
    import sys

    code = ("import sys, ops.triplane, ops.softplus, ops._native; "
            "bad = [m for m in sys.modules if m.startswith('ide3d_core')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_twins_graph_capture_and_bf16():
    dev = torch.device("cuda")
    planes, pts = (t.to(dev) for t in _inputs(c=8, p=16, m=4096))
    x = torch.randn(4096, 64, device=dev)
    eager = (triplane_sample(planes, pts, AXES, impl="auto"), softplus(x, impl="auto"))
    static = [None, None]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            triplane_sample(planes, pts, AXES), softplus(x)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static[0] = triplane_sample(planes, pts, AXES)
        static[1] = softplus(x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static[0], eager[0])
    torch.testing.assert_close(static[1], eager[1])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = triplane_sample(planes.bfloat16(), pts, AXES)
    assert out.dtype == torch.float32  # sampling stays float32 under autocast
    torch.testing.assert_close(out, triplane_sample(planes.bfloat16().float(), pts, AXES))
