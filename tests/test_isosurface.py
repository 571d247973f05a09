# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure-numpy iso-surface fallback (ide3d_core.mesh.isosurface.marching_tetrahedra) against closed-form
geometry: a sphere, a torus and a plane from analytic signed distances sampled in index space.

Checked without trimesh: every edge shared by exactly two faces (watertight), every directed edge once
(consistently wound), Euler characteristic 2 (sphere) and 0 (torus), positive signed volume by the
divergence theorem (normals outward for "inside = above the level", PyMCubes' convention), area and
volume within 1 % of the analytic values, vertices on the analytic surface within a fraction of a voxel.
Then against PyMCubes on the same volumes, and end to end on the bundled model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core.mesh.isosurface import marching_cubes, marching_tetrahedra, mcubes_available

needs_mcubes = pytest.mark.skipif(not mcubes_available(), reason="PyMCubes not installed")

SHAPE = (48, 52, 30)  # anisotropic: axis order of the vertex coordinates is checked
SPHERE_C, SPHERE_R = np.array([23.3, 26.6, 14.2]), 12.5
TORUS_C, TORUS_R, TORUS_r = np.array([24.4, 25.7, 14.6]), 15.0, 6.0


def _grid(shape=SHAPE):
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def sphere_sd(x, y, z):
    """Signed distance, positive inside (index units)."""
    return SPHERE_R - np.sqrt((x - SPHERE_C[0]) ** 2 + (y - SPHERE_C[1]) ** 2 + (z - SPHERE_C[2]) ** 2)


def torus_sd(x, y, z):
    """Signed distance to a torus around axis 2, positive inside."""
    ring = np.sqrt((x - TORUS_C[0]) ** 2 + (y - TORUS_C[1]) ** 2) - TORUS_R
    return TORUS_r - np.sqrt(ring ** 2 + (z - TORUS_C[2]) ** 2)


CASES = {
    "sphere": (sphere_sd, 4.0 / 3.0 * math.pi * SPHERE_R ** 3, 4.0 * math.pi * SPHERE_R ** 2, 2),
    "torus": (torus_sd, 2 * math.pi ** 2 * TORUS_R * TORUS_r ** 2, 4 * math.pi ** 2 * TORUS_R * TORUS_r, 0),
}


def signed_volume(v, f):
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def area(v, f):
    return float(np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum() / 2)


def directed_edges(f):
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    sd, vol, ar, euler = CASES[request.param]
    volume = sd(*_grid())
    verts, faces = marching_tetrahedra(volume, 0.0)
    return request.param, sd, vol, ar, euler, volume, verts, faces


def test_watertight_and_consistently_wound(case):
    name, *_, verts, faces = case
    assert faces.dtype == np.int64 and verts.dtype == np.float64 and len(faces) > 1000
    assert faces.min() == 0 and faces.max() == len(verts) - 1  # every vertex used
    assert (faces != np.roll(faces, 1, axis=1)).all()  # no face repeats a vertex
    d = directed_edges(faces)
    undirected, counts = np.unique(np.sort(d, axis=1), axis=0, return_counts=True)
    assert (counts == 2).all(), f"{name}: {(counts != 2).sum()} edges not shared by exactly two faces"
    # consistent winding: each directed edge once, its reverse once
    assert len(np.unique(d, axis=0)) == len(d)


def test_topology_from_euler_characteristic(case):
    name, _, _, _, euler, _, verts, faces = case
    edges = len(np.unique(np.sort(directed_edges(faces), axis=1), axis=0))
    assert len(verts) - edges + len(faces) == euler, name


def test_volume_area_and_orientation_match_the_analytic_shape(case):
    name, _, vol, ar, _, _, verts, faces = case
    v = signed_volume(verts, faces)
    assert v > 0, f"{name}: normals point inward (signed volume {v})"
    assert v == pytest.approx(vol, rel=0.01), name
    assert area(verts, faces) == pytest.approx(ar, rel=0.01), name


def test_vertices_lie_on_the_analytic_surface(case):
    name, sd, *_, verts, faces = case
    err = np.abs(sd(verts[:, 0], verts[:, 1], verts[:, 2]))
    # linear interpolation along an edge up to sqrt(3) voxels long on a surface of radius >= 6 voxels
    assert err.max() < 0.1, (name, err.max())
    assert err.mean() < 0.02, (name, err.mean())


def test_face_normals_point_outward(case):
    name, sd, *_, verts, faces = case
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    big = np.linalg.norm(n, axis=1) > 1e-6
    n = n[big] / np.linalg.norm(n[big], axis=1, keepdims=True)
    c = tri[big].mean(1)
    h = 1e-4  # outward = minus the gradient of the (positive inside) signed distance
    grad = np.stack([(sd(*(c + h * e).T) - sd(*(c - h * e).T)) / (2 * h) for e in np.eye(3)], 1)
    out = -grad / np.linalg.norm(grad, axis=1, keepdims=True)
    dots = np.einsum("ij,ij->i", n, out)
    assert dots.min() > 0.8 and np.median(dots) > 0.99, (name, dots.min())


def test_plane_of_a_linear_field_is_exact():
    x, y, z = _grid((9, 10, 11))
    normal = np.array([0.3, -0.2, 1.0])
    vol = 7.37 - (normal[0] * x + normal[1] * y + normal[2] * z)  # above the level below the plane
    verts, faces = marching_tetrahedra(vol, 0.0)
    np.testing.assert_allclose(verts @ normal, 7.37, atol=1e-9)  # linear interpolation is exact
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # normals toward decreasing values (+normal); the plane's area is its projection's over |cos|
    assert (n @ normal > 0).all()
    assert area(verts, faces) == pytest.approx(8 * 9 * np.linalg.norm(normal) / normal[2], rel=1e-9)


def test_inside_is_above_the_level_and_negation_flips_the_winding():
    vol = sphere_sd(*_grid()) * 3.0 + 5.0  # the surface at level 5, a non-zero level
    v1, f1 = marching_tetrahedra(vol, 5.0)
    v2, f2 = marching_tetrahedra(-vol, -5.0)
    assert signed_volume(v1, f1) > 0 > signed_volume(v2, f2)
    assert signed_volume(v2, f2) == pytest.approx(-signed_volume(v1, f1), rel=1e-9)
    np.testing.assert_allclose(v1, v2, atol=1e-12)  # same crossed edges, same points


def test_dtypes_empty_and_bad_input():
    vol = sphere_sd(*_grid((20, 20, 20)))
    v64, f64 = marching_tetrahedra(vol, 0.0)
    v32, f32 = marching_tetrahedra(vol.astype(np.float32), 0.0)
    np.testing.assert_array_equal(f32, f64)
    np.testing.assert_allclose(v32, v64, atol=1e-4)
    vi, fi = marching_tetrahedra((vol > 0).astype(np.int32), 0.5)  # a binary mask: points at the midpoints
    assert len(fi) > 0 and np.allclose(vi * 2, np.round(vi * 2))
    v, f = marching_tetrahedra(vol, 1e3)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="3-D array"):
        marching_tetrahedra(np.zeros((4, 4)), 0.0)
    with pytest.raises(ValueError, match="3-D array"):
        marching_tetrahedra(np.zeros((4, 1, 4)), 0.0)
    with pytest.raises(ValueError, match="method"):
        marching_cubes(vol, 0.0, method="dual")


