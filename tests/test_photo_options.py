# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d_core.photo.PrepareOptions``: checked on construction, and ``prepare(photo, **fields)`` is shorthand
for ``prepare(photo, PrepareOptions(**fields))`` (the OpenCV-only path, so MediaPipe is not needed)."""
from __future__ import annotations

import numpy as np
import pytest

from ide3d_core.photo import PrepareOptions, prepare
from ide3d_core.photo.align import MIN_ALIGNED_SIZE


@pytest.mark.parametrize("fields, message", [
    (dict(domain="cat"), "unknown domain 'cat'"),
    (dict(framing="square"), "unknown framing 'square'"),
    (dict(size=MIN_ALIGNED_SIZE - 1), f"at least {MIN_ALIGNED_SIZE} pixels"),
])
def test_bad_options_raise_before_any_work(fields, message):
    with pytest.raises(ValueError, match=message):
        PrepareOptions(**fields)
    with pytest.raises(ValueError, match=message):  # before the photo is even read
        prepare("/nonexistent/photo.png", **fields)


def test_options_are_frozen_and_unknown_fields_are_refused():
    opts = PrepareOptions(size=64)
    with pytest.raises(AttributeError):
        opts.size = 128  # type: ignore[misc]
    with pytest.raises(TypeError):
        prepare(np.zeros((64, 64, 3), np.uint8), sise=64)


def test_keyword_fields_are_shorthand_for_options():
    """A real portrait (matplotlib's grace_hopper.jpg) through the Haar path: the same crop, camera and mask either way, and a
    keyword field overrides the one of ``options``."""
    cv2 = pytest.importorskip("cv2")
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        photo = np.asarray(im.convert("RGB")).copy()
    assert cv2 is not None
    a = prepare(photo, size=64, use_mediapipe=False)
    b = prepare(photo, PrepareOptions(size=64, use_mediapipe=False))
    c = prepare(photo, PrepareOptions(size=32, use_mediapipe=False), size=64)
    for r in (b, c):
        assert r.image.shape == (64, 64, 3) and r.mask_source == a.mask_source == "box"
        np.testing.assert_array_equal(r.image, a.image)
        np.testing.assert_array_equal(r.mask, a.mask)
        np.testing.assert_array_equal(r.matrix, a.matrix)
