# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion on a tiny generator: one view (a procedural head with its exact mask, and the generator's
own renders), several views (robust weights, odd views, views without a face), the document's source views."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core.cameras import Camera
from ide3d_core.encoders import HybridEncoder, config_for_generator
from ide3d_core.inversion import InversionPolicy, invert, psnr
from ide3d_core.portrait import decode_portrait, encode_portrait
from ide3d_core.progress import CancelToken, Cancelled
from test_portrait_fixtures import label, make_generator


@pytest.fixture(scope="module")
def setup():
    """The tiny generator and a procedural head's exact render and label map (a mask with a face)."""
    from training.procedural import render_heads, sample_heads

    g = make_generator()
    ws_true = g.codes_from_seeds([3]).detach()
    cam = label(20.0, -5.0)
    r = render_heads(sample_heads(1, torch.Generator().manual_seed(4), "cpu"), cam, g.img_resolution)
    return g, ws_true, cam, r.image.float(), r.labels[0].numpy().astype(np.uint8)


def test_optimisation_lowers_the_loss_and_tuning_raises_psnr(setup):
    g, ws_true, cam, target, mask = setup
    seen = []
    policy = InversionPolicy(optimise_steps=12, tune_steps=12, optimise_lr=0.05, tune_lr=2e-3, ssim_weight=0.2,
                             plateau_patience=0)
    res = invert(g, target, mask=mask, camera=cam[0].numpy(), encoder=None, policy=policy,
                 progress=lambda d, t, m: seen.append((d, t)))
    st = res.stages
    assert st["optimise"]["loss"] < st["init"]["loss"]
    assert st["tune"]["psnr"] > st["optimise"]["psnr"] + 0.1
    assert seen[-1][0] == seen[-1][1] == 25 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # independent check of the reported PSNR: render the result ourselves
    with torch.no_grad():
        img = res.generator(res.ws, cam).image
    assert float(psnr(img, target)) == pytest.approx(st["tune"]["psnr"], abs=1e-3)
    assert res.mask_source == "given" and np.array_equal(res.mask, mask)
    # the tuned generator is exactly what the stored delta rebuilds, also after a document round trip
    p = decode_portrait(encode_portrait(res.portrait(g, source_mask=mask)))
    rebuilt = p.generator(g)
    for (n1, t1), (n2, t2) in zip(res.generator.state_dict().items(), rebuilt.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    assert torch.equal(p.ws, res.ws)
    # the base generator was not touched by tuning
    assert all(not torch.equal(a, b) for (_, a), (_, b) in
               zip(g.state_dict().items(), res.generator.state_dict().items()) if _ in res.delta.deltas)


def test_w_space_keeps_one_code_and_encoder_predicts_the_camera(setup):
    g, _, _, target, _ = setup
    torch.manual_seed(0)
    enc = HybridEncoder(config_for_generator(g, "tiny"), g.mapping.w_avg).eval()
    res = invert(g, target, encoder=enc, policy=InversionPolicy(code_space="w", optimise_steps=2, tune_steps=0))
    assert torch.equal(res.ws, res.ws[:, :1].expand_as(res.ws))
    Camera.from_label(res.camera)  # a valid rigid camera from the predicted yaw/pitch
    assert res.mask_source == "self" and res.delta is None and res.generator is g
    assert res.mask.shape == (g.img_resolution, g.img_resolution)


def test_uint8_photo_of_another_size_and_cancel(setup):
    g, _, cam, target, _ = setup
    photo = ((target[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    photo = np.repeat(np.repeat(photo, 2, 0), 2, 1)  # twice the generator's size
    tok = CancelToken()
    calls = []

    def progress(done, total, msg):
        calls.append(done)
        if done >= 3:
            tok.cancel()

    with pytest.raises(Cancelled):
        invert(g, photo, camera=cam[0].numpy(), policy=InversionPolicy(optimise_steps=10, tune_steps=5),
               progress=progress, cancel=tok)
    assert max(calls) == 3
    with pytest.raises(ValueError, match="code_space"):
        InversionPolicy(code_space="z")


def test_parser_gives_the_mask_when_none_is_given(setup):
    g, _, cam, target, mask = setup
    calls = []

    def parser(image):
        calls.append(tuple(image.shape))
        return mask

    res = invert(g, target, camera=cam[0].numpy(), parser=parser,
                 policy=InversionPolicy(optimise_steps=0, tune_steps=0))
    assert calls == [(1, 3, g.img_resolution, g.img_resolution)]
    assert res.mask_source == "parser" and np.array_equal(res.mask, mask)
