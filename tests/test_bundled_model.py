# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped ``default`` model (ide3d_core/models/default), against independent truth.

* Fit: the model is auto-decoded (training/autodecoder): its bank heads are procedural heads
  ``heads_from_latent(z)`` with learned codes; 16 of them ship in ``fit_examples.safetensors``. Their
  renders must agree with the exact procedural renders (silhouette, labels, colour).
* Prior: seeds draw new heads from the fitted code prior; they must differ from each other about as
  procedural heads do, and shape and texture stay separate.
* Frames (issue 7): a mesh extracted from the model's density grid in the model world, rasterised
  through :mod:`ide3d_core.cameras`, must cover the neural render's opacity mask (IoU > 0.9).

The thresholds sit below the values measured when the model was shipped (MODEL_CARD.md), so a broken
loader, camera, plane orientation, prior or renderer fails them; a future better model passes them.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ide3d_core.model_loading import BUNDLED_MODEL_DIR

#: Below the values measured when the model was shipped (step 7,295; fit examples 0-2 at yaw -40/0/40:
#: silhouette IoU 0.950-0.960, mIoU 0.738-0.755, PSNR 20.5-21.0 dB at 128 px; 6 seeds' spread at the
#: model's default truncation 0.61 of six procedural heads'; the model before it: 0.90-0.93, 0.59-0.60,
#: 18.7-19.1 dB).
FIT_SILHOUETTE, FIT_MIOU, FIT_PSNR, SAMPLE_DIVERSITY = 0.92, 0.65, 19.5, 0.5


pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(),
                                reason="no bundled model in this checkout")


@pytest.fixture(scope="module")
def model():
    from ide3d_core.networks import CONFIGS, load_generator

    torch.set_num_threads(2)
    G = load_generator(BUNDLED_MODEL_DIR).float().eval().requires_grad_(False)
    plain = CONFIGS["default"]
    detail = {f.name: getattr(plain, f.name) for f in dataclasses.fields(plain) if f.name.startswith("detail_")}
    assert dataclasses.replace(G.config, code_prior_dim=0, code_prior_components=0,
                               background_hidden=0, **detail) == plain
    assert G.config.code_prior_dim > 0 and G.config.background_hidden > 0 and G.config.detail_levels > 0
    return G


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _cams(yaw: float, n: int) -> torch.Tensor:
    from ide3d_core.cameras import orbit_camera

    return torch.as_tensor(orbit_camera(math.radians(yaw)).label()).float().expand(n, 25).contiguous()


@torch.no_grad()
def test_renders_its_training_heads_like_the_procedural_truth(model):
    from safetensors.torch import load_file

    from ide3d_core.inversion.losses import psnr
    from training.autodecoder.loop import codes_to_ws
    from training.metrics.semantic import mean_iou
    from training.procedural import heads_from_latent, median_padded, render_heads

    ex = load_file(str(BUNDLED_MODEL_DIR / "fit_examples.safetensors"))
    z, ws = ex["z"][:3], codes_to_ws(ex["codes"][:3].float(), model)
    heads = heads_from_latent(median_padded(z))
    planes = model.planes(ws)
    for yaw in (-40.0, 0.0, 40.0):
        c = _cams(yaw, 3)
        out = model.render(planes, c, ws)
        truth = render_heads(heads, c, 128, antialias=1)
        opacity = F.interpolate(out.opacity, size=(128, 128), mode="bilinear", align_corners=False)[:, 0] > 0.5
        assert _iou(opacity.numpy(), truth.mask[:, 0].numpy() > 0.5) > FIT_SILHOUETTE, yaw
        labels = F.interpolate(out.semantic, size=(128, 128), mode="bilinear", align_corners=False).argmax(1)
        assert mean_iou(labels, truth.labels) > FIT_MIOU, yaw
        image = F.avg_pool2d(out.image, 2)
        assert float(psnr(image.clamp(-1, 1), truth.image).mean()) > FIT_PSNR, yaw


