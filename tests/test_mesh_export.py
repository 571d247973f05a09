# SPDX-License-Identifier: GPL-3.0-or-later
"""Exported files load back with their content and pass the Khronos glTF validator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gltf_helpers import glb_json as _glb_json, validate as _validate
from ide3d_core.cameras import METRES_PER_UNIT
from ide3d_core.labels import ID
from ide3d_core.mesh.analytic import AnalyticField, SphereRenderer, sphere_sdf
from ide3d_core.mesh.attributes import attach_field_attributes
from ide3d_core.mesh.bake import BakeConfig, bake_texture
from ide3d_core.mesh.cleanup import decimate
from ide3d_core.mesh.export import export_mesh
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.grid import GridConfig, sample_density_grid

trimesh = pytest.importorskip("trimesh")

CENTER = (0.0, 0.05, 0.1)
RADIUS = 0.22


def _colour(p):
    return torch.stack([p[:, 0] + 0.5, p[:, 1] + 0.5, p[:, 2] + 0.5], dim=-1).clamp(0, 1)


def _label(p):
    return torch.where(p[:, 1] > 0.15, ID["hair"], torch.where(p[:, 2] > 0.25, ID["nose"], ID["skin"]))


@pytest.fixture(scope="module")
def meshes():
    field = AnalyticField(sphere_sdf(CENTER, RADIUS), label=_label, color=_colour)
    mesh = decimate(marching_cubes(sample_density_grid(field, GridConfig(resolution=48))), 1500)
    mesh = attach_field_attributes(mesh, field)
    renderer = SphereRenderer(CENTER, RADIUS, _colour, 64, 64)
    textured = bake_texture(mesh, field, renderer, BakeConfig(texture_size=128, yaws_degrees=(0.0,),
                                                              pitches_degrees=()))
    return mesh, textured


@pytest.mark.parametrize("parts", [False, True])
@pytest.mark.parametrize("textured", [False, True])
def test_glb_round_trip_and_validator(meshes, tmp_path, parts, textured):
    mesh = meshes[1] if textured else meshes[0]
    path = export_mesh(mesh, tmp_path / "head.glb", parts=parts)[0]
    issues = _validate(path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]

    scene = trimesh.load(path, force="scene")
    names = sorted(scene.geometry)
    if parts:
        assert names == sorted(["skin", "nose", "hair"])
    else:
        assert names == ["head"]
    total = sum(len(g.vertices) for g in scene.geometry.values())
    if not parts:
        assert total == mesh.num_vertices
    assert sum(len(g.faces) for g in scene.geometry.values()) == mesh.num_faces
    # metres, y up, face toward +z: the sphere's top is at (centre y + radius) * 0.5 m
    allv = np.concatenate([g.vertices for g in scene.geometry.values()])
    assert allv[:, 1].max() == pytest.approx((CENTER[1] + RADIUS) * METRES_PER_UNIT, abs=2e-3)
    assert allv[:, 2].max() == pytest.approx((CENTER[2] + RADIUS) * METRES_PER_UNIT, abs=2e-3)
    doc = _glb_json(path)
    assert {m["name"] for m in doc["materials"]} == set(names)
    if textured:
        assert len({im["bufferView"] for im in doc["images"]}) == 1  # one shared texture blob
        for g in scene.geometry.values():
            assert g.visual.uv is not None and g.visual.material.baseColorTexture.size == (128, 128)
    else:
        for g in scene.geometry.values():
            assert "COLOR_0" in json.dumps(doc)
            assert len(g.visual.vertex_attributes["color"]) == len(g.vertices)
    if parts:
        for name, g in scene.geometry.items():
            lab = np.asarray(g.vertex_attributes["_LABEL"]).reshape(-1)
            assert np.bincount(lab.astype(int)).argmax() == ID[name]


def test_single_glb_labels_attribute(meshes, tmp_path):
    mesh = meshes[0]
    path = export_mesh(mesh, tmp_path / "head.glb")[0]
    g = trimesh.load(path, force="scene").geometry["head"]
    np.testing.assert_array_equal(np.asarray(g.vertex_attributes["_LABEL"]).reshape(-1), mesh.labels)
    np.testing.assert_allclose(g.vertices, mesh.vertices * METRES_PER_UNIT, atol=1e-6)
    rgb = np.asarray(g.visual.vertex_attributes["color"])[:, :3] / 255.0
    np.testing.assert_allclose(rgb, _colour(torch.from_numpy(mesh.vertices)).numpy(), atol=1 / 255 + 1e-6)


def test_obj_and_ply(meshes, tmp_path):
    mesh, textured = meshes
    files = export_mesh(textured, tmp_path / "head.obj")
    assert sorted(f.suffix for f in files) == [".mtl", ".obj", ".png"]
    loaded = trimesh.load(files[0], process=False)
    assert len(loaded.faces) == textured.num_faces
    assert loaded.visual.material.image.size == (128, 128)
    plain = export_mesh(mesh, tmp_path / "plain.obj")
    assert len(plain) == 1
    loaded = trimesh.load(plain[0], process=False)
    assert len(loaded.vertices) == mesh.num_vertices
    np.testing.assert_allclose(loaded.visual.vertex_colors[:, :3] / 255.0, mesh.colors, atol=1 / 255 + 1e-6)
    ply = export_mesh(mesh, tmp_path / "head.ply")[0]
    back = trimesh.load(ply, process=False)
    assert len(back.vertices) == mesh.num_vertices
    np.testing.assert_allclose(back.vertices, mesh.vertices * METRES_PER_UNIT, atol=1e-6)
    np.testing.assert_array_equal(back.metadata["_ply_raw"]["vertex"]["data"]["label"], mesh.labels)
    with pytest.raises(ValueError, match="unsupported"):
        export_mesh(mesh, tmp_path / "head.fbx")
