# SPDX-License-Identifier: GPL-3.0-or-later
"""Encoders: shapes, strict save/load, training reduces the code error, canonical editor sees front views only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ide3d_core.cameras import canonical_camera
from ide3d_core.encoders import (PRESETS, HybridEncoder, config_for_generator, load_encoder,
                                 save_encoder)
from test_portrait_fixtures import make_generator
from training.encoders import (EncoderTrainingPolicy, check_canonical, evaluate_latent_loss,
                               train_encoders)


@pytest.fixture(scope="module")
def gen():
    return make_generator()


def _encoder(g, canonical=False, seed=0):
    return HybridEncoder(config_for_generator(g, "tiny", canonical=canonical), g.mapping.w_avg, seed=seed)


def test_shapes_and_any_input_size(gen):
    e = _encoder(gen)
    img = torch.rand(2, 3, 48, 48) * 2 - 1
    labels = torch.randint(0, 19, (2, 64, 64))
    ws, pose = e(img, labels)
    assert ws.shape == (2, gen.num_ws, gen.w_dim) and pose.shape == (2, 2)
    assert e.encode_shape(labels).shape == (2, gen.num_shape_ws, gen.w_dim)
    w_t, _ = e.encode_texture(img)
    assert torch.equal(ws[:, gen.num_shape_ws:], w_t)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        e.encode_texture(img[:, :1])
    assert set(PRESETS) == {"tiny", "default", "paper"}


def test_save_load_is_exact_and_strict(gen, tmp_path):
    e = _encoder(gen, canonical=True)
    folder = save_encoder(e, tmp_path / "enc")
    f = load_encoder(folder)
    assert f.config == e.config and f.config.canonical
    for (n1, t1), (n2, t2) in zip(e.state_dict().items(), f.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["extra"] = 1
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown config keys"):
        load_encoder(folder)
    with pytest.raises(ValueError, match="not an encoder folder"):
        load_encoder(tmp_path / "nowhere")


def test_a_few_training_steps_reduce_the_code_error(gen):
    e = _encoder(gen)
    held_out = [1001, 1002, 1003, 1004]
    before = evaluate_latent_loss(gen, e, held_out, canonical=False)
    # (the re-render term is left out here: an untrained generator's images are far outside [-1, 1]
    # and that term then dominates a 20-step run; the canonical test below runs it)
    policy = EncoderTrainingPolicy(steps=20, batch_codes=4, views=2, lr=3e-3, rerender_weight=0.0,
                                   semantic_weight=0.0)
    res = train_encoders(gen, e, policy)
    after = evaluate_latent_loss(gen, e, held_out, canonical=False)
    assert len(res.history) == 20 and {"latent", "pose", "views"} <= set(res.history[0])
    assert after < 0.7 * before, (before, after)


def test_canonical_editor_only_sees_canonical_views(gen, monkeypatch):
    e = _encoder(gen, canonical=True)
    seen = []
    real_render = gen.render

    def recording_render(planes, c, ws, **kw):
        seen.append(c.detach().clone())
        return real_render(planes, c, ws, **kw)

    monkeypatch.setattr(gen, "render", recording_render)
    res = train_encoders(gen, e, EncoderTrainingPolicy(steps=2, batch_codes=2, views=3))
    assert {"latent", "pose", "rerender", "semantic"} <= set(res.history[0]) and "views" not in res.history[0]
    cams = torch.cat(seen)
    ref = torch.from_numpy(canonical_camera().label())
    assert cams.shape[0] == 2 * 2 * 2  # 2 steps x (sample render + re-render) x 2 codes x 1 view
    assert torch.allclose(cams, ref.expand_as(cams), atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="canonical"):
        check_canonical(torch.from_numpy(np.stack([canonical_camera().label(),
                                                   canonical_camera().mirrored().label() * 0 + 1])))


def test_sample_bank_training_reduces_the_code_error_without_rendering(gen, monkeypatch):
    """A bank is rendered once (inputs stored exactly as the encoder resizes them); training from it
    lowers the held-out code error and never calls the generator."""
    from ide3d_core.encoders import resize_inputs
    from training.encoders import render_bank

    e = _encoder(gen)
    r = e.config.resolution
    policy = EncoderTrainingPolicy(steps=30, batch_codes=4, views=2, lr=3e-3)
    bank = render_bank(gen, 12, 2, r, canonical=False, policy=policy)
    assert bank.images.shape == (12, 2, 3, r, r) and bank.masks.shape == (12, 2, r, r) and len(bank) == 12
    assert bank.images.dtype == torch.uint8 and bank.yaw_pitch.abs().max() > 0
    # the stored view 0 of code 0 is the generator's render at that camera, resized like the encoder does
    from ide3d_core.cameras import orbit_camera
    with torch.no_grad():
        yaw, pitch = bank.yaw_pitch[0, 0].tolist()
        out = gen(bank.ws[:1], torch.from_numpy(orbit_camera(yaw, pitch).label()).float()[None])
        img, ids = resize_inputs(out.image, out.semantic.argmax(1), r)
    assert torch.equal(ids[0].to(torch.uint8), bank.masks[0, 0])
    assert (((img[0].clamp(-1, 1) + 1) * 127.5).round() - bank.images[0, 0].float()).abs().max() <= 1
    before = evaluate_latent_loss(gen, e, [1001, 1002, 1003, 1004], canonical=False)
    monkeypatch.setattr(gen, "render", lambda *a, **k: pytest.fail("a banked step rendered"))
    res = train_encoders(gen, e, policy, bank=bank)
    monkeypatch.undo()
    after = evaluate_latent_loss(gen, e, [1001, 1002, 1003, 1004], canonical=False)
    assert {"latent", "pose", "views"} <= set(res.history[0]) and "rerender" not in res.history[0]
    assert after < 0.8 * before, (before, after)
    with pytest.raises(ValueError, match="canonical"):
        train_encoders(gen, _encoder(gen, canonical=True), policy, bank=bank)
