# SPDX-License-Identifier: GPL-3.0-or-later
"""Inversion losses against independent implementations (scikit-image) and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core.inversion import losses as L


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ours = float(L.ssim(x, y))
    ref = skm.structural_similarity(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                    channel_axis=2, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=1e-5)


def test_ssim_and_ms_ssim_identity_and_ordering():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert torch.allclose(L.ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(L.ms_ssim(x, x), torch.ones(2), atol=1e-6)
    small = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    big = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert bool((L.ms_ssim(x, small) > L.ms_ssim(x, big)).all())
    with pytest.raises(ValueError, match="smaller than"):
        L.ssim(x[..., :8, :8], x[..., :8, :8])


def test_psnr_closed_form_and_mask():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full_like(x, 0.2)  # mse 0.04, range 2 -> 10 log10(4 / 0.04) = 20 dB
    assert float(L.psnr(x, y)) == pytest.approx(20.0, abs=1e-4)
    y2 = y.clone()
    y2[..., :4] = 1.0
    m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    m[..., 4:] = True
    assert float(L.psnr(x, y2, mask=m)) == pytest.approx(20.0, abs=1e-4)


def test_cross_entropy_and_miou():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 13
    logits = torch.full((1, 19, 4, 4), -20.0)
    logits[:, 0, :, :2] = 20.0
    logits[:, 13, :, 2:] = 20.0
    assert float(L.semantic_cross_entropy(logits, labels)) < 1e-6
    assert float(L.semantic_cross_entropy(logits.flip(-1), labels)) > 10
    pred = labels.clone()
    pred[:, :4, 4:] = 0  # half of class 13 lost: IoU13 = 0.5, IoU0 = 32/48
    assert L.mean_iou(pred, labels) == pytest.approx((0.5 + 32 / 48) / 2)


def test_lpips_loads_user_weights_strictly_and_measures_distance(tmp_path):
    from safetensors.torch import save_file

    from ide3d_core.inversion.lpips import LPIPS

    torch.manual_seed(0)
    ref = LPIPS()
    state = {k: v.clone() for k, v in ref.state_dict().items() if k not in ("shift", "scale")}
    save_file(state, str(tmp_path / "lpips.safetensors"))
    net = LPIPS.from_file(tmp_path / "lpips.safetensors")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-7)
    d = net(x, y)
    assert bool((d > 0).all()) and torch.allclose(d, net(y, x), rtol=1e-5)
    # each tap adds a non-negative term: doubling one tap's linear weights cannot lower the distance
    state["lin0"] = state["lin0"] * 2
    save_file(state, str(tmp_path / "lpips2.safetensors"))
    assert bool((LPIPS.from_file(tmp_path / "lpips2.safetensors")(x, y) > d).all())
    del state["lin4"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        LPIPS.from_file(tmp_path / "bad.safetensors")
