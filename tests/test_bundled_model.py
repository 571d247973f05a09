# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped ``default`` model (ide3d_core/models/default), against independent truth.

* Teacher: the model was distilled from the procedural heads, so for a latent ``z`` the exact head
  ``heads_from_latent(z)`` is known; its silhouette and exact labels must agree with the model's render.
* Frames (issue 7): a mesh extracted from the model's density grid in the model world, rasterised
  through :mod:`ide3d_core.cameras`, must cover the neural render's opacity mask (IoU > 0.85 now,
  0.9 once the model is sharper).

The thresholds sit below the values measured when the model was shipped (MODEL_CARD.md), so a broken
loader, camera, plane orientation or renderer fails them; a future better model passes them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ide3d_core.model_loading import BUNDLED_MODEL_DIR

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(),
                                reason="no bundled model in this checkout")


@pytest.fixture(scope="module")
def model():
    from ide3d_core.networks import CONFIGS, load_generator

    torch.set_num_threads(2)
    G = load_generator(BUNDLED_MODEL_DIR).float().eval().requires_grad_(False)
    assert G.config == CONFIGS["default"]
    return G


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@torch.no_grad()
def test_renders_the_procedural_head_of_its_latent(model):
    from ide3d_core.cameras import orbit_camera
    from training.metrics.semantic import mean_iou
    from training.procedural import heads_from_latent, median_padded, render_heads

    z = model.latents_from_seeds([1001, 1002])
    heads = heads_from_latent(median_padded(z))
    ws = model.mapping(z, model.canonical_labels(2))
    planes = model.planes(ws)
    for yaw in (-40.0, 0.0, 40.0):
        c = torch.as_tensor(orbit_camera(math.radians(yaw)).label()).expand(2, 25).contiguous()
        out = model.render(planes, c, ws)
        truth = render_heads(heads, c, 128, antialias=1)
        opacity = F.interpolate(out.opacity, size=(128, 128), mode="bilinear", align_corners=False)[:, 0] > 0.5
        assert _iou(opacity.numpy(), truth.mask[:, 0].numpy() > 0.5) > 0.85, yaw
        labels = F.interpolate(out.semantic, size=(128, 128), mode="bilinear", align_corners=False).argmax(1)
        assert mean_iou(labels, truth.labels) > 0.25, yaw
        # background, face skin and hair where the truth has them (the classes every head has)
        for cls in (0, 1, 17):
            t = truth.labels == cls
            if t.sum() > 200:
                assert _iou(labels.numpy() == cls, t.numpy()) > 0.5, (yaw, cls)


@torch.no_grad()
def test_extracted_mesh_covers_the_neural_silhouette(model):
    """Issue 7's frames bar on the trained model: the mesh at the model's calibrated surface level
    (mesh_level.json, calibrated on seeds 100..105) seen through the camera module covers the neural
    render's opacity mask (> 0.5) with IoU > 0.9, for held-out seeds at yaw -30/0/30."""
    from ide3d_core.cameras import orbit_camera
    from ide3d_core.mesh.extract import marching_cubes
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.mesh.grid import GridConfig, sample_density_grid
    from ide3d_core.mesh.level import iou, silhouette
    from ide3d_core.model_loading import surface_level

    level = surface_level("")
    assert level == 8.0  # the shipped calibration (scripts/calibrate_mesh_level.py)
    res = 128
    for seed in (0, 1):
        ws = model.codes_from_seeds([seed], truncation_psi=0.7)
        field = GeneratorField(model, ws)
        mesh = marching_cubes(sample_density_grid(field, GridConfig(resolution=128)), level)
        assert len(mesh.faces) > 1000
        for yaw in (-30.0, 0.0, 30.0):
            cam = orbit_camera(math.radians(yaw))
            sil = silhouette(mesh.vertices, mesh.faces, cam, res, res)
            out = model.render(field.planes, torch.as_tensor(cam.label())[None], ws)
            opacity = F.interpolate(out.opacity, size=(res, res), mode="bilinear", align_corners=False)[0, 0] > 0.5
            assert iou(sil, opacity.numpy()) > 0.9, (seed, yaw, iou(sil, opacity.numpy()))


@torch.no_grad()
def test_a_far_camera_with_a_longer_lens_sees_the_same_head(model):
    """Ray bounds follow the camera: from 2.2 times the canonical distance with 2.2 times the focal length
    the head fills nearly the same pixels (only the perspective changes)."""
    from ide3d_core.cameras import orbit_camera

    ws = model.codes_from_seeds([3], truncation_psi=0.7)
    planes = model.planes(ws)
    for yaw in (-0.5, 0.0, 0.5):
        near = orbit_camera(yaw)
        far = orbit_camera(yaw, radius=2.7 * 2.2, focal=near.intrinsics[0, 0] * 2.2)
        a, b = (model.render(planes, torch.as_tensor(cam.label())[None].float(), ws).opacity[0, 0] > 0.5
                for cam in (near, far))
        assert a.float().mean() > 0.2 and _iou(a.numpy(), b.numpy()) > 0.9, yaw
