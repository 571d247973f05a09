# SPDX-License-Identifier: GPL-3.0-or-later
"""A procedural head through the product's mesh path, checked against outside truth:

* the extracted mesh (ProceduralField -> ide3d_core.mesh) lies on the head's ground-truth surface;
* exported to .glb and rendered by **real Blender** (its own glTF importer and cameras built from
  the packed labels), its silhouettes match the procedural renderer's masks from three cameras
  (IoU > 0.9): every convention between model world, glTF, Blender world and Blender cameras agrees.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core.cameras import orbit_camera, stack_labels
from ide3d_core.mesh import CleanupConfig, GridConfig, MeshConfig, export_glb, extract_head_mesh
from training.procedural import render_heads, sample_heads
from training.procedural.mesh import head_field
from training.procedural.mesh_field import ProceduralField

from blender_helpers import isolated_env, requires_bpy


@pytest.fixture(scope="module")
def head_and_mesh():
    torch.set_num_threads(2)
    head = sample_heads(1, torch.Generator().manual_seed(3), "cpu")
    cfg = MeshConfig(grid=GridConfig(resolution=96), cleanup=CleanupConfig(target_faces=0, smooth_iterations=0))
    return head, extract_head_mesh(ProceduralField(head), cfg).mesh


def test_extracted_vertices_lie_on_the_ground_truth_surface(head_and_mesh):
    head, mesh = head_and_mesh
    value, _ = head_field(head, torch.from_numpy(np.asarray(mesh.vertices, np.float32)))
    spacing = 1.0 / 95
    # The union value is a signed distance near the surface: every vertex within a grid cell of it.
    assert value.abs().max().item() < spacing


@pytest.mark.blender
@requires_bpy
def test_blender_silhouettes_match_procedural_masks(head_and_mesh, tmp_path):
    head, mesh = head_and_mesh
    glb = export_glb(mesh, tmp_path / "head.glb")
    cams = stack_labels([orbit_camera(math.radians(y), math.radians(p)) for y, p in ((-35, 5), (0, 0), (40, -8))])
    np.save(tmp_path / "cams.npy", cams)
    size = 96
    from ide3d_core.mesh.blender_render import render_in_subprocess

    render_in_subprocess(glb, tmp_path / "cams.npy", size, tmp_path / "out", transparent=True,
                         env=isolated_env(tmp_path / "home"), timeout=240)
    truth = render_heads(head.index(torch.zeros(3, dtype=torch.long)), torch.from_numpy(cams), size, 1).mask
    for i in range(3):
        alpha = np.asarray(Image.open(tmp_path / "out" / f"blender_{i}.png"))[..., 3] > 127
        gt = truth[i, 0].numpy() > 0.5
        iou = (alpha & gt).sum() / (alpha | gt).sum()
        assert iou > 0.9, f"camera {i}: silhouette IoU {iou:.3f}"
