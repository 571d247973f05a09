# SPDX-License-Identifier: GPL-3.0-or-later
"""Losses, regularisers, schedules, EMA and the dual discriminator against closed-form answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.discriminator import DiscriminatorConfig, DualDiscriminator, downsample_real, prepare_inputs
from training.ema import ema_beta, update_ema
from ide3d_core.networks.layers import minibatch_stddev
from training.losses import (blur_sigma, density_regularization, discriminator_loss, gaussian_blur,
                             generator_loss, mix_styles, neural_resolution, r1_penalty,
                             swap_conditioning, swap_probability)


def test_logistic_losses_match_their_formulas():
    real, fake = torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0], [0.0]])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert generator_loss(fake).item() == pytest.approx((sp(-2.0) + sp(0.0)) / 2)
    assert discriminator_loss(real, fake).item() == pytest.approx(
        (sp(2.0) + sp(0.0)) / 2 + (sp(-0.5) + sp(1.0)) / 2)


def test_r1_of_a_linear_and_a_quadratic_critic():
    w = torch.randn(3, 4, 5)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    logits = (x * w).flatten(1).sum(1, keepdim=True)
    assert r1_penalty(logits, x).item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    x2 = torch.randn(2, 3, 4, 5, requires_grad=True)
    logits = 0.5 * x2.square().flatten(1).sum(1, keepdim=True)  # gradient = x
    expected = x2.detach().square().flatten(1).sum(1).mean().item()
    assert r1_penalty(logits, x2).item() == pytest.approx(expected, rel=1e-5)


def test_density_regularization_is_zero_for_a_constant_field_and_tracks_the_slope():
    g = torch.Generator().manual_seed(0)
    dev = torch.device("cpu")
    flat = density_regularization(lambda p: torch.ones(*p.shape[:2], 1), 2, 500, 0.01, g, dev)
    assert flat.item() == 0.0
    # sigma = k * x: |sigma(p) - sigma(p + n)| = k |n_x|, mean k * s * sqrt(2 / pi).
    k, s = 3.0, 0.01
    val = density_regularization(lambda p: k * p[..., :1], 4, 20000, s, g, dev).item()
    assert val == pytest.approx(k * s * math.sqrt(2 / math.pi), rel=0.03)


def test_schedules_have_the_documented_end_points():
    assert swap_probability(0, 0.5, 1000) == 1.0
    assert swap_probability(500, 0.5, 1000) == pytest.approx(0.75)
    assert swap_probability(5000, 0.5, 1000) == 0.5
    assert blur_sigma(0, 10, 200) == 10 and blur_sigma(100, 10, 200) == 5 and blur_sigma(300, 10, 200) == 0
    assert neural_resolution(0, 64, None, 0, 100) == 64
    assert [neural_resolution(k, 64, 128, 100, 100) for k in (0, 100, 150, 199, 200, 999)] == \
        [64, 64, 96, 112, 128, 128]


def test_swap_and_mixing_take_the_other_rows_where_drawn():
    g = torch.Generator().manual_seed(1)
    c, other = torch.zeros(1000, 25), torch.ones(1000, 25)
    out = swap_conditioning(c, other, 0.3, g)
    assert ((out == 0).all(1) | (out == 1).all(1)).all()
    assert out[:, 0].mean().item() == pytest.approx(0.3, abs=0.05)
    assert torch.equal(swap_conditioning(c, other, 0.0, g), c)
    ws, ws2 = torch.zeros(500, 6, 4), torch.ones(500, 6, 4)
    mixed = mix_styles(ws, ws2, 1.0, g)
    took = mixed[..., 0]  # [B, num_ws], per sample 0...0 1...1 with the cut in [1, 6)
    assert (took[:, 0] == 0).all() and (took[:, -1] == 1).all()
    assert (took.diff(dim=1) >= 0).all()
    assert set(took.sum(1).long().tolist()) == {1, 2, 3, 4, 5}
    assert torch.equal(mix_styles(ws, ws2, 0.0, g), ws)


def test_gaussian_blur_of_a_delta_has_the_requested_variance():
    x = torch.zeros(1, 1, 65, 65)
    x[..., 32, 32] = 1.0
    y = gaussian_blur(x, 3.0)[0, 0]
    t = torch.arange(65.0) - 32
    assert y.sum().item() == pytest.approx(1.0, abs=1e-4)
    var_x = (y.sum(0) * t.square()).sum().item()
    assert var_x == pytest.approx(9.0, rel=0.02)  # truncation at 3 sigma loses ~3 % of the variance
    assert torch.allclose(gaussian_blur(torch.full((1, 2, 8, 8), 0.3), 5.0), torch.tensor(0.3))
    assert gaussian_blur(x, 0.0) is x


def test_ema_half_life_and_update():
    beta = ema_beta(32, 10.0, images_seen=10**9, rampup=0.05)
    assert beta ** (10000 / 32) == pytest.approx(0.5)
    assert ema_beta(32, 10.0, images_seen=1000, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * a.weight.detach() + 0.1 * b.weight.detach()
    update_ema(a, b, 0.9)
    torch.testing.assert_close(a.weight.detach(), expected)


def test_minibatch_stddev_matches_numpy():
    x = torch.randn(8, 6, 3, 3)
    y = minibatch_stddev(x, group_size=4, num_channels=1)
    assert y.shape == (8, 7, 3, 3)
    xn = x.numpy().reshape(4, 2, 6, 3, 3)  # sample i is in group i % 2
    sd = np.sqrt(xn.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # per group
    for i in range(8):
        assert y[i, 6].numpy() == pytest.approx(np.full((3, 3), sd[i % 2]), rel=1e-5)


def test_dual_discriminator_has_two_conditioned_branches():
    torch.manual_seed(0)
    D = DualDiscriminator(DiscriminatorConfig(resolution=16, channel_base=128, channel_max=16,
                                              cmap_dim=8, mapping_layers=1, mbstd_group=2))
    rgb, sem = torch.randn(2, 6, 16, 16), torch.randn(2, 38, 16, 16)
    c = torch.randn(2, 25)
    out = D(rgb, sem, c)
    assert out.rgb.shape == (2, 1) and out.semantic.shape == (2, 1)
    # Separate branches: the RGB logit does not depend on the semantic input and vice versa.
    out2 = D(rgb, sem + 1.0, c)
    assert torch.equal(out.rgb, out2.rgb) and not torch.equal(out.semantic, out2.semantic)
    assert not torch.equal(D(rgb, sem, c + 1.0).rgb, out.rgb)  # camera conditioning
    with pytest.raises(ValueError, match="expects"):
        D(torch.randn(2, 6, 8, 8), torch.randn(2, 38, 8, 8), c)


def test_discriminator_inputs_stack_high_and_upsampled_low_resolution():
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    onehot = torch.nn.functional.one_hot(torch.randint(0, 19, (1, 16, 16)), 19).permute(0, 3, 1, 2).float()
    raw, sem_raw = downsample_real(image, onehot, 8)
    assert torch.allclose(sem_raw.sum(1), torch.ones(1, 8, 8))  # class fractions
    assert torch.allclose(sem_raw[0, :, 0, 0], onehot[0, :, :2, :2].mean((1, 2)))
    rgb, sem = prepare_inputs(image, torch.zeros(1, 3, 8, 8), onehot, sem_raw)
    assert rgb.shape == (1, 6, 16, 16) and sem.shape == (1, 38, 16, 16)
    assert torch.equal(rgb[:, :3], image) and (rgb[:, 3:] == 0).all()
    assert torch.equal(sem[:, :19], onehot * 2 - 1) and sem.min() >= -1 and sem.max() <= 1
