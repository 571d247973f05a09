# SPDX-License-Identifier: GPL-3.0-or-later
"""The surface detail's per-portrait strength (ide3d_core/networks/detail.py, ide3d_core/inversion/
detail_strength.py): the rendered change is linear in the per-class strengths (superposition over classes,
zero strength = no detail), the closed-form solve recovers a strength the target was rendered with, the
inversion solves it and a saved portrait carries it, and model files from before the strength existed
still load with the same identity."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ide3d_core import cameras as C
from ide3d_core.inversion import InversionPolicy, invert
from ide3d_core.inversion.detail_strength import detail_change, solve_detail_strength, strength_from_views
from ide3d_core.networks import Generator, load_generator, save_generator
from ide3d_core.networks.config import CONFIGS
from ide3d_core.portrait import generator_fingerprint, load_portrait, save_portrait


def _tiny_with_detail(seed: int = 0) -> Generator:
    G = Generator(dataclasses.replace(CONFIGS["tiny"], detail_levels=3, detail_min_res=4, detail_max_res=64,
                                      detail_log2_table=10, detail_hidden=8)).eval()
    with torch.no_grad():  # a detail that does something wherever it may
        G.detail.out.bias.copy_(torch.randn(6, generator=torch.Generator().manual_seed(seed)) * 0.3)
    return G


def _render(G: Generator, ws: torch.Tensor, c: torch.Tensor, strength: torch.Tensor | float) -> torch.Tensor:
    with torch.no_grad():
        saved = G.detail.strength.clone()
        G.detail.strength.copy_(torch.as_tensor(strength, dtype=torch.float32).expand_as(saved))
        try:
            return G(ws, c).image
        finally:
            G.detail.strength.copy_(saved)


def _cams(*yaws: float) -> torch.Tensor:
    return torch.stack([torch.as_tensor(C.orbit_camera(y).label()).float() for y in yaws])


def _stage_inputs(seed: int = 0):
    """A detail stage's inputs with semantics that show four head classes in soft regions (an untrained
    model's semantics are all background): image [1, 3, 32, 32], logits [1, 19, 32, 32], a flat surface."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    sem = torch.full((1, 19, 32, 32), -4.0)
    sem[:, 0, :, :6] = 14.0  # background on the left, for sure
    for k, (r0, r1) in zip((1, 4, 11, 13), ((0, 8), (8, 16), (16, 24), (24, 32))):
        sem[:, k, r0:r1, 6:] = 3.0
    sem = sem + torch.randn(sem.shape, generator=gen)  # soft, overlapping regions
    depth, opacity = torch.full((1, 1, 8, 8), 2.6), torch.ones(1, 1, 8, 8)
    return img, sem, depth, opacity, _cams(0.1), torch.full((1, 1, 1), 3.3)


def _stage(G: Generator, inputs, strength) -> torch.Tensor:
    with torch.no_grad():
        saved = G.detail.strength.clone()
        G.detail.strength.copy_(torch.as_tensor(strength, dtype=torch.float32).expand_as(saved))
        try:
            return G.detail(*inputs)
        finally:
            G.detail.strength.copy_(saved)


def test_zero_strength_is_no_detail_and_the_change_is_linear_over_classes():
    G = _tiny_with_detail()
    ws = G.codes_from_seeds([4])
    c = _cams(0.3)
    with torch.no_grad():
        bare = G.render(G.planes(ws), c, ws, detail=False).image
    full = _render(G, ws, c, 1.0)
    assert torch.equal(_render(G, ws, c, 0.0), bare)
    assert float((full - bare).abs().max()) > 1e-2
    torch.testing.assert_close(_render(G, ws, c, 0.4) - bare, 0.4 * (full - bare), atol=1e-5, rtol=0)
    # superposition: the detail of every class alone adds up to the detail of all of them
    inputs = _stage_inputs()
    img, full = inputs[0], _stage(G, inputs, 1.0)
    total = torch.zeros_like(img)
    for k in range(19):
        one = torch.zeros(19)
        one[k] = 1.0
        part = _stage(G, inputs, one) - img
        if k in (1, 4, 11, 13):
            assert float(part.abs().amax()) > 1e-2, k
        total += part
    torch.testing.assert_close(total, full - img, atol=1e-5, rtol=0)
    # the background entry does nothing, and the backdrop's pixels are left alone at any strength
    bg_only = torch.zeros(19)
    bg_only[0] = 1.0
    assert torch.equal(_stage(G, inputs, bg_only), img)
    assert float((full - img)[..., :6].abs().max()) < 1e-3


def test_the_solve_recovers_the_strength_a_target_was_rendered_with():
    G = _tiny_with_detail(1)
    ws = G.codes_from_seeds([2])
    c = _cams(-0.3, 0.0, 0.4)
    base, d, probs = detail_change(G, ws, c)
    torch.testing.assert_close(base + d, _render(G, ws.expand(3, -1, -1), c, 1.0), atol=1e-5, rtol=0)
    target = _render(G, ws.expand(3, -1, -1), c, 0.35)
    s = strength_from_views(base, d, probs, target, "global")
    assert s[0] == 0 and torch.allclose(s[1:], torch.full((18,), 0.35), atol=1e-4)
    # clamped to [0, 1]: a target with twice the detail, and one with the opposite detail
    assert torch.allclose(strength_from_views(base, d, probs, base + 2 * d, "global")[1:], torch.ones(18))
    assert torch.allclose(strength_from_views(base, d, probs, base - d, "global")[1:], torch.zeros(18))
    with pytest.raises(ValueError, match="mode"):
        strength_from_views(base, d, probs, target, "pixel")
    # per class, with a negligible ridge: the four classes the picture shows come back, each its own
    inputs = _stage_inputs(1)
    img = inputs[0]
    truth = torch.linspace(0.1, 0.9, 19)
    d = _stage(G, inputs, 1.0) - img
    probs = inputs[1].softmax(1)
    s = strength_from_views(img, d, probs, _stage(G, inputs, truth), "class", ridge=1e-9)
    shown = torch.tensor([1, 4, 11, 13])
    torch.testing.assert_close(s[shown], truth[shown], atol=2e-3, rtol=0)
    # and a strong ridge pulls every class to the global solution
    g = strength_from_views(img, d, probs, _stage(G, inputs, truth), "global")
    s = strength_from_views(img, d, probs, _stage(G, inputs, truth), "class", ridge=1e6)
    torch.testing.assert_close(s[1:], g[1:], atol=1e-4, rtol=0)