def test_auto_method_is_the_fallback_or_pymcubes():
    vol = sphere_sd(*_grid((20, 20, 20)))
    v, f = marching_cubes(vol, 0.0)
    ref = marching_cubes(vol, 0.0, "mcubes" if mcubes_available() else "tetrahedra")
    np.testing.assert_array_equal(f, ref[1])
    np.testing.assert_array_equal(v, ref[0])


@needs_mcubes
@pytest.mark.parametrize("name", sorted(CASES))
def test_agrees_with_pymcubes(name):
    from scipy.spatial import cKDTree

    vol = CASES[name][0](*_grid())
    vt, ft = marching_cubes(vol, 0.0, "tetrahedra")
    vm, fm = marching_cubes(vol, 0.0, "mcubes")
    assert signed_volume(vm, fm) > 0  # the same orientation convention
    assert signed_volume(vt, ft) == pytest.approx(signed_volume(vm, fm), rel=3e-3)
    assert area(vt, ft) == pytest.approx(area(vm, fm), rel=3e-3)
    d1, _ = cKDTree(vm).query(vt)
    d2, _ = cKDTree(vt).query(vm)
    assert max(d1.max(), d2.max()) < 1.0 and (d1.mean() + d2.mean()) / 2 < 0.3  # voxels


# ---- end to end on the bundled model -------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_meshes():
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "config.json").is_file():
        pytest.skip("no bundled model in this checkout")
    from ide3d_core.mesh import CleanupConfig, GridConfig, MeshConfig, extract_head_mesh
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.model_loading import surface_level
    from ide3d_core.networks import load_generator

    torch.set_num_threads(2)
    g = load_generator(BUNDLED_MODEL_DIR).float().eval().requires_grad_(False)
    with torch.no_grad():
        ws = g.codes_from_seeds([0], truncation_psi=0.7)
        field = GeneratorField(g, ws)
        out = {}
        for method in ("tetrahedra", "mcubes") if mcubes_available() else ("tetrahedra",):
            cfg = MeshConfig(grid=GridConfig(resolution=96), level=surface_level(""),
                             cleanup=CleanupConfig(target_faces=20000), isosurface=method)
            out[method] = extract_head_mesh(field, cfg).mesh
    return g, field, ws, out


