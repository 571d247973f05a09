# SPDX-License-Identifier: GPL-3.0-or-later
"""Vertex labels, label parts and texture baking against analytic fields and an exact ray caster."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core.labels import ID, NAMES
from ide3d_core.mesh.analytic import AnalyticField, SphereRenderer, sphere_sdf
from ide3d_core.mesh.attributes import attach_field_attributes, face_labels, split_by_label
from ide3d_core.mesh.bake import BakeConfig, bake_texture
from ide3d_core.mesh.cleanup import decimate
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.field import RenderedViews
from ide3d_core.mesh.grid import GridConfig, sample_density_grid
from ide3d_core.mesh.types import HeadMesh
from ide3d_core.mesh.uv import rasterize_uv, unwrap

cv2 = pytest.importorskip("cv2")

CENTER = (0.02, 0.03, 0.1)
RADIUS = 0.22  # inside the canonical framing (the image spans about +-0.29 units at the head)


def colour_fn(p: torch.Tensor) -> torch.Tensor:
    """A smooth colour that is a known function of position."""
    return torch.stack([0.5 + 0.4 * torch.sin(6 * p[:, 0]), 0.5 + 0.4 * torch.cos(5 * p[:, 1]),
                        0.5 + 0.4 * torch.sin(4 * p[:, 2] + 1)], dim=-1)


def two_class(p: torch.Tensor) -> torch.Tensor:
    """hair above y = 0.1, skin below."""
    return torch.where(p[:, 1] > 0.1, ID["hair"], ID["skin"])


def grey(p: torch.Tensor) -> torch.Tensor:
    return torch.full((p.shape[0], 3), 0.5)


@pytest.fixture(scope="module")
def sphere():
    field = AnalyticField(sphere_sdf(CENTER, RADIUS), label=two_class, color=grey)
    return field, decimate(marching_cubes(sample_density_grid(field, GridConfig(resolution=64))), 3000)


def _sample_texture(mesh, uv=None):
    """Bilinear texture look-up at UVs [K, 2] (default: the vertices' UVs) -> [K, 3] in [0, 1]."""
    uv = mesh.uv if uv is None else uv
    t = mesh.texture.shape[0]
    u = (uv[:, 0] * t - 0.5).astype(np.float32)[None]
    v = ((1.0 - uv[:, 1]) * t - 0.5).astype(np.float32)[None]
    img = mesh.texture.astype(np.float32) / 255.0
    return cv2.remap(img, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]


def test_vertex_labels_match_analytic_classes(sphere):
    field, mesh = sphere
    m = attach_field_attributes(mesh, field, chunk=500)
    truth = np.where(m.vertices[:, 1] > 0.1, ID["hair"], ID["skin"])
    assert (m.labels == truth).all()
    np.testing.assert_allclose(m.colors, 0.5)
    parts = split_by_label(m)
    assert list(parts) == ["skin", "hair"]
    assert sum(p.num_faces for p in parts.values()) == m.num_faces
    for name, part in parts.items():
        # a face's class is its majority vertex class: all of its centroid lies on that side (up
        # to one edge length from the boundary plane)
        cy = part.vertices[part.faces].mean(1)[:, 1]
        edge = 0.03
        assert ((cy > 0.1 - edge) if name == "hair" else (cy < 0.1 + edge)).all()
    assert (face_labels(m) >= 0).all()


def test_bake_reproduces_projected_colour_and_falls_back(sphere):
    field, mesh = sphere
    renderer = SphereRenderer(CENTER, RADIUS, colour_fn, width=128, height=128)
    cfg = BakeConfig(texture_size=256, yaws_degrees=(-30.0, 0.0, 30.0), pitches_degrees=(-15.0, 15.0))
    seen = []
    baked = bake_texture(mesh, field, renderer, cfg, progress=lambda d, t, m: seen.append(d))
    assert baked.texture.shape == (256, 256, 3) and baked.uv.shape == (baked.num_vertices, 2)
    assert seen[-1] == 3 + len(cfg.cameras())
    got = _sample_texture(baked)
    truth = colour_fn(torch.from_numpy(baked.vertices)).numpy()
    c = np.asarray(CENTER)
    normal = (baked.vertices - c) / RADIUS
    front = normal[:, 2] > 0.3  # seen by the frontal views
    err = np.abs(got - truth).max(1)
    # Vertices sit on chart borders, where bilinear look-ups straddle the gutter; a vertex whose
    # triangles cover less than a few texels (a sliver chart) cannot be reproduced there.
    t = baked.uv[baked.faces] * baked.texture.shape[0]
    uv_area = 0.5 * np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
    vertex_area = np.zeros(baked.num_vertices)
    for k in range(3):
        np.add.at(vertex_area, baked.faces[:, k], uv_area)
    assert err[front].mean() < 0.01 and np.percentile(err[front], 99) < 0.03
    assert err[front & (vertex_area > 4.0)].max() < 0.06
    # triangle centroids (inside charts) are all right
    cen = baked.vertices[baked.faces].mean(1)
    got_c = _sample_texture(baked, baked.uv[baked.faces].mean(1))
    err_c = np.abs(got_c - colour_fn(torch.from_numpy(cen)).numpy()).max(1)
    assert err_c[(cen[:, 2] - c[2]) / RADIUS > 0.3].max() < 0.04
    back = normal[:, 2] < -0.6  # no camera sees it: the field's grey
    assert back.sum() > 20 and np.abs(got[back] - 0.5).max() < 0.03


def test_bake_rejects_occluded_views(sphere):
    """A renderer whose depth says something nearer occludes the surface: its colour must not be used."""
    field, mesh = sphere

    class Occluded:
        def render(self, labels):
            v = SphereRenderer(CENTER, RADIUS, colour_fn, 64, 64).render(labels)
            return RenderedViews(torch.ones_like(v.rgb), v.depth - 0.1, v.opacity)

    baked = bake_texture(mesh, field, Occluded(), BakeConfig(texture_size=128))
    np.testing.assert_allclose(_sample_texture(baked), 0.5, atol=0.01)


XATLAS_AREA_EPSILON = 1.1920929e-07  # FLT_EPSILON: xatlas leaves faces smaller than this uncharted


def _with_slivers(mesh, every=5, offset=1e-6):
    """Split every ``every``-th face (a, b, c) at a point ``offset`` off the midpoint of edge ab:
    (a, b, p) is a sliver far below xatlas' area epsilon, (b, c, p) and (c, a, p) are ordinary. The
    surface (and watertightness) is unchanged, as after a decimation that leaves slivers."""
    v, faces, extra = mesh.vertices.astype(np.float64), [], []
    for i, (a, b, c) in enumerate(mesh.faces):
        if i % every:
            faces.append((a, b, c))
            continue
        mid = 0.5 * (v[a] + v[b])
        n = len(v) + len(extra)
        extra.append(mid + offset * (v[c] - mid) / np.linalg.norm(v[c] - mid))
        faces += [(a, b, n), (b, c, n), (c, a, n)]
    return HeadMesh(np.concatenate([v, np.array(extra)]).astype(np.float32), np.array(faces))


@pytest.fixture(scope="module")
def sliver_sphere(sphere):
    field, mesh = sphere
    out = _with_slivers(mesh)
    t = out.vertices[out.faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    assert (area < XATLAS_AREA_EPSILON).sum() >= (mesh.num_faces + 4) // 5
    return field, out


def test_uncharted_slivers_cover_no_texels(sliver_sphere):
    """Regression (issue 7): the corners of slivers xatlas cannot chart were snapped to UVs in
    different charts, so each sliver became a UV triangle across the atlas that overwrote the texels
    of the charts under it (grey patches and cloth colour on the face of baked heads)."""
    _, mesh = sliver_sphere
    out, vmapping = unwrap(mesh, padding=2, resolution=256)
    np.testing.assert_array_equal(out.vertices, mesh.vertices[vmapping])
    p = out.vertices[out.faces].astype(np.float64)
    area3 = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    t = out.uv[out.faces].astype(np.float64)
    area_uv = 0.5 * np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
    sliver = area3 < XATLAS_AREA_EPSILON
    # charts are disjoint pieces of the unit square with (nearly) one texel scale: the UV areas sum to
    # less than 1 and no face covers much more than its share (xatlas gives nearly collinear faces a
    # few texels more); slivers keep zero UV area
    assert area_uv.sum() < 1.0
    scale = np.median(area_uv[~sliver] / area3[~sliver])
    assert (area_uv * 256 ** 2 <= (4.0 * scale * area3) * 256 ** 2 + 16.0).all()
    assert (area_uv[sliver] == 0).all()
    # every sliver sits on (a UV of) a vertex next to it in 3D, not at the atlas corner
    assert (out.uv[out.faces[sliver]].reshape(-1, 2) > 0).any(axis=1).all()
    # and every texel still maps to a surface point: texel points of the rasterised atlas lie on the
    # sphere's polygonisation (within its chord error), wherever the later triangles were drawn
    cover = rasterize_uv(out.uv, out.faces, 256)
    pts = (out.vertices[out.faces[cover.face]] * cover.bary[:, :, None]).sum(1)
    radius = np.linalg.norm(pts - np.asarray(CENTER), axis=1)
    assert np.abs(radius - RADIUS).max() < 0.01


def test_bake_with_slivers_reproduces_projected_colour(sliver_sphere):
    """The same bake as above on a mesh with uncharted slivers: triangle centroids are all right."""
    field, mesh = sliver_sphere
    renderer = SphereRenderer(CENTER, RADIUS, colour_fn, width=128, height=128)
    cfg = BakeConfig(texture_size=256, yaws_degrees=(-30.0, 0.0, 30.0), pitches_degrees=(-15.0, 15.0))
    baked = bake_texture(mesh, field, renderer, cfg)
    t = baked.uv[baked.faces].astype(np.float64)
    charted = 0.5 * np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])) > 0
    cen = baked.vertices[baked.faces].mean(1)
    got = _sample_texture(baked, baked.uv[baked.faces].mean(1))
    err = np.abs(got - colour_fn(torch.from_numpy(cen)).numpy()).max(1)
    front = (cen[:, 2] - CENTER[2]) / RADIUS > 0.3
    assert err[front & charted].max() < 0.04
