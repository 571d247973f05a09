# SPDX-License-Identifier: GPL-3.0-or-later
"""Metrics against known answers: SWD, mIoU, label frequency, multi-view consistency, SegNet."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core.cameras import orbit_camera
from test_training_fixtures import one_thread  # noqa: F401 (autouse fixture)
from training.metrics import (evaluate_generator, frequency_distance, label_frequency, laplacian_pyramid,
                              mean_iou, sliced_wasserstein, view_consistency)


def _textures(n: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields + fine noise, [n, 3, 32, 32] in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear")
    return (low * 1.6 - 0.8 + 0.1 * torch.randn(n, 3, 32, 32, generator=g)).clamp(-1, 1)


def test_laplacian_pyramid_levels_sum_back_to_the_image():
    x = _textures(2, 0)
    levels = laplacian_pyramid(x, min_resolution=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    # Reconstruct: g_k = band_k + blur(upsample(g_{k+1})).
    from training.metrics.swd import _blur5

    g = levels[-1]
    for band in reversed(levels[:-1]):
        g = band + _blur5(torch.nn.functional.interpolate(g, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(g, x, atol=1e-5, rtol=0)


def test_swd_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    a, b = _textures(48, 1), _textures(48, 2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    swd = lambda x, y: sliced_wasserstein(x, y, g(), patches_per_image=16, directions=128)  # noqa: E731
    assert swd(a, a).mean == 0.0
    same_dist = swd(a, b).mean
    shifts = [swd(a, (b + s).clamp(-1, 1)).mean for s in (0.1, 0.3, 0.6)]
    assert same_dist < shifts[0] < shifts[1] < shifts[2]
    noisy = swd(a, (b + 0.3 * torch.randn(b.shape, generator=g())).clamp(-1, 1))
    assert noisy.levels[0] > 3 * swd(a, b).levels[0]  # noise shows on the finest level


def test_mean_iou_and_label_frequency_known_values():
    t = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    assert mean_iou(t, t) == 1.0
    p = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])
    # class 0: inter 4, union 5; class 1: inter 3, union 4
    assert mean_iou(p, t) == pytest.approx((4 / 5 + 3 / 4) / 2)
    f = label_frequency(t)
    assert f[0] == 0.5 and f[1] == 0.5 and f.sum() == 1
    assert frequency_distance(f, f) == 0.0
    assert frequency_distance(label_frequency(t), label_frequency(p)) == pytest.approx(1 / 8)


def test_multiview_consistency_of_a_procedural_head_is_near_perfect():
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(2, torch.Generator().manual_seed(0), "cpu")
    ca = torch.as_tensor(np.stack([orbit_camera(0.0).label()] * 2))
    cb = torch.as_tensor(np.stack([orbit_camera(math.radians(15.0)).label()] * 2))
    ra, rb = render_heads(heads, ca, 64), render_heads(heads, cb, 64)
    good = view_consistency(ra.image[0], ra.depth[0], ra.mask[0], ca[0],
                            rb.image[0], rb.depth[0], rb.mask[0], cb[0])
    # Exact geometry: only texture resampling remains (measured ~0.015, PSNR ~30 dB).
    assert good.error < 0.03 and good.psnr > 25 and good.coverage > 0.75
    other_head = view_consistency(ra.image[0], ra.depth[0], ra.mask[0], ca[0],
                                  rb.image[1], rb.depth[1], rb.mask[1], cb[0])
    wrong_camera = view_consistency(ra.image[0], ra.depth[0], ra.mask[0], ca[0],
                                    rb.image[0], rb.depth[0], rb.mask[0], ca[0])
    assert other_head.error > 3 * good.error
    assert wrong_camera.coverage < 0.5 * good.coverage


def test_segnet_learns_a_fixed_batch_and_round_trips(tmp_path):
    from training.data import ProceduralSource
    from training.segnet import SegNet, SegNetConfig, load_segnet, save_segnet

    torch.manual_seed(0)
    net = SegNet(SegNetConfig((8, 16, 16)))
    batch = ProceduralSource(16, 0, torch.device("cpu")).batch(0, 0, 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(batch.image), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    back = load_segnet(save_segnet(net, tmp_path / "seg"))
    x = batch.image
    assert torch.equal(back(x), net.eval()(x))
    (tmp_path / "seg" / "config.json").write_text('{"widths": [8, 16, 16], "extra": 1}')
    with pytest.raises(ValueError, match="config.json"):
        load_segnet(tmp_path / "seg")


def test_evaluate_generator_returns_finite_metrics():
    from ide3d_core.networks import CONFIGS, Generator
    from training.data import ProceduralSource

    G = Generator(CONFIGS["tiny"], seed=0).eval()
    rep = evaluate_generator(G, ProceduralSource(32, 0, torch.device("cpu")), n=8, batch=8, seed=0,
                             device=torch.device("cpu"), multiview_heads=2)
    assert math.isfinite(rep.swd) and len(rep.swd_levels) == 2
    assert 0.0 <= rep.label_frequency_tv <= 1.0 and rep.semantic_miou is None


def test_one_iou_definition_for_every_caller():
    """Inference, training and mesh calibration share ide3d_core.metrics: a class absent from both maps is
    skipped (not 0, not 1), pixels are pooled over the batch, empty maps raise."""
    import numpy as np

    from ide3d_core import metrics
    from ide3d_core.inversion import mean_iou as inversion_miou
    from ide3d_core.mesh.level import iou as level_iou
    from training.metrics import mean_iou as training_miou

    assert inversion_miou is metrics.mean_iou and training_miou is metrics.mean_iou and level_iou is metrics.iou
    t = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])
    p = np.array([[[0, 0, 1, 0]], [[0, 0, 0, 0]]])
    # pooled: class 0 inter 6 union 7; class 1 inter 1 union 2; the 17 absent classes are skipped
    assert metrics.mean_iou(p, t) == pytest.approx((6 / 7 + 1 / 2) / 2)
    assert metrics.mean_iou(torch.from_numpy(p), torch.from_numpy(t)) == metrics.mean_iou(p, t)
    with pytest.raises(ValueError, match="empty"):
        metrics.mean_iou(np.zeros((0, 4), int), np.zeros((0, 4), int))
    with pytest.raises(ValueError, match="outside"):
        metrics.mean_iou(np.full((2, 2), 19), np.zeros((2, 2), int))
    assert metrics.iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert metrics.iou(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)) == pytest.approx(1 / 3)
