# SPDX-License-Identifier: GPL-3.0-or-later
"""ops.triplane_decode: the twin against independent truth (the project's own decoders on its own tri-plane
sampling, hand arithmetic, gradcheck in float64), the C kernel against the twin (values on awkward sizes,
every aggregation and head, points outside the box, the magnitudes of a trained decoder; gradients through
the twin), dispatch and errors. Speed is in scripts/bench_interactive.py, not here."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ops import _native
from ops.triplane_decode import MLP, decode_semantic, pack_mlp, triplane_decode, triplane_decode_torch

AXES = ((0, 1), (1, 2), (0, 2))
needs_kernel = pytest.mark.skipif(_native.load() is None, reason=f"no C kernels: {_native.unavailable_reason()}")


def _inputs(n=3, c=5, p=7, m=301, hidden=13, out=7, seed=0, scale=1.0, aggregation="mean"):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(n, c, p, p, generator=g) * scale
    pts = (torch.rand(m, 3, generator=g) - 0.5) * 1.3  # inside, on the faces and outside the box
    pts[:3] = torch.tensor([[0.5, 0.5, 0.5], [-0.5, 0.0, 0.5], [2.0, -3.0, 0.1]])
    f = n * c if aggregation == "concat" else c
    mlp = pack_mlp(torch.randn(hidden, f, generator=g) * scale, torch.randn(hidden, generator=g),
                   torch.randn(out, hidden, generator=g) / math.sqrt(hidden), torch.randn(out, generator=g))
    return planes, pts, mlp


def _decoder_mlp(decoder) -> MLP:
    mk = lambda layer: (layer.weight.float() * layer.weight_gain, layer.bias.float() * layer.lr_mult)  # noqa: E731
    return pack_mlp(*mk(decoder.hidden), *mk(decoder.out))


def test_twin_matches_the_generators_decoders():
    # Independent truth: the generator's own tri-plane sampling (ide3d_core.triplane through its
    # _sample/_coords) and its SemanticDecoder / TextureDecoder modules, on a random 'tiny' generator.
    from ide3d_core import triplane
    from ide3d_core.networks import Generator

    G = Generator("tiny", seed=1).eval().requires_grad_(False)
    cfg = G.config
    with torch.no_grad():
        ws = G.codes_from_seeds([2], truncation_psi=0.9)
        planes = G.planes(ws)
        pts = (torch.rand(1, 500, 3, generator=torch.Generator().manual_seed(4)) - 0.5) * 1.1 * cfg.box_size
        coords = G._coords(pts)
        sigma_ref, logits_ref = G.semantic_decoder(G._sample(planes.semantic, coords))
        colour_ref = G.texture_decoder(G._sample(planes.texture, coords))
    axes = tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes)
    sem_mlp, tex_mlp = _decoder_mlp(G.semantic_decoder), _decoder_mlp(G.texture_decoder)
    sigma, logits = decode_semantic(planes.semantic[0], pts[0], axes, cfg.box_size, cfg.aggregation, sem_mlp,
                                    G.semantic_decoder.density_bias, impl="torch")
    colour = triplane_decode(planes.texture[0], pts[0], axes, cfg.box_size, cfg.aggregation, tex_mlp, "colour",
                             impl="torch")
    torch.testing.assert_close(sigma, sigma_ref[0, :, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, logits_ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(colour, colour_ref[0], rtol=1e-5, atol=1e-6)


def test_twin_by_hand_on_a_texel_centre():
    # Hand arithmetic: a point on a texel centre of all three planes reads those texels; mean of three;
    # then the two layers and the heads written out with math.log/math.exp.
    planes = torch.arange(3 * 2 * 4 * 4, dtype=torch.float64).reshape(3, 2, 4, 4) / 40.0
    centre = lambda i: -0.5 + (i + 0.5) / 4  # noqa: E731
    pts = torch.tensor([[centre(1), centre(2), centre(3)]], dtype=torch.float64)
    feat = (planes[0, :, 2, 1] + planes[1, :, 3, 2] + planes[2, :, 3, 1]) / 3
    w1 = torch.tensor([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]], dtype=torch.float64)
    b1 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    w2 = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 0.25]], dtype=torch.float64)
    b2 = torch.tensor([-0.3, 0.7], dtype=torch.float64)
    mlp = MLP(w1, b1, w2, b2, *([None] * 4))
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    hid = [sp(float(w1[j] @ feat + b1[j])) for j in range(3)]
    y = [sum(float(w2[o, j]) * hid[j] for j in range(3)) + float(b2[o]) for o in range(2)]
    lin = triplane_decode_torch(planes, pts, AXES, 1.0, "mean", mlp, "linear")
    sem = triplane_decode_torch(planes, pts, AXES, 1.0, "mean", mlp, "semantic", density_bias=-1.0)
    col = triplane_decode_torch(planes, pts, AXES, 1.0, "mean", mlp, "colour")
    assert lin[0].tolist() == pytest.approx(y, rel=1e-12)
    assert sem[0].tolist() == pytest.approx([sp(y[0] - 1.0), y[1]], rel=1e-12)
    assert col[0].tolist() == pytest.approx([2 / (1 + math.exp(-v)) - 1 for v in y], rel=1e-12)


def test_twin_gradcheck_float64():
    planes, pts, mlp = _inputs(n=3, c=2, p=4, m=6, hidden=3, out=2)
    d = lambda t: t.double().requires_grad_(True)  # noqa: E731
    args = [d(planes), d(pts * 0.7), d(mlp.w1), d(mlp.b1), d(mlp.w2), d(mlp.b2)]

    def fn(pl, x, w1, b1, w2, b2):
        return triplane_decode_torch(pl, x, AXES, 1.0, "mean", MLP(w1, b1, w2, b2, *([None] * 4)), "semantic", -1.0)

    assert torch.autograd.gradcheck(fn, args)


@needs_kernel
@pytest.mark.parametrize("aggregation", ["mean", "sum", "concat"])
@pytest.mark.parametrize("head", ["linear", "semantic", "colour"])
def test_kernel_matches_twin_on_awkward_sizes(aggregation, head):
    # 5 and 21 channels (not multiples of 16: the kernel's remainder loop), 13/37 hidden, 7/19 outputs,
    # 301 points (not a multiple of the kernel's blocks of 16 and groups of 8).
    for c, hidden, out in [(5, 13, 7), (21, 37, 19), (16, 64, 20)]:
        planes, pts, mlp = _inputs(c=c, hidden=hidden, out=out, aggregation=aggregation)
        ref, fref = triplane_decode(planes, pts, AXES, 1.0, aggregation, mlp, head, -1.0, impl="torch",
                                    return_features=True)
        got, fgot = triplane_decode(planes, pts, AXES, 1.0, aggregation, mlp, head, -1.0, impl="c",
                                    return_features=True)
        assert got.shape == ref.shape and fgot.shape == fref.shape
        torch.testing.assert_close(fgot, fref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
        assert float(got[2].sub(ref[2]).abs().max()) < 1e-4  # the point outside the box: zero features


@needs_kernel
def test_kernel_on_a_trained_decoders_magnitudes():
    # The bundled model's decoders have hidden pre-activations of |v| ~ 100-1000 (softplus far in both
    # tails) and densities in the thousands: values to float32 rounding of those magnitudes, and the
    # labels (argmax of the logits) identical. Random stand-in with the same scales when no model.
    planes, pts, mlp = _inputs(c=16, hidden=64, out=20, m=4000, scale=30.0, seed=5)
    ref = decode_semantic(planes, pts, AXES, 1.0, "mean", mlp, -1.0, impl="torch")
    got = decode_semantic(planes, pts, AXES, 1.0, "mean", mlp, -1.0, impl="c")
    for a, b in zip(got, ref):
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6 * scale)
    agree = float((got[1].argmax(-1) == ref[1].argmax(-1)).float().mean())
    assert agree > 0.999
    # softplus far in the negative tail stays >= 0 and tiny; in the positive tail equals v
    x = torch.tensor([[-200.0], [-30.0], [0.0], [30.0], [200.0]])
    one = pack_mlp(torch.ones(1, 1), torch.zeros(1), torch.ones(1, 1), torch.zeros(1))
    planes1 = torch.ones(3, 1, 2, 2)  # constant planes: the feature at the centre is the constant
    sp = [float(triplane_decode(planes1 * v, torch.zeros(1, 3), AXES, 1.0, "mean", one, impl="c")[0, 0])
          for v in x[:, 0].tolist()]
    assert 0.0 <= sp[0] < 1e-30
    ref_sp = F.softplus(x[:, 0]).tolist()
    assert sp[1] == pytest.approx(ref_sp[1], rel=1e-5) and sp[2] == pytest.approx(math.log(2), rel=1e-6)
    assert sp[3] == pytest.approx(30.0, rel=1e-6) and sp[4] == pytest.approx(200.0, rel=1e-6)


@needs_kernel
def test_kernel_threads_cached_layout_and_gradients():
    from ops.triplane import channels_last_planes

    planes, pts, mlp = _inputs(c=16, hidden=32, out=5, m=5000)
    ref = triplane_decode(planes, pts, AXES, 2.0, "sum", mlp, "colour", impl="torch")
    got = triplane_decode(planes, pts, AXES, 2.0, "sum", mlp, "colour", impl="c", threads=3,
                          planes_cl=channels_last_planes(planes))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    pl, x = planes.clone().requires_grad_(True), pts.clone().requires_grad_(True)
    w1 = mlp.w1.clone().requires_grad_(True)
    m2 = MLP(w1, mlp.b1, mlp.w2, mlp.b2, mlp.w1t, mlp.b1p, mlp.w2t, mlp.b2p)
    g = torch.randn_like(ref)
    outs = {}
    for impl in ("torch", "c"):
        y = triplane_decode(pl, x, AXES, 1.0, "mean", m2, "semantic", -1.0, impl=impl)
        outs[impl] = torch.autograd.grad(y, (pl, x, w1), g)
    for a, b in zip(outs["c"], outs["torch"]):
        torch.testing.assert_close(a, b)


def test_auto_dispatch_fallback_and_errors(monkeypatch, tmp_path):
    planes, pts, mlp = _inputs()
    monkeypatch.setenv("IDE3D_OPS_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "find_compiler", lambda: None)
    _native.reset()
    try:
        assert _native.load() is None
        torch.testing.assert_close(triplane_decode(planes, pts, AXES, 1.0, "mean", mlp, impl="auto"),
                                   triplane_decode_torch(planes, pts, AXES, 1.0, "mean", mlp))
        with pytest.raises(RuntimeError, match="not available"):
            triplane_decode(planes, pts, AXES, 1.0, "mean", mlp, impl="c")
    finally:
        _native.reset()
    with pytest.raises(ValueError, match="impl"):
        triplane_decode(planes, pts, AXES, 1.0, "mean", mlp, impl="gpu")
    with pytest.raises(ValueError, match="head"):
        triplane_decode(planes, pts, AXES, 1.0, "mean", mlp, head="rgb")
    with pytest.raises(ValueError, match="features"):
        triplane_decode(planes, pts, AXES, 1.0, "concat", mlp)
    with pytest.raises(ValueError, match="points"):
        triplane_decode(planes, pts[:, :2], AXES, 1.0, "mean", mlp)
    with pytest.raises(ValueError, match="MLP shapes"):
        pack_mlp(mlp.w1, mlp.b1[:-1], mlp.w2, mlp.b2)
    assert mlp.rows(1).out_features == 1


def test_ops_module_does_not_import_ide3d_core():
    import subprocess
    import sys

    code = ("import sys, ops.triplane_decode; "
            "bad = [m for m in sys.modules if m.startswith('ide3d_core')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flush_denormals_is_scoped_and_restores_the_callers_state():
    from ops.denormals import flush_denormals, flushing

    tiny = torch.full((4,), 1e-39)
    assert not flushing() and float((tiny * 0.5)[0]) > 0  # the default: gradual underflow
    with flush_denormals():
        assert flushing() and float((tiny * 0.5)[0]) == 0.0
    assert not flushing()
    torch.set_flush_denormal(True)
    try:
        with flush_denormals():
            assert flushing()
        assert flushing()  # a caller who had it on keeps it on
    finally:
        torch.set_flush_denormal(False)
    with flush_denormals(enabled=False):
        assert not flushing()