@torch.no_grad()
def test_bundled_model_mesh_through_the_fallback_covers_the_neural_silhouette(bundled_meshes):
    import torch.nn.functional as F

    from ide3d_core.cameras import orbit_camera
    from ide3d_core.labels import ID
    from ide3d_core.mesh.level import iou, silhouette

    g, field, ws, out = bundled_meshes
    mesh = out["tetrahedra"]
    assert 8000 < mesh.num_faces <= 20000
    assert {ID["skin"], ID["hair"]} <= set(np.unique(mesh.labels).tolist())
    res = 96
    for yaw in (0.0, 35.0):
        cam = orbit_camera(math.radians(yaw))
        sil = silhouette(mesh.vertices, mesh.faces, cam, res, res)
        r = g.render(field.planes, torch.as_tensor(cam.label())[None], ws)
        opacity = F.interpolate(r.opacity, size=(res, res), mode="bilinear", align_corners=False)[0, 0] > 0.5
        assert iou(sil, opacity.numpy()) > 0.9, (yaw, iou(sil, opacity.numpy()))


def _to_surface(points, verts, faces, n=400000):
    """Distance from points to a triangle mesh, through a dense uniform sample of its surface."""
    from scipy.spatial import cKDTree

    tri = verts[faces].astype(np.float64)
    w = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(tri), n, p=w / w.sum())
    u, v = rng.random((2, n))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[pick]
    samples = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return cKDTree(samples).query(points)[0]


@needs_mcubes
def test_bundled_model_fallback_mesh_matches_the_pymcubes_mesh(bundled_meshes):
    from scipy.spatial import cKDTree

    *_, out = bundled_meshes
    t, m = out["tetrahedra"], out["mcubes"]
    assert 0.8 < t.num_vertices / m.num_vertices < 1.25
    spacing = 1.0 / 95
    d1 = _to_surface(t.vertices, m.vertices, m.faces)
    d2 = _to_surface(m.vertices, t.vertices, t.faces)
    chamfer = (d1.mean() + d2.mean()) / 2
    assert chamfer < 0.25 * spacing, (d1.mean() / spacing, d2.mean() / spacing)
    assert max(np.quantile(d1, 0.99), np.quantile(d2, 0.99)) < 1.5 * spacing
    # the same labels on the same surface: the label of the nearest mcubes vertex, mostly
    _, nearest = cKDTree(m.vertices).query(t.vertices)
    assert (t.labels == m.labels[nearest]).mean() > 0.9
    # the same parts: every class holding at least 0.5 % of either mesh's vertices is on both (a few
    # stray vertices of a class, e.g. background at the surface level's edge, may differ)

    def parts(labels):
        ids, counts = np.unique(labels, return_counts=True)
        return set(ids[counts >= 0.005 * len(labels)].tolist())

    assert parts(t.labels) <= set(np.unique(m.labels).tolist()) and parts(m.labels) <= set(np.unique(t.labels).tolist())
