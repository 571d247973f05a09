# SPDX-License-Identifier: GPL-3.0-or-later
"""Density grid + marching cubes + clean-up against closed-form geometry (spheres and boxes).

The surface tests run with both iso-surface extractors: PyMCubes (skipped where it is not installed) and
the pure-numpy marching tetrahedra that Python 3.13 / Blender 5.1+ get (ide3d_core.mesh.isosurface)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core.cameras import orbit_camera
from ide3d_core.mesh.analytic import AnalyticField, box_sdf, sphere_sdf, union_sdf
from ide3d_core.mesh.cleanup import CleanupConfig, clean, decimate, remove_floaters, taubin_smooth
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.grid import GridConfig, sample_density_grid
from ide3d_core.mesh.isosurface import mcubes_available
from ide3d_core.mesh.level import iou as level_iou, silhouette as level_silhouette
from ide3d_core.progress import CancelToken, Cancelled

trimesh = pytest.importorskip("trimesh")

CENTER = np.array([0.05, -0.02, 0.1])
RADIUS = 0.3
ISOSURFACE = [pytest.param("mcubes", marks=pytest.mark.skipif(not mcubes_available(), reason="PyMCubes not installed")),
              "tetrahedra"]


def _trimesh(mesh):
    return trimesh.Trimesh(mesh.vertices.astype(np.float64), mesh.faces, process=False)


@pytest.fixture(scope="module")
def sphere_grid():
    return sample_density_grid(AnalyticField(sphere_sdf(CENTER, RADIUS)), GridConfig(resolution=96))


@pytest.fixture(scope="module", params=ISOSURFACE)
def sphere_mesh(request, sphere_grid):
    return marching_cubes(sphere_grid, method=request.param), sphere_grid.config.spacing


def test_grid_layout_matches_documented_axes():
    # A field that is the x coordinate (plus 1 to stay positive): axis 0 must be x, etc.
    class Coord:
        device = torch.device("cpu")

        def __init__(self, axis):
            self.axis = axis

        def density(self, p):
            return p[:, self.axis] + 1.0

    cfg = GridConfig(resolution=9, bound=0.5, chunk=50)  # chunk < one slice: exercises slice splitting
    for axis in range(3):
        d = sample_density_grid(Coord(axis), cfg).density
        idx = [4, 4, 4]
        idx[axis] = 6
        assert d[tuple(idx)] == pytest.approx(-0.5 + 6 * 0.125 + 1.0)
        assert d[0].max() == 0 and d[:, :, -1].max() == 0  # empty border layer


def test_sphere_volume_area_radius(sphere_mesh):
    mesh, spacing = sphere_mesh
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume == pytest.approx(4.0 / 3.0 * math.pi * RADIUS ** 3, rel=3e-3)
    assert tm.area == pytest.approx(4.0 * math.pi * RADIUS ** 2, rel=3e-3)
    r = np.linalg.norm(mesh.vertices - CENTER, axis=1)
    assert abs(r.mean() - RADIUS) < 0.01 * spacing
    assert np.abs(r - RADIUS).max() < 0.05 * spacing


def test_sphere_normals_point_outward(sphere_mesh):
    mesh, _ = sphere_mesh
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    radial = (centroids - CENTER) / np.linalg.norm(centroids - CENTER, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", mesh.face_normals(), radial) > 0.9).all()


@pytest.mark.parametrize("method", ISOSURFACE)
def test_box_volume_area(method):
    half = np.array([0.2, 0.25, 0.15])
    cfg = GridConfig(resolution=96)
    mesh = marching_cubes(sample_density_grid(AnalyticField(box_sdf((0.0, 0.05, -0.03), half)), cfg), method=method)
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.volume > 0
    size = 2 * half
    area = 2 * (size[0] * size[1] + size[1] * size[2] + size[0] * size[2])
    # Marching cubes cuts the 12 sharp edges with chamfers narrower than one cell: the area deficit is
    # bounded by (edge length) x spacing, the volume deficit by (edge length) x spacing^2.
    edges = 4 * size.sum()
    assert abs(tm.area - area) < edges * cfg.spacing
    assert abs(tm.volume - size.prod()) < edges * cfg.spacing ** 2
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    np.testing.assert_allclose(hi - lo, size, atol=0.05 * cfg.spacing)


@pytest.mark.parametrize("method", ISOSURFACE)
def test_level_not_crossed_is_an_error(method):
    field = AnalyticField(sphere_sdf(CENTER, RADIUS), level=10.0)
    grid = sample_density_grid(field, GridConfig(resolution=16))
    with pytest.raises(ValueError, match="not crossed"):
        marching_cubes(grid, level=1e6, method=method)


@pytest.mark.parametrize("method", ISOSURFACE)
def test_floaters_removed_head_parts_kept(method):
    big = sphere_sdf((0.0, 0.0, 0.0), 0.25)
    part = sphere_sdf((0.0, 0.0, 0.38), 0.08)  # separate, 10 % of the big sphere's area
    speck = sphere_sdf((0.4, 0.4, -0.4), 0.02)  # a floater
    field = AnalyticField(union_sdf(big, part, speck))
    mesh = marching_cubes(sample_density_grid(field, GridConfig(resolution=96)), method=method)
    out = remove_floaters(mesh, 0.01)
    tm = _trimesh(out)
    assert len(tm.split(only_watertight=False)) == 2
    assert np.linalg.norm(out.vertices - [0.4, 0.4, -0.4], axis=1).min() > 0.1
    expected = 4.0 / 3.0 * math.pi * (0.25 ** 3 + 0.08 ** 3)
    assert tm.volume == pytest.approx(expected, rel=5e-3)


def test_decimation_and_smoothing_keep_the_shape(sphere_mesh):
    mesh, _ = sphere_mesh
    dec = decimate(mesh, 2000)
    assert 1800 <= dec.num_faces <= 2000
    tm = _trimesh(dec)
    assert tm.volume == pytest.approx(4.0 / 3.0 * math.pi * RADIUS ** 3, rel=0.01)
    sm = taubin_smooth(mesh, 10)
    r = np.linalg.norm(sm.vertices - CENTER, axis=1)
    assert abs(r.mean() - RADIUS) < 1e-3
    out = clean(mesh, CleanupConfig(smooth_iterations=5, target_faces=3000))
    assert out.num_faces <= 3000 and _trimesh(out).is_watertight


def test_silhouette_matches_analytic_disc(sphere_mesh):
    """Frames: the extracted mesh seen through the camera module covers exactly the pixels whose rays
    hit the analytic sphere."""
    cv2 = pytest.importorskip("cv2")
    mesh, _ = sphere_mesh
    size = 96
    for yaw, pitch in ((0.0, 0.0), (0.6, 0.2), (-1.0, -0.3)):
        cam = orbit_camera(yaw, pitch)
        uv, z = cam.project(mesh.vertices, size, size)
        assert (z > 0).all()
        sil = np.zeros((size, size), np.uint8)
        tris = np.round((uv[mesh.faces] - 0.5) * 16).astype(np.int32)
        for t in tris:
            cv2.fillConvexPoly(sil, t, 1, shift=4)
        origins, dirs = cam.rays(size, size)
        oc = origins - CENTER
        b = (oc * dirs).sum(-1)
        truth = b * b - ((oc * oc).sum(-1) - RADIUS ** 2) > 0
        iou = (truth & (sil > 0)).sum() / (truth | (sil > 0)).sum()
        assert iou > 0.95, (yaw, pitch, iou)
        # the rasteriser the level calibration uses (PIL polygons) against the same truth
        pil = level_silhouette(mesh.vertices, mesh.faces, cam, size, size)
        assert level_iou(pil, truth) > 0.95, (yaw, pitch)


def test_mesh_level_file_round_trip_and_errors(tmp_path):
    from ide3d_core.mesh.extract import DEFAULT_LEVEL
    from ide3d_core.mesh.level import LEVEL_FILE, LevelCalibration, read_level, write_level

    assert read_level(None) == DEFAULT_LEVEL and read_level(tmp_path) == DEFAULT_LEVEL
    write_level(tmp_path, LevelCalibration(7.5, {7.5: [0.9, 0.95]}, (100,), (0.0, 30.0)))
    assert read_level(tmp_path) == 7.5
    (tmp_path / LEVEL_FILE).write_text('{"format": "ide3d-mesh-level", "version": 1, "level": -3}')
    with pytest.raises(ValueError, match="level must be positive"):
        read_level(tmp_path)
    (tmp_path / LEVEL_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=LEVEL_FILE):
        read_level(tmp_path)


def test_progress_and_cancel():
    field = AnalyticField(sphere_sdf(CENTER, RADIUS))
    seen = []
    sample_density_grid(field, GridConfig(resolution=16, chunk=16 * 16 * 4),
                        progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1] == (16, 16) and len(seen) == 4
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        sample_density_grid(field, GridConfig(resolution=16), cancel=token)


@pytest.mark.parametrize("method", ISOSURFACE)
@pytest.mark.parametrize("resolution, block", [(64, 4), (97, 6)])
def test_block_sparse_sampling_gives_the_dense_surface(resolution, block, method):
    field = AnalyticField(union_sdf(sphere_sdf(CENTER, 0.2), box_sdf((0.0, -0.3, 0.0), (0.08, 0.2, 0.08))))
    dense = sample_density_grid(field, GridConfig(resolution=resolution, block=0), level=10.0)
    sparse = sample_density_grid(field, GridConfig(resolution=resolution, block=block), level=10.0)
    assert dense.queried == resolution ** 3 and sparse.queried < 0.6 * dense.queried
    a, b = marching_cubes(dense, method=method), marching_cubes(sparse, method=method)
    assert a.num_faces == b.num_faces
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_matches_cpu():
    from ide3d_core.mesh.analytic import SphereRenderer
    from ide3d_core.mesh.bake import BakeConfig
    from ide3d_core.mesh.pipeline import MeshConfig, extract_head_mesh

    def colour(p):
        return (p + 0.5).clamp(0, 1)

    results = []
    for dev in ("cpu", "cuda"):
        field = AnalyticField(sphere_sdf(CENTER, 0.22), color=colour, device=torch.device(dev))
        cfg = MeshConfig(grid=GridConfig(resolution=64), cleanup=CleanupConfig(target_faces=2000),
                         bake=BakeConfig(texture_size=128, yaws_degrees=(0.0,), pitches_degrees=()))
        results.append(extract_head_mesh(field, cfg, SphereRenderer(CENTER, 0.22, colour, 64, 64)).mesh)
    cpu, gpu = results
    assert abs(cpu.num_faces - gpu.num_faces) <= 10
    assert np.abs(cpu.texture.astype(int) - gpu.texture.astype(int)).mean() < 2.0


def test_block_sparse_falls_back_to_dense_when_the_surface_is_everywhere():
    # a field hovering around the level everywhere (like an untrained generator's)
    class Wavy:
        device = torch.device("cpu")

        def density(self, p):
            return 10.0 + 2.0 * torch.sin(40.0 * p).sum(-1)

    cfg = GridConfig(resolution=33, block=4)
    sparse = sample_density_grid(Wavy(), cfg, level=10.0)
    dense = sample_density_grid(Wavy(), GridConfig(resolution=33, block=0))
    assert sparse.queried > 33 ** 3
    np.testing.assert_array_equal(sparse.density, dense.density)
