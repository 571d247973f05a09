# SPDX-License-Identifier: GPL-3.0-or-later
"""``Generator.render(..., occupied=...)``: the differentiable render that evaluates the field only where an
occupancy test says it may hold density (the inversion's ``skip_empty``, issue 15), against the full
reference render of the bundled model: images >= 40 dB and labels >= 99.5 % identical, gradients with
respect to the codes nearly parallel to the full render's; all-True equals the full render, all-False is
an empty (background) render; points tested False are never handed to the field."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core import fast_render as fr
from ide3d_core.model_loading import BUNDLED_MODEL_DIR
from ide3d_core.networks.io import load_generator

needs_model = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")


@pytest.fixture(scope="module")
def model():
    G = load_generator(BUNDLED_MODEL_DIR)
    for p in G.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ws = G.codes_from_seeds([5], truncation_psi=0.7)
    cams = torch.from_numpy(np.stack([C.orbit_camera(np.radians(y), np.radians(p)).label()
                                      for y, p in ((0, 0), (35, -10), (-60, 8))]).astype(np.float32))
    return G, ws, cams


def _render(G, ws, cams, occupied, h=32):
    planes = G.planes(ws)
    b = cams.shape[0]
    pl = type(planes)(planes.semantic.expand(b, -1, -1, -1, -1), planes.texture.expand(b, -1, -1, -1, -1))
    grid = fr.occupancy_grid(G, planes) if occupied == "grid" else None
    fn = (lambda pts: grid.lookup(pts, 0)) if grid is not None else occupied  # noqa: E731
    return G.render(pl, cams, ws.expand(b, -1, -1), neural_resolution=h, occupied=fn)


@needs_model
def test_grid_skipping_matches_the_full_render(model):
    G, ws, cams = model
    with torch.no_grad():
        ref = _render(G, ws, cams, None)
        out = _render(G, ws, cams, "grid")
    for i in range(cams.shape[0]):
        assert float(ref.opacity[i].max()) > 0.5, "the camera does not see the head (a vacuous check)"
        p = fr.psnr(ref.image[i], out.image[i])
        same = float((ref.semantic[i].argmax(0) == out.semantic[i].argmax(0)).float().mean())
        assert p >= 40.0, f"camera {i}: {p:.1f} dB"
        assert same >= 0.995, f"camera {i}: {100 * same:.2f} % identical labels"


@needs_model
def test_grid_skipping_keeps_the_code_gradient(model):
    G, ws0, cams = model
    target = torch.linspace(-1, 1, 3 * 256 * 256).reshape(1, 3, 256, 256).expand(cams.shape[0], -1, -1, -1)
    grads = []
    for occ in (None, "grid"):
        ws = ws0.clone().requires_grad_(True)
        out = _render(G, ws, cams, occ)
        (out.image - target).square().mean().backward()
        grads.append(ws.grad.flatten())
    cos = float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
    rel = float((grads[0] - grads[1]).norm() / grads[0].norm())
    assert cos > 0.995 and rel < 0.1, (cos, rel)


@needs_model
def test_all_true_is_the_full_render_and_all_false_is_empty(model):
    G, ws, cams = model
    with torch.no_grad():
        ref = _render(G, ws, cams[:1], None)
        full = _render(G, ws, cams[:1], lambda pts: torch.ones(pts.shape[:2], dtype=torch.bool))
        empty = _render(G, ws, cams[:1], lambda pts: torch.zeros(pts.shape[:2], dtype=torch.bool))
    assert torch.allclose(full.image, ref.image, atol=1e-5)
    assert float(empty.opacity.abs().max()) == 0.0
    assert bool((empty.semantic_raw.argmax(1) == 0).all()), "no density: every pixel is background"


@needs_model
def test_points_tested_false_never_reach_the_field(model):
    G, ws, cams = model
    seen = []
    query = G.query

    def spy(planes, points, swap=None):
        seen.append(points.detach().clone())
        return query(planes, points, swap)

    G.query = spy
    try:
        with torch.no_grad():
            _render(G, ws, cams[:2], lambda pts: pts[..., 0] > 0.1)  # only x > 0.1
    finally:
        del G.query
    pts = torch.cat([p.reshape(-1, 3) for p in seen])
    assert pts.shape[0] > 0 and bool((pts[:, 0] > 0.1).all())
