# SPDX-License-Identifier: GPL-3.0-or-later
"""The fused ray march (:mod:`ops.ray_march`): its twin against analytic answers (a constant field, empty
space), the C kernel against the twin on random fields and awkward inputs (rays that miss the box, an
all-empty grid, one ray, a ray count that is not a multiple of the tile, no fine samples, odd chunks),
the kernel against the PyTorch march of :mod:`ide3d_core.fast_march` on the bundled model, and the
dispatch of ``FastRenderSettings.march``. (The fast renderer against the reference renderer, with the
default march, is ``tests/test_fast_render.py``.)"""
from __future__ import annotations

import math

import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core import fast_march as fm
from ide3d_core import fast_render as fr
from ide3d_core import triplane
from ide3d_core.model_loading import BUNDLED_MODEL_DIR
from ide3d_core.networks.io import load_generator
from ops import _native
from ops import ray_march as rm
from ops.triplane_decode import pack_mlp

AXES = ((0, 1), (1, 2), (0, 2))
needs_kernel = pytest.mark.skipif(rm.load() is None, reason="no C compiler: the twin is the only march")
needs_model = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")
STEPS = rm.MarchSteps(coarse=12, fine=10, stop_optical_depth=10.0, min_transmittance=1e-4, min_weight=1e-5,
                      coarse_chunk=5)


def _random_field(seed: int, c: int = 5, p: int = 9, hidden: int = 7, k: int = 4, f: int = 3) -> rm.MarchField:
    g = torch.Generator().manual_seed(seed)
    planes = lambda: torch.randn(3, c, p, p, generator=g)  # noqa: E731
    mlp = lambda o: pack_mlp(torch.randn(hidden, c, generator=g), torch.randn(hidden, generator=g),  # noqa: E731
                             torch.randn(o, hidden, generator=g), torch.randn(o, generator=g))
    return rm.MarchField(planes(), planes(), AXES, 1.0, "mean", mlp(1 + k), 2.5, mlp(f))


def _rays(n: int, seed: int, radius: float = 2.7):
    """Rays from a sphere of ``radius`` towards jittered points near the origin (some miss the box)."""
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
    d = torch.nn.functional.normalize(0.6 * torch.rand(n, 3, generator=g) - 0.3 - o, dim=-1)
    return o, d


