# SPDX-License-Identifier: GPL-3.0-or-later
"""Editing: mask edits keep w_t, region restyles keep everything outside the class set, undo/redo."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ide3d_core import editing as E
from ide3d_core.cameras import canonical_camera, rays_from_labels
from ide3d_core.encoders import HybridEncoder, config_for_generator
from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_fingerprint
from test_portrait_fixtures import make_generator


@pytest.fixture(scope="module")
def gen():
    return make_generator()


def _portrait(g, seed=1):
    ws = g.codes_from_seeds([seed]).detach()
    return Portrait(camera=canonical_camera().label(), generator_config={}, base_fingerprint=generator_fingerprint(g),
                    history=(EditRecord("invert", {}, PortraitState(ws)),))


def _editor(g, canonical=True):
    torch.manual_seed(0)
    return HybridEncoder(config_for_generator(g, "tiny", canonical=canonical), g.mapping.w_avg).eval()


def test_mask_edit_keeps_texture_codes_and_changes_shape_codes(gen):
    p = _portrait(gen)
    labels = E.canonical_labels(gen, p.state)
    assert labels.shape == (gen.img_resolution, gen.img_resolution)
    painted = labels.copy()
    h = painted.shape[0]
    painted[h // 4: h // 2, h // 4: 3 * h // 4] = 13  # paint a block of hair
    ns = gen.num_shape_ws
    for mode in E.MASK_MODES:
        q = E.mask_edit(p, gen, _editor(gen), painted, mode=mode, current=labels if mode == "direct" else None)
        assert torch.equal(q.ws[:, ns:], p.ws[:, ns:])  # w_t bit for bit
        assert not torch.equal(q.ws[:, :ns], p.ws[:, :ns])
        assert q.history[-1].params["pixels_changed"] == int((painted != labels).sum())
    # residual mode: an unchanged mask leaves the codes exactly as they were (a synthetic current map,
    # so the check does not depend on what the untrained generator draws)
    yy, xx = np.mgrid[:h, :h]
    disc = np.where((yy - h / 2) ** 2 + (xx - h / 2) ** 2 < (h / 3) ** 2, 1, 0).astype(np.uint8)
    same = E.mask_edit(p, gen, _editor(gen), disc, mode="residual", current=disc)
    assert torch.equal(same.ws, p.ws)


def test_mask_edit_rejects_bad_masks_and_the_standard_encoder(gen):
    p = _portrait(gen)
    r = gen.img_resolution
    with pytest.raises(ValueError, match="must be"):
        E.mask_edit(p, gen, _editor(gen), np.ones((r + 2, r), np.uint8))
    with pytest.raises(ValueError, match="no face labels"):
        E.mask_edit(p, gen, _editor(gen), np.zeros((r, r), np.uint8))
    with pytest.raises(ValueError, match="canonical editor"):
        E.mask_edit(p, gen, _editor(gen, canonical=False), np.ones((r, r), np.uint8))


def test_undo_redo_restore_exact_codes(gen):
    p0 = _portrait(gen)
    p1 = E.global_style(p0, gen.codes_from_seeds([5]), gen.num_shape_ws, 0.0, 1.0)
    p2 = E.truncate(p1, gen.mapping.w_avg, 0.5)
    assert not E.can_redo(p2) and E.can_undo(p2)
    back = E.undo(E.undo(p2))
    assert torch.equal(back.ws, p0.ws) and not E.can_undo(back)
    fwd = E.redo(back)
    assert torch.equal(fwd.ws, p1.ws)
    assert torch.equal(E.redo(fwd).ws, p2.ws)
    branched = E.truncate(fwd, gen.mapping.w_avg, 0.9)  # an edit after undo drops the redo tail
    assert len(branched.history) == 3 and not E.can_redo(branched)
    with pytest.raises(ValueError):
        E.undo(back)


def test_global_style_swap_interpolation_and_truncation(gen):
    p = _portrait(gen)
    other = gen.codes_from_seeds([9]).detach()
    ns = gen.num_shape_ws
    q = E.global_style(p, other, ns, shape_alpha=0.0, texture_alpha=1.0)
    assert torch.equal(q.ws[:, :ns], p.ws[:, :ns]) and torch.equal(q.ws[:, ns:], other[:, ns:])
    half = E.global_style(p, other, ns, shape_alpha=0.5, texture_alpha=0.25).ws
    assert torch.allclose(half[:, :ns], (p.ws[:, :ns] + other[:, :ns]) / 2, atol=1e-6)
    assert torch.allclose(half[:, ns:], 0.75 * p.ws[:, ns:] + 0.25 * other[:, ns:], atol=1e-6)
    t0 = E.truncate(p, gen.mapping.w_avg, 0.0).ws
    assert torch.allclose(t0, gen.mapping.w_avg.expand_as(t0), atol=1e-6)


def test_region_restyle_keeps_pixels_whose_rays_meet_no_restyled_point(gen):
    p = _portrait(gen, seed=1)
    cam = torch.as_tensor(canonical_camera().label())[None]
    h = gen.neural_resolution
    planes = gen.planes(p.ws)
    # Independent truth: the field's own semantic argmax along densely sampled rays of every pixel.
    o, d = rays_from_labels(cam, h, h)
    t = torch.linspace(2.25, 3.3, 192)
    pts = (o[:, :, None] + d[:, :, None] * t[None, None, :, None]).reshape(1, -1, 3)
    arg = gen.query(planes, pts).semantic.argmax(-1).view(h * h, -1)
    arg[~(pts.abs() <= 0.5).all(-1).view(h * h, -1)] = -1  # the field lives in the box [-0.5, 0.5]^3
    # restyle the face class whose rays (with a one-pixel safety margin) cover closest to half the
    # image, so both sides of the test are well populated
    def touched_by(k):
        hit = (arg == k).any(1).view(1, 1, h, h).float()
        return F.max_pool2d(hit, 3, 1, 1)[0, 0] > 0

    target = min(range(1, 19), key=lambda k: abs(int(touched_by(k).sum()) - h * h // 2))
    touched = touched_by(target)
    assert 0 < int(touched.sum()) < h * h
    style = gen.codes_from_seeds([7]).detach()
    q = E.restyle(p, [target], style, {"kind": "seed", "seed": 7})
    before = E.render_state(gen, p.state, canonical_camera().label()).features_raw[0]
    after = E.render_state(gen, q.state, canonical_camera().label()).features_raw[0]
    assert torch.equal(after[:, ~touched], before[:, ~touched])  # bit-identical outside
    assert (after[:, touched] - before[:, touched]).abs().max() > 1e-3  # and it did restyle
    # undo removes the restyle; restyling the same source again extends the class set
    assert E.undo(q).state.restyle is None
    q2 = E.restyle(q, [0], style)
    assert q2.state.restyle.classes == tuple(sorted({0, target}))