@torch.no_grad()
def test_seeds_draw_varied_heads_and_shape_stays_apart_from_texture(model):
    from ide3d_core.networks.mapping import mix_shape_texture
    from training.procedural import render_heads, sample_heads

    assert model.default_truncation == 1.0  # a code prior samples untruncated
    ws = model.codes_from_seeds(list(range(6)), truncation_psi=model.default_truncation)
    out = model.render(model.planes(ws), _cams(0.0, 6), ws)
    proc = render_heads(sample_heads(6, torch.Generator().manual_seed(0)), _cams(0.0, 6), 256)

    def spread(x):
        return float(np.mean([(x[i] - x[j]).abs().mean() for i in range(6) for j in range(i + 1, 6)]))

    assert spread(out.image) > SAMPLE_DIVERSITY * spread(proc.image)
    other = model.codes_from_seeds([10, 11, 12, 13, 14, 15], truncation_psi=0.7)
    mixed = mix_shape_texture(ws, other, model.num_shape_ws)
    pts = torch.rand(6, 2000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    a, b = model.query(model.planes(ws), pts), model.query(model.planes(mixed), pts)
    assert torch.equal(a.sigma, b.sigma) and torch.equal(a.semantic, b.semantic)
    assert not torch.allclose(a.features, b.features)


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

    level = surface_level("")  # the shipped calibration (scripts/calibrate_mesh_level.py --write)
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


def test_encoder_sample_bank_through_the_fast_path_matches_the_reference(model):
    """``render_bank`` renders through the fast path by default; on the bundled model its stored inputs
    match the reference renderer's (the same codes and cameras): labels on >= 99 % of pixels, images to
    >= 35 dB after the uint8 rounding, for the standard pair's two views and the canonical editor's one."""
    from training.encoders import EncoderTrainingPolicy, render_bank

    policy = EncoderTrainingPolicy(truncation_psi=1.0, seed=3)
    for views, canonical in ((2, False), (1, True)):
        fast = render_bank(model, 2, views, 128, canonical, policy)
        ref = render_bank(model, 2, views, 128, canonical, policy, quality="reference")
        assert torch.equal(fast.ws, ref.ws) and torch.equal(fast.yaw_pitch, ref.yaw_pitch)
        assert (fast.masks == ref.masks).float().mean() >= 0.99
        mse = ((fast.images.float() - ref.images.float()) / 127.5).square().mean()
        assert 10 * math.log10(4.0 / max(float(mse), 1e-12)) >= 35.0


@torch.no_grad()
def test_surface_detail_brings_back_fine_texture_of_its_training_heads(model):
    """Independent truth: the exact 256 px renders of three training heads (fit examples) at yaw -40/0/+40.
    Inside the head, the bundled model's surface detail (networks/detail.py) must raise the sharpness from
    well under a third of the truth's (measured 0.16) to most of it (measured 0.85-0.93), at a head PSNR
    within 0.6 dB of the image without it (measured -0.3 to -0.4 dB on these heads, whose geometry comes
    from learned codes; on inverted portraits it gains, docs/training.md "Surface detail")."""
    from safetensors.torch import load_file

    from training.autodecoder.loop import codes_to_ws
    from training.procedural import heads_from_latent, median_padded, render_heads

    assert model.detail is not None
    laplace = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)

    def sharp(img, m):
        return float(F.conv2d(img.mean(1, keepdim=True), laplace, padding=1).abs()[:, 0][m].mean())

    ex = load_file(str(BUNDLED_MODEL_DIR / "fit_examples.safetensors"))
    ws = codes_to_ws(ex["codes"][:3].float(), model)
    heads = heads_from_latent(median_padded(ex["z"][:3]))
    planes = model.planes(ws)
    for yaw in (-40.0, 0.0, 40.0):
        c = _cams(yaw, 3)
        on = model.render(planes, c, ws).image.clamp(-1, 1)
        off = model.render(planes, c, ws, detail=False).image.clamp(-1, 1)
        truth = render_heads(heads, c, 256)
        m = truth.mask[:, 0] > 0.5

        def head_psnr(x):
            return 10 * math.log10(4.0 / float((x - truth.image).square().mean(1)[m].mean()))

        s_off, s_on, s_true = sharp(off, m), sharp(on, m), sharp(truth.image, m)
        assert s_off < 0.3 * s_true and s_on > 0.6 * s_true, (yaw, s_off / s_true, s_on / s_true)
        assert head_psnr(on) > head_psnr(off) - 0.6, (yaw, head_psnr(on), head_psnr(off))
