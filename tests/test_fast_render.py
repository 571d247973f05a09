# SPDX-License-Identifier: GPL-3.0-or-later
"""The fast renderer (occupancy grid, empty-space skipping, early termination) against the reference
``Generator.render`` on the bundled model: >= 40 dB image PSNR and >= 99.5 % identical label pixels over
orbit cameras, close and far cameras, and Blender cameras with lens shift and odd aspects (rendered the
way the service renders them: a square view covering the frame, then cropped). The field itself is the
truth for the occupancy grid. Small neural resolutions keep each test to a few seconds."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core import fast_render as fr
from ide3d_core.model_loading import BUNDLED_MODEL_DIR
from ide3d_core.networks import Generator
from ide3d_core.networks.config import CONFIGS
from ide3d_core.networks.io import load_generator

MIN_PSNR = 40.0
MIN_LABELS = 0.995


needs_model = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    G = load_generator(BUNDLED_MODEL_DIR)
    with torch.no_grad():
        ws = G.codes_from_seeds([3, 11], truncation_psi=0.7)
        planes = G.planes(ws)
    return G, ws, planes, fr.occupancy_grid(G, planes)


def _item(planes, i):
    return type(planes)(planes.semantic[i:i + 1], planes.texture[i:i + 1])


def _compare(G, planes, ws, grid, labels: np.ndarray, h: int = 32, crop=None, swap=None):
    c = torch.from_numpy(np.asarray(labels, np.float32)).reshape(-1, 25)
    b = c.shape[0]
    pl = type(planes)(planes.semantic.expand(b, -1, -1, -1, -1), planes.texture.expand(b, -1, -1, -1, -1))
    g = fr.OccupancyGrid(grid.occupied.expand(b, -1, -1, -1), grid.sigma_max.expand(b, -1, -1, -1), grid.box_size)
    with torch.no_grad():
        ref = G.render(pl, c, ws.expand(b, -1, -1), neural_resolution=h, texture_swap=swap)
        stats: list = []
        out = fr.render_fast(G, pl, c, ws.expand(b, -1, -1), g, neural_resolution=h, texture_swap=swap, stats=stats)
    for i in range(b):
        a_img, b_img = ref.image[i], out.image[i]
        a_lab, b_lab = ref.semantic[i].argmax(0), out.semantic[i].argmax(0)
        if crop is not None:
            x0, y0, w, hh = crop[i]
            a_img, b_img = a_img[:, y0:y0 + hh, x0:x0 + w], b_img[:, y0:y0 + hh, x0:x0 + w]
            a_lab, b_lab = a_lab[y0:y0 + hh, x0:x0 + w], b_lab[y0:y0 + hh, x0:x0 + w]
        p = fr.psnr(a_img, b_img)
        same = float((a_lab == b_lab).float().mean())
        assert p >= MIN_PSNR, f"camera {i}: PSNR {p:.1f} dB"
        assert same >= MIN_LABELS, f"camera {i}: {100 * same:.2f} % identical labels"
        assert float(ref.opacity[i].max()) > 0.5, "the camera does not see the head (a vacuous check)"
    assert stats[0].evaluated < stats[0].reference
    return ref, out


@needs_model
def test_occupancy_grid_holds_every_dense_point(model):
    # Truth: the field's own density at random points; any point with density above the empty
    # threshold (with margin for the corner sampling) must fall in an occupied cell, and the grid must
    # leave a good part of the box empty (a grid of all-occupied cells would pass vacuously).
    G, ws, planes, grid = model
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(1, 200_000, 3, generator=gen) - 0.5
    for i in range(2):
        with torch.no_grad():
            sigma = G.density(_item(planes, i), pts)[0, :, 0]
        dense = sigma > 0.05
        assert int(dense.sum()) > 1000
        occ = grid.lookup(pts[0], i)
        assert bool(occ[dense].all()), f"{int((~occ[dense]).sum())} dense points in empty cells"
    assert 0.02 < grid.fraction() < 0.6


@needs_model
def test_occupancy_grid_axes_follow_the_planes(model):
    # A grid computed from mirrored planes is the mirror (along x) of the original grid: pins which
    # tensor axis is x (a transposed grid would not mirror this way for an asymmetric head).
    G, ws, planes, grid = model
    mirrored = fr.occupancy_grid(G, G.mirror_planes(planes))
    assert torch.equal(mirrored.occupied, grid.occupied.flip(1))


@needs_model
@pytest.mark.parametrize("yaws", [(0.0, 0.5, -0.9), (1.3, -1.5, 0.25)])
def test_fast_matches_reference_on_orbit_cameras(model, yaws):
    G, ws, planes, grid = model
    labels = C.stack_labels([C.orbit_camera(y, p) for y, p in zip(yaws, (0.1, -0.25, 0.3))])
    for i in range(2):
        _compare(G, _item(planes, i), ws[i:i + 1], fr.OccupancyGrid(grid.occupied[i:i + 1], grid.sigma_max[i:i + 1],
                                                                     grid.box_size), labels)


@needs_model
def test_fast_matches_reference_close_and_far(model):
    G, ws, planes, grid = model
    g0 = fr.OccupancyGrid(grid.occupied[:1], grid.sigma_max[:1], grid.box_size)
    labels = C.stack_labels([C.orbit_camera(0.4, 0.0, radius=1.6), C.orbit_camera(-0.3, 0.2, radius=5.0,
                                                                                   focal=8.0)])
    _compare(G, _item(planes, 0), ws[:1], g0, labels)


def _blender_label(yaw: float, pitch: float, radius: float, w: int, h: int, shift: tuple[float, float],
                   lens: float, pixel_aspect: float = 1.0):
    from ide3d_core.operations.render import square_view

    cam = C.orbit_camera(yaw, pitch, radius=radius)
    bc = C.blender_from_camera(cam, w, h)
    bc = C.BlenderCamera(matrix_world=bc.matrix_world, lens=lens, sensor_width=36.0, sensor_height=24.0,
                         sensor_fit="AUTO", shift_x=shift[0], shift_y=shift[1], resolution_x=w,
                         resolution_y=h, pixel_aspect_x=pixel_aspect)
    camera, bw, bh = C.camera_from_blender(bc)
    label, n, x0, y0 = square_view(camera.label(), bw, bh)
    return label, n, (x0, y0, bw, bh)


@needs_model
def test_fast_matches_reference_on_blender_cameras(model):
    # Lens shift, wide and tall frames, non-square pixels: the service renders the square view that
    # covers the frame at the model's size and crops; compare inside the crop, scaled to 256 px.
    G, ws, planes, grid = model
    g1 = fr.OccupancyGrid(grid.occupied[1:], grid.sigma_max[1:], grid.box_size)
    specs = [(0.3, 0.1, 2.7, 640, 360, (0.12, -0.05), 60.0, 1.0),
             (-0.6, -0.1, 3.2, 300, 500, (-0.08, 0.1), 85.0, 1.0),
             (1.0, 0.2, 2.4, 480, 270, (0.0, 0.15), 50.0, 1.3)]
    labels, crops = [], []
    res = G.img_resolution
    for spec in specs:
        label, n, (x0, y0, w, h) = _blender_label(*spec)
        labels.append(label)
        s = res / n
        crops.append((int(x0 * s), int(y0 * s), max(1, int(w * s)), max(1, int(h * s))))
    _compare(G, _item(planes, 1), ws[1:], g1, np.stack(labels), crop=crops)


@needs_model
def test_fast_matches_reference_with_texture_swap(model):
    G, ws, planes, grid = model
    g0 = fr.OccupancyGrid(grid.occupied[:1], grid.sigma_max[:1], grid.box_size)
    swap = (planes.texture[1:], (13, 1))  # hair and skin from the other head
    ref, out = _compare(G, _item(planes, 0), ws[:1], g0, C.stack_labels([C.orbit_camera(0.2, 0.1)]), swap=swap)
    with torch.no_grad():
        plain = G.render(_item(planes, 0), torch.from_numpy(C.stack_labels([C.orbit_camera(0.2, 0.1)])),
                         ws[:1], neural_resolution=32)
    assert fr.psnr(plain.image, ref.image) < 50.0, "the swap changed nothing (a vacuous check)"


@pytest.mark.parametrize("background_hidden", [0, 16])
def test_random_tiny_model_without_empty_space_matches(background_hidden):
    # An untrained field is dense everywhere: the grid marks (nearly) everything and the fast path
    # must still give the reference's image (batch of two, default thresholds), with or without an
    # environment background behind the head.
    G = Generator(dataclasses.replace(CONFIGS["tiny"], background_hidden=background_hidden)).eval()
    with torch.no_grad():
        ws = G.codes_from_seeds([0, 1])
        planes = G.planes(ws)
        c = torch.from_numpy(C.stack_labels([C.orbit_camera(0.3, 0.0), C.orbit_camera(-0.5, 0.2)]))
        ref = G.render(planes, c, ws)
        out = fr.render_fast(G, planes, c, ws)
    assert fr.psnr(ref.image, out.image) >= MIN_PSNR
    assert torch.allclose(ref.opacity, out.opacity, atol=1e-3)


def test_bad_settings_and_inputs_raise():
    with pytest.raises(ValueError, match="fast render settings"):
        fr.FastRenderSettings(min_weight=-1.0)
    G = Generator("tiny").eval()
    with torch.no_grad():
        ws = G.codes_from_seeds([0])
        planes = G.planes(ws)
    with pytest.raises(ValueError, match="c must be"):
        fr.render_fast(G, planes, torch.zeros(2, 25), ws)


def test_psnr_of_known_noise():
    a = torch.zeros(1, 3, 8, 8)
    assert fr.psnr(a, a) == math.inf
    assert fr.psnr(a, a + 0.02) == pytest.approx(10 * math.log10(4 / 0.0004))