def _close(a: rm.MarchResult, b: rm.MarchResult, tol: float = 2e-4, mean_tol: float = 2e-6) -> None:
    for name in ("features", "probs", "opacity", "depth"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        err = (x - y).abs()
        assert float(err.max()) <= tol and float(err.mean()) <= mean_tol, f"{name}: max {float(err.max()):.2e}"
    assert abs(a.evaluated - b.evaluated) <= max(2, a.evaluated // 200)


def test_twin_on_a_constant_field_matches_the_analytic_composite():
    # Zero planes and zero weights: density softplus(b + bias), logits and colour constant everywhere. All
    # cells occupied, no stop before the far bound: opacity 1 - exp(-sigma (far - near)) (the intervals
    # tile [near, far]), probs softmax(logits) * opacity, features (2 sigmoid - 1) * opacity, and the
    # expected depth of an exponential law truncated at far (plus the missing mass at far).
    k, hidden = 4, 6
    sem = pack_mlp(torch.zeros(hidden, 5), torch.zeros(hidden), torch.zeros(1 + k, hidden),
                   torch.tensor([0.3, 1.0, -2.0, 0.5, 0.0]))
    tex = pack_mlp(torch.zeros(hidden, 5), torch.zeros(hidden), torch.zeros(2, hidden), torch.tensor([0.4, -1.0]))
    field = rm.MarchField(torch.zeros(3, 5, 8, 8), torch.zeros(3, 5, 8, 8), AXES, 1.0, "mean", sem, -1.0, tex)
    o, d = torch.tensor([[0.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    near, far = 2.6, 3.4  # inside the box all along
    steps = rm.MarchSteps(64, 64, 10.0, 1e-4, 0.0, 8)
    out = rm.ray_march_torch(field, torch.ones(4, 4, 4, dtype=torch.bool), o, d, near, far, steps)
    sigma = math.log1p(math.exp(0.3 - 1.0))
    opacity = 1.0 - math.exp(-sigma * (far - near))
    assert float(out.opacity) == pytest.approx(opacity, rel=1e-5)
    probs = torch.softmax(torch.tensor([1.0, -2.0, 0.5, 0.0]), 0) * opacity
    assert torch.allclose(out.probs[0], probs, atol=1e-6)
    assert torch.allclose(out.features[0], (2 * torch.sigmoid(torch.tensor([0.4, -1.0])) - 1) * opacity, atol=1e-6)
    length = far - near
    expected = near + 1 / sigma - length * math.exp(-sigma * length) / opacity
    assert float(out.depth) == pytest.approx(expected * opacity + (1 - opacity) * far, abs=2e-3)
    assert out.evaluated == 2 * 128  # every sample: density and colour
    if rm.load() is not None:
        _close(rm.ray_march(field, torch.ones(4, 4, 4, dtype=torch.bool), o, d, near, far, steps, impl="c"), out)


@pytest.mark.parametrize("impl", ["torch", pytest.param("c", marks=needs_kernel)])
def test_empty_grid_and_missed_rays_give_nothing(impl):
    field = _random_field(0)
    o, d = _rays(37, 1)
    for occupied, origins, dirs in ((torch.zeros(5, 5, 5, dtype=torch.bool), o, d),  # an all-empty grid
                                    (torch.ones(5, 5, 5, dtype=torch.bool), o, -d)):  # rays pointing away
        out = rm.ray_march(field, occupied, origins, dirs, 2.2, 3.3, STEPS, impl=impl)
        assert out.evaluated == 0
        assert float(out.opacity.abs().max()) == 0 and float(out.features.abs().max()) == 0
        assert float(out.probs.abs().max()) == 0
        assert torch.allclose(out.depth, torch.full((37, 1), 3.3))


@needs_kernel
@pytest.mark.parametrize("n, steps", [(1, STEPS), (17, STEPS), (600, STEPS),
                                      (33, rm.MarchSteps(9, 0, 10.0, 1e-4, 1e-5, 4)),
                                      (40, rm.MarchSteps(16, 16, 2.0, 1e-2, 1e-3, 3))])
def test_kernel_matches_twin_on_random_fields(n, steps):
    field = _random_field(n)
    g = torch.Generator().manual_seed(n)
    occupied = torch.rand(6, 6, 6, generator=g) < 0.6
    o, d = _rays(n, n + 1)
    ref = rm.ray_march(field, occupied, o, d, 2.2, 3.3, steps, impl="torch")
    out = rm.ray_march(field, occupied, o, d, 2.2, 3.3, steps, impl="c", threads=1)
    assert ref.evaluated > 0 and float(ref.opacity.max()) > (0.02 if n == 1 else 0.5), "a vacuous check"
    _close(out, ref)
    two = rm.ray_march(field, occupied, o, d, 2.2, 3.3, steps, impl="c", threads=2)
    _close(two, out, tol=1e-6, mean_tol=1e-7)


def test_bad_inputs_raise():
    field = _random_field(0)
    o, d = _rays(4, 0)
    occ = torch.ones(4, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="impl"):
        rm.ray_march(field, occ, o, d, 2.2, 3.3, STEPS, impl="cuda")
    with pytest.raises(ValueError, match="origins"):
        rm.ray_march(field, occ, o[:, :2], d, 2.2, 3.3, STEPS)
    with pytest.raises(ValueError, match="occupied"):
        rm.ray_march(field, occ[0], o, d, 2.2, 3.3, STEPS)
    with pytest.raises(ValueError, match="march must be"):
        fr.FastRenderSettings(march="gpu")


def test_no_compiler_falls_back_to_the_twin(monkeypatch, tmp_path):
    monkeypatch.setenv("IDE3D_OPS_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "find_compiler", lambda: None)
    _native.reset()
    try:
        field = _random_field(3)
        o, d = _rays(9, 3)
        occ = torch.ones(4, 4, 4, dtype=torch.bool)
        _close(rm.ray_march(field, occ, o, d, 2.2, 3.3, STEPS), rm.ray_march_torch(field, occ, o, d, 2.2, 3.3, STEPS))
        with pytest.raises(RuntimeError, match="not available"):
            rm.ray_march(field, occ, o, d, 2.2, 3.3, STEPS, impl="c")
        planes = fm._Planes(torch.zeros(3, 5, 8, 8), "auto", field.semantic_mlp)
        assert fm.march_impl(fr.FastRenderSettings(), planes, planes, torch.device("cpu")) == "torch"
        with pytest.raises(RuntimeError, match="not available"):
            fm.march_impl(fr.FastRenderSettings(march="c"), planes, planes, torch.device("cpu"))
    finally:
        _native.reset()


@pytest.fixture(scope="module")
def model():
    G = load_generator(BUNDLED_MODEL_DIR).requires_grad_(False)
    with torch.no_grad():
        ws = G.codes_from_seeds([5], truncation_psi=0.7)
        planes = G.planes(ws)
    return G, ws, planes, fr.occupancy_grid(G, planes)


@needs_model
@needs_kernel
@pytest.mark.parametrize("camera", [C.orbit_camera(0.45, 0.12), C.orbit_camera(-1.2, -0.3, radius=1.8)])
def test_kernel_matches_torch_march_and_twin_on_the_bundled_model(model, camera):
    G, ws, planes, grid = model
    origins, dirs, near, far = G.camera_rays(torch.from_numpy(C.stack_labels([camera])), 24)
    s = fr.FastRenderSettings()
    sem_mlp, tex_mlp = fm.decoder_mlp(G.semantic_decoder), fm.decoder_mlp(G.texture_decoder)
    sem, tex = fm._Planes(planes.semantic[0], "auto", sem_mlp), fm._Planes(planes.texture[0], "auto", tex_mlp)
    assert fm.march_impl(s, sem, tex, origins.device) == "c"
    args = (G, sem, tex, None, grid, 0, origins[0], dirs[0], near[0], far[0], s)
    out = rm.MarchResult(*fm.march_c(*args))
    old = rm.MarchResult(*fm.march_torch(*args))
    assert float(old.opacity.max()) > 0.9 and float(old.opacity.min()) == 0, "the rays must hit and miss the head"
    _close(out, old, tol=2e-3, mean_tol=1e-5)
    axes = tuple(triplane.PLANE_AXES[name] for name in G.config.plane_axes)
    field = rm.MarchField(planes.semantic[0], planes.texture[0], axes, G.config.box_size, G.config.aggregation,
                          sem_mlp, float(G.semantic_decoder.density_bias), tex_mlp)
    steps = rm.MarchSteps(G.config.coarse_samples, G.config.fine_samples, s.stop_optical_depth,
                          s.min_transmittance, s.min_weight, s.coarse_chunk)
    twin = rm.ray_march_torch(field, grid.occupied[0], origins[0], dirs[0], near[0], far[0], steps)
    _close(out, twin, tol=2e-3, mean_tol=1e-5)


@needs_model
@needs_kernel
def test_render_fast_same_frame_with_either_march(model):
    G, ws, planes, grid = model
    c = torch.from_numpy(C.stack_labels([C.orbit_camera(0.3, -0.1)]))
    with torch.no_grad():
        a = fr.render_fast(G, planes, c, ws, grid, neural_resolution=32, settings=fr.FastRenderSettings(march="torch"))
        b = fr.render_fast(G, planes, c, ws, grid, neural_resolution=32, settings=fr.FastRenderSettings(march="c"))
    assert fr.psnr(a.image, b.image) >= 60.0
    assert float((a.semantic.argmax(1) == b.semantic.argmax(1)).float().mean()) >= 0.999


@needs_model
@needs_kernel
def test_texture_swap_in_the_kernel_matches_the_torch_march(model):
    # Region restyling: hair and skin coloured from another head's texture planes. Truth for "it swapped":
    # the features differ from the unswapped march where those classes are seen.
    G, ws, planes, grid = model
    other = G.planes(G.codes_from_seeds([9], truncation_psi=0.7)).texture[0]
    origins, dirs, near, far = G.camera_rays(torch.from_numpy(C.stack_labels([C.orbit_camera(0.2, 0.1)])), 24)
    s = fr.FastRenderSettings()
    sem_mlp, tex_mlp = fm.decoder_mlp(G.semantic_decoder), fm.decoder_mlp(G.texture_decoder)
    sem, tex = fm._Planes(planes.semantic[0], "auto", sem_mlp), fm._Planes(planes.texture[0], "auto", tex_mlp)
    args = (G, sem, tex, (other, (13, 1)), grid, 0, origins[0], dirs[0], near[0], far[0], s)
    assert fm.march_impl(s, sem, tex, origins.device) == "c"
    out = rm.MarchResult(*fm.march_c(*args))
    old = rm.MarchResult(*fm.march_torch(*args))
    _close(out, old, tol=2e-3, mean_tol=1e-5)
    plain = rm.MarchResult(*fm.march_c(G, sem, tex, None, *args[4:]))
    assert float((plain.features - out.features).abs().max()) > 0.1, "the swap changed nothing (a vacuous check)"


@needs_kernel
def test_kernel_texture_swap_matches_twin_on_a_random_field():
    # Truth: swapping every class is the march of the other texture; swapping some classes lies between.
    base = _random_field(7)
    other = torch.randn(base.texture.shape, generator=torch.Generator().manual_seed(8))
    names = ("semantic", "texture", "plane_axes", "box_size", "aggregation", "semantic_mlp", "density_bias",
             "texture_mlp")
    parts = {n: getattr(base, n) for n in names}
    swapped = lambda classes: rm.MarchField(**parts, swap_texture=other, swap_classes=classes)  # noqa: E731
    o, d = _rays(50, 7)
    occ = torch.ones(5, 5, 5, dtype=torch.bool)
    everything = rm.ray_march_torch(swapped((0, 1, 2, 3)), occ, o, d, 2.2, 3.3, STEPS)
    _close(everything, rm.ray_march_torch(rm.MarchField(**{**parts, "texture": other}), occ, o, d, 2.2, 3.3, STEPS),
           tol=1e-6, mean_tol=1e-7)
    ref = rm.ray_march_torch(swapped((0, 2)), occ, o, d, 2.2, 3.3, STEPS)
    _close(rm.ray_march(swapped((0, 2)), occ, o, d, 2.2, 3.3, STEPS, impl="c"), ref)
    _close(rm.ray_march(swapped((0, 1, 2, 3)), occ, o, d, 2.2, 3.3, STEPS, impl="c"), everything)
    plain = rm.ray_march_torch(base, occ, o, d, 2.2, 3.3, STEPS)
    for other_result in (plain, everything):
        assert float((other_result.features - ref.features).abs().max()) > 1e-3, "a vacuous check"
    with pytest.raises(ValueError, match="swap_texture"):
        rm.ray_march(swapped((99,)), occ, o, d, 2.2, 3.3, STEPS)
