# SPDX-License-Identifier: GPL-3.0-or-later
"""operations.render_inputs(planes_dtype): the live session's bf16 tri-plane synthesis stays within the
fast renderer's bounds (>= 40 dB, >= 99.5 % identical labels against the reference render of the
generator's own planes), and a "reference" render handed such cached inputs renders the generator's own
float32 planes (the same pixels as without inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core.model_loading import BUNDLED_MODEL_DIR
from ide3d_core.networks.io import load_generator
from ide3d_core.operations.render import _reduced, render_inputs, render_view
from ide3d_core.portrait import PortraitState

needs_model = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")


def _psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@needs_model
def test_bf16_inputs_within_bounds_and_reference_stays_float32():
    G = load_generator(BUNDLED_MODEL_DIR).requires_grad_(False)
    with torch.no_grad():
        state = PortraitState(G.codes_from_seeds([7], truncation_psi=0.7))
    label = C.orbit_camera(0.5, 0.1).label()
    low = render_inputs(G, state, "cpu", planes_dtype="bfloat16")
    exact = render_inputs(G, state, "cpu")
    assert _reduced(low[0]) and not _reduced(exact[0])
    ref = render_view(G, state, label, quality="reference")
    ref_cached = render_view(G, state, label, quality="reference", inputs=low)
    assert np.array_equal(ref.image, ref_cached.image) and np.array_equal(ref.ids, ref_cached.ids)
    fast = render_view(G, state, label, quality="full", inputs=low)
    assert _psnr_uint8(ref.image, fast.image) >= 40.0
    assert np.mean(ref.ids == fast.ids) >= 0.995
    with pytest.raises(ValueError, match="network dtype"):
        render_inputs(G, state, "cpu", planes_dtype="half")
