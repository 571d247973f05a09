# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-portrait label offsets (ide3d_core/inversion/label_offsets.py, Generator.label_offsets): the solve
recovering a known per-class bias of analytic label maps, the offsets moving labels and never a pixel of
colour (in label maps and mesh vertex labels alike), and the inversion solving them at the masks and a
saved portrait carrying them."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ide3d_core import cameras as C
from ide3d_core.inversion import InversionPolicy, invert
from ide3d_core.inversion.label_offsets import offsets_from_views
from ide3d_core.metrics import mean_iou
from ide3d_core.networks import Generator
from ide3d_core.networks.config import CONFIGS
from ide3d_core.portrait import load_portrait, save_portrait


def _disks(bias: float):
    """Analytic label maps: background, a head disk (class 1) holding an eye disk (class 4) of radius 0.2;
    logits are signed distances to each region's border (x 10), the eye's lowered by ``bias`` (the model's
    eye is then too small). Returns (logits [1, 19, 64, 64], true labels [1, 64, 64])."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    head = 0.8 - (x ** 2 + y ** 2).sqrt()
    eye = 0.2 - ((x - 0.3) ** 2 + (y + 0.1) ** 2).sqrt()
    logits = torch.full((1, 19, 64, 64), -5.0)
    logits[0, 0] = -10 * head
    logits[0, 1] = 10 * head.clamp(max=0.05) - 10 * eye.clamp(min=0)
    logits[0, 4] = 10 * eye - bias
    labels = torch.where(eye > 0, 4, torch.where(head > 0, 1, 0))[None]
    return logits, labels


def test_the_solve_finds_a_known_bias_of_one_class():
    logits, labels = _disks(bias=1.5)
    before = mean_iou(logits.argmax(1), labels)
    offsets, b, a = offsets_from_views(logits, labels)
    assert abs(b - before) < 1e-12 and before < 0.85
    assert a > 0.97 and a >= b
    fixed = (logits + offsets.view(1, -1, 1, 1)).argmax(1)
    eye = labels == 4
    assert float((fixed[eye] == 4).float().mean()) > 0.95  # the eye is its true size again
    assert float((fixed == labels).float().mean()) > 0.99
    # an exact map is left alone
    exact = 10.0 * torch.nn.functional.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    offsets, b, a = offsets_from_views(exact, labels)
    assert a == b == 1.0 and float(offsets.abs().max()) == 0.0


def _tiny() -> Generator:
    return Generator(dataclasses.replace(CONFIGS["tiny"])).eval()


def test_label_offsets_move_labels_and_never_a_pixel_of_colour():
    G = _tiny()
    ws = G.codes_from_seeds([3])
    c = torch.as_tensor(C.orbit_camera(0.2).label()).float()[None]
    with torch.no_grad():
        a = G(ws, c)
        G.label_offsets[0] = -50.0  # no background anywhere in the labels
        G.label_offsets[2] = 3.0
        b = G(ws, c)
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    torch.testing.assert_close(b.semantic - a.semantic, G.label_offsets.view(1, -1, 1, 1).expand_as(a.semantic))
    assert (a.semantic.argmax(1) == 0).any() and not (b.semantic.argmax(1) == 0).any()


def test_inversion_solves_offsets_at_the_masks_and_a_saved_portrait_carries_them(tmp_path):
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR
    from ide3d_core.networks import load_generator

    G = load_generator(BUNDLED_MODEL_DIR)  # a model whose labels have borders to move
    ws = G.average_codes(1)
    c = torch.as_tensor(C.orbit_camera(0.2).label()).float()[None]
    with torch.no_grad():
        out = G(ws, c)
    shift = torch.zeros(19)
    shift[0] = -1.0  # the mask shows less background than the model renders: a larger head
    mask = (out.semantic + shift.view(1, -1, 1, 1)).argmax(1)[0].numpy().astype(np.uint8)
    before = mean_iou(out.semantic.argmax(1)[0].numpy(), mask)
    assert (mask == 0).sum() < (out.semantic.argmax(1) == 0).sum() - 200 and before < 0.97
    policy = InversionPolicy(use_encoder=False, optimise_steps=0, tune_steps=0, detail_strength="off")
    res = invert(G, out.image, mask=mask, camera=c[0].numpy(), policy=policy)
    assert len([n for n in res.notes if n.startswith("label offsets")]) == 1, res.notes
    off = res.generator.label_offsets.clone()
    assert float(off[0]) < -0.4, off  # the background pulled back
    assert torch.equal(G.label_offsets, torch.zeros(19))  # the base model is untouched
    with torch.no_grad():
        fitted = res.generator(ws, c)
    assert mean_iou(fitted.semantic.argmax(1)[0].numpy(), mask) > before + 0.01
    with torch.no_grad():  # labels only: the same portrait without its offsets renders the same image
        res.generator.label_offsets.zero_()
        assert torch.equal(res.generator(ws, c).image, fitted.image)
        res.generator.label_offsets.copy_(off)
    again = load_portrait(save_portrait(res.portrait(G), tmp_path / "p.ide3d")).generator(G)
    torch.testing.assert_close(again.label_offsets, off, atol=1e-3, rtol=0)
    # no mask: nothing to solve against (the render's own labels are not evidence)
    res = invert(G, out.image, camera=c[0].numpy(), policy=policy)
    assert not any(n.startswith("label offsets") for n in res.notes)
    assert torch.equal(res.generator.label_offsets, torch.zeros(19))
    # switched off
    res = invert(G, out.image, mask=mask, camera=c[0].numpy(), policy=dataclasses.replace(policy, label_offsets=False))
    assert torch.equal(res.generator.label_offsets, torch.zeros(19))


def test_mesh_vertex_labels_carry_the_offsets_as_renders_do():
    from ide3d_core.mesh.generator_field import GeneratorField

    G = _tiny()
    ws = G.codes_from_seeds([1])
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    _, plain, _ = GeneratorField(G, ws).query(points)
    with torch.no_grad():
        G.label_offsets[7] = 40.0  # one class wins everywhere, in the mesh as in the label maps
    sigma, shifted, _ = GeneratorField(G, ws).query(points)
    torch.testing.assert_close(shifted - plain, G.label_offsets.expand_as(plain))
    assert bool((shifted.argmax(-1) == 7).all()) and not bool((plain.argmax(-1) == 7).all())
