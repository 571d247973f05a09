# SPDX-License-Identifier: GPL-3.0-or-later
"""Label map, palette, decoding of painted masks and mirror swaps."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from ide3d_core import labels as L


def test_names_order_and_palette_are_celebamask_hq():
    assert L.NUM_CLASSES == 19
    assert L.NAMES[0] == "background" and L.NAMES[13] == "hair" and L.NAMES[18] == "cloth"
    assert tuple(L.PALETTE[1]) == (204, 0, 0) and tuple(L.PALETTE[17]) == (255, 153, 51)
    assert len({tuple(c) for c in L.PALETTE}) == 19  # distinct colours


def test_colorize_then_decode_is_identity():
    ids = np.random.default_rng(0).integers(0, 19, size=(37, 41))
    assert np.array_equal(L.decode_colors(L.colorize(ids)), ids)


def test_decode_snaps_antialiased_fringes():
    # Paint with an anti-aliased brush (PIL draws, then blur makes in-between colours), as Blender's
    # brush would; every pixel must decode to one of the two painted classes, and the interiors exactly.
    size = 64
    img = Image.new("RGB", (size, size), tuple(int(c) for c in L.PALETTE[L.ID["skin"]]))
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill=tuple(int(c) for c in L.PALETTE[L.ID["hair"]]))
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(1.0)))
    ids = L.decode_colors(blurred)
    assert ids[32, 32] == L.ID["hair"] and ids[2, 2] == L.ID["skin"]
    # The fringe decodes to the nearer of the painted colours, never to background.
    assert (ids != L.ID["background"]).all()


def test_decode_survives_jpeg():
    ids = np.zeros((64, 64), np.uint8)
    ids[8:56, 8:56] = L.ID["skin"]
    ids[20:30, 14:26] = L.ID["r_eye"]
    ids[20:30, 38:50] = L.ID["l_eye"]
    buf = io.BytesIO()
    Image.fromarray(L.colorize(ids)).save(buf, format="JPEG", quality=90)
    back = L.decode_colors(np.asarray(Image.open(buf)))
    interior = np.zeros_like(ids, bool)
    interior[10:54, 10:54] = True
    assert (back[interior] == ids[interior]).mean() > 0.97


def test_decode_mask_accepts_ids_and_rejects_photos():
    ids = np.random.default_rng(1).integers(0, 19, size=(8, 8)).astype(np.uint8)
    assert np.array_equal(L.decode_mask(ids), ids)
    with pytest.raises(ValueError):
        L.decode_mask(np.full((4, 4), 40, np.uint8))
    # A grey-ish photo is far from every palette colour.
    photo = np.full((16, 16, 3), (128, 110, 100), np.uint8)
    with pytest.raises(ValueError):
        L.decode_mask(photo)


def test_mirror_swaps_left_and_right():
    ids = np.zeros((2, 4), np.uint8)
    ids[0, 0] = L.ID["l_eye"]
    ids[1, 1] = L.ID["r_brow"]
    m = L.mirror_labels(ids)
    assert m[0, 3] == L.ID["r_eye"] and m[1, 2] == L.ID["l_brow"]
    assert np.array_equal(L.mirror_labels(m), ids)
    perm = L.MIRROR_PERMUTATION
    assert np.array_equal(perm[perm], np.arange(19))


def test_parse_classes():
    assert L.parse_classes("hair,cloth") == (13, 18)
    assert L.parse_classes(["hair", "13", "hat"]) == (13, 14)
    assert L.parse_classes("hair, wearing") == (3, 13, 14, 15, 16, 18)
    with pytest.raises(ValueError, match="unknown class"):
        L.parse_classes("hairs")
