# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/eval_inversion.py's error split (issue 17's "where the error is" table) against a direct
computation, and scripts/eval_model.py's hair-edit bound on procedural heads with a known answer."""
import importlib.util
import math
from pathlib import Path

import torch

SCRIPTS = Path(__file__).parents[1] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_error_split_pools_to_the_masked_psnr():
    ev = _load("eval_inversion")
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    lab[:, 8:24, 10:20] = 3  # the "head": 160 pixels
    img = gt.clone()
    img[:, :, 8:24, 10:20] += 0.1  # error 0.1 inside the head only
    sp = ev.error_split(img, gt, lab, neural=8)
    assert sp["head_px"] == 160 and sp["back_px"] == 32 * 32 - 160
    assert sp["back_se"] == 0.0
    assert math.isclose(ev.pooled_psnr(sp["head_se"], sp["head_px"]), 10 * math.log10(4 / 0.01), rel_tol=1e-5)
    # a constant image survives any resampling exactly: its perfect-field ceiling has no error
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert ev.error_split(flat, flat, lab, neural=8)["ceiling_se"] < 1e-10


def test_hair_edit_bound_is_below_one_and_the_skull_shows():
    em = _load("eval_model")
    b = em.hair_edit_bound(4)
    assert 0.5 < b["hair_miou_exact_bald_head"] < 1.0
    assert 0.0 < b["hair_removed_pixels_covered_by_skull"] < 1.0