def test_a_model_without_detail_is_left_alone():
    G = Generator(CONFIGS["tiny"]).eval()
    ws = G.codes_from_seeds([0])
    out, s, mean = solve_detail_strength(G, torch.zeros(1, 3, 64, 64), _cams(0.0), ws)
    assert out is G and s is None and mean is None
    with pytest.raises(ValueError, match="detail_strength"):
        InversionPolicy(detail_strength="pixel")


def test_inversion_solves_the_strength_and_a_saved_portrait_carries_it(tmp_path):
    G = _tiny_with_detail(2)
    ws = G.average_codes(1)  # the codes the inversion starts from (no encoder, no code steps): an exact fit
    c = _cams(0.2)
    target = _render(G, ws, c, 0.3)
    res = invert(G, target, camera=c[0].numpy(), policy=InversionPolicy(use_encoder=False, optimise_steps=0,
                                                                        tune_steps=0))
    s = res.generator.detail.strength
    assert torch.allclose(s[1:], torch.full((18,), 0.3), atol=2e-3), s
    assert torch.equal(G.detail.strength, torch.ones(19))  # the base model is untouched
    assert any("surface detail strength 0.30 over the head" in n for n in res.notes), res.notes
    path = save_portrait(res.portrait(G), tmp_path / "p.ide3d")
    again = load_portrait(path).generator(G)
    torch.testing.assert_close(again.detail.strength, s, atol=1e-3, rtol=0)
    torch.testing.assert_close(_render(again, ws, c, again.detail.strength), target, atol=2e-3, rtol=0)
    off = invert(G, target, camera=c[0].numpy(), policy=InversionPolicy(use_encoder=False, optimise_steps=0,
                                                                        tune_steps=0, detail_strength="off"))
    assert torch.equal(off.generator.detail.strength, torch.ones(19))


def test_models_saved_before_the_strength_load_with_the_same_identity(tmp_path):
    G = _tiny_with_detail(3)
    folder = save_generator(G, tmp_path / "m")
    weights = folder / "generator.safetensors"
    tensors = load_file(str(weights))
    del tensors["detail.strength"], tensors["label_offsets"]  # a file written before they existed
    save_file(tensors, str(weights))
    old = load_generator(folder)
    assert torch.equal(old.detail.strength, torch.ones(19)) and torch.equal(old.label_offsets, torch.zeros(19))
    assert generator_fingerprint(old) == generator_fingerprint(G)
    # the fingerprint is the same as if the buffer did not exist, and changes once it differs
    with torch.no_grad():
        old.detail.strength[3] = 0.5
    assert generator_fingerprint(old) != generator_fingerprint(G)
    # a file that lacks a weight that is not optional is still refused
    del tensors["detail.out.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="missing weights"):
        load_generator(folder)


def test_fingerprint_leaves_out_only_optional_buffers_at_their_default():
    G = _tiny_with_detail(4)
    before = generator_fingerprint(G)
    with torch.no_grad():
        G.detail.out.bias[0] += 1e-3
    assert generator_fingerprint(G) != before
    assert np.isfinite(float(G.detail.strength.sum()))


def test_cli_invert_takes_the_strength_mode(tmp_path, capsys):
    import json

    from PIL import Image

    from ide3d_core.cli import main
    from ide3d_core.images import to_uint8_hwc

    G = _tiny_with_detail(5)
    model = save_generator(G, tmp_path / "model")
    ws, c = G.average_codes(1), _cams(0.2)
    Image.fromarray(to_uint8_hwc(_render(G, ws, c, 0.3).clamp(-1, 1))[0]).save(tmp_path / "photo.png")
    (tmp_path / "cam.json").write_text(json.dumps({"label": [float(v) for v in c[0]]}))
    common = ["invert", str(tmp_path / "photo.png"), "--camera", str(tmp_path / "cam.json"), "--model", str(model),
              "--steps", "0", "--tune-steps", "0", "--quiet"]
    strengths = {}
    for mode in ("global", "class", "off"):
        out = tmp_path / f"{mode}.ide3d"
        assert main([*common, "--detail-strength", mode, "--out", str(out)]) == 0, capsys.readouterr().err
        strengths[mode] = load_portrait(out).generator(load_generator(model)).detail.strength
    assert torch.allclose(strengths["global"][1:], torch.full((18,), 0.3), atol=0.02), strengths["global"]
    assert float(strengths["class"][1:].std()) > 1e-4  # one per class
    assert torch.equal(strengths["off"], torch.ones(19))
    with pytest.raises(SystemExit) as stop:
        main([*common, "--detail-strength", "pixel", "--out", str(tmp_path / "x.ide3d")])
    assert stop.value.code == 2 and "invalid choice: 'pixel'" in capsys.readouterr().err
