# SPDX-License-Identifier: GPL-3.0-or-later
"""Network primitives against their textbook definitions (StyleGAN2 per-sample weights, FIR filters)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ide3d_core.networks.layers import (FullyConnected, ModulatedConv2d, ResidualDownBlock, downsample2x,
                                        init_parameters, upsample2x)


def test_modulated_conv_equals_per_sample_demodulated_weights():
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 4, w_dim=6, activation="linear", clamp=None).double()
    with torch.no_grad():
        conv.bias.copy_(torch.randn(4))
    x = torch.randn(3, 5, 7, 7, dtype=torch.float64)
    w = torch.randn(3, 6, dtype=torch.float64)
    styles = conv.affine(w)  # [B, Cin]
    ref = []
    for b in range(3):
        wb = conv.weight / math.sqrt(5 * 9) * styles[b][None, :, None, None]  # modulate
        wb = wb / wb.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()  # demodulate
        ref.append(F.conv2d(x[b:b + 1], wb, padding=1) + conv.bias[None, :, None, None])
    assert torch.allclose(conv(x, w), torch.cat(ref), atol=1e-10)


def test_upsample_is_the_1331_filter_with_replicated_border():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    y = upsample2x(x)
    assert y.shape == (2, 3, 10, 12)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    # output (2i, 2j) = 9/16 x[i,j] + 3/16 x[i-1,j] + 3/16 x[i,j-1] + 1/16 x[i-1,j-1]
    i, j = 2, 3
    ref = (9 * xp[..., i + 1, j + 1] + 3 * xp[..., i, j + 1] + 3 * xp[..., i + 1, j] + xp[..., i, j]) / 16
    assert torch.allclose(y[..., 2 * i, 2 * j], ref)
    ref = (9 * xp[..., i + 1, j + 1] + 3 * xp[..., i + 2, j + 1] + 3 * xp[..., i + 1, j + 2]
           + xp[..., i + 2, j + 2]) / 16
    assert torch.allclose(y[..., 2 * i + 1, 2 * j + 1], ref)


def test_downsample_keeps_constants_and_linear_ramps():
    ramp = torch.arange(8.0, dtype=torch.float64).expand(1, 2, 8, 8)
    y = downsample2x(ramp)
    assert y.shape == (1, 2, 4, 4)
    assert torch.allclose(y[0, 0, 0, 1:3], torch.tensor([2.5, 4.5], dtype=torch.float64))
    assert torch.allclose(downsample2x(torch.ones(1, 1, 6, 6)), torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="even sizes"):
        downsample2x(torch.ones(1, 1, 7, 6))


def test_residual_down_block_is_skip_plus_convs_over_sqrt2():
    block = ResidualDownBlock(3, 3).double()
    with torch.no_grad():
        block.skip.weight.copy_(torch.eye(3, dtype=torch.float64)[:, :, None, None] * math.sqrt(3))  # identity
        block.conv1.weight.zero_()
        block.conv1.bias.fill_(0.5)  # conv branch = lrelu(0.5) * sqrt(2)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = block(x)
    assert y.shape == (2, 3, 4, 4) and block.skip.bias is None
    ref = (downsample2x(x) + 0.5 * math.sqrt(2.0)) * math.sqrt(0.5)
    assert torch.allclose(y, ref, atol=1e-12)


def test_fully_connected_equalised_learning_rate():
    fc = FullyConnected(16, 4, lr_mult=0.01, bias_init=2.0)
    x = torch.randn(5, 16)
    stored = fc.weight.detach()
    assert abs(stored.std().item() - 100.0) < 30  # stored as N(0, 1) / lr_mult
    ref = x @ (stored * 0.01 / 4.0).T + 2.0
    assert torch.allclose(fc(x), ref, atol=1e-5)


def test_fully_connected_weight_init_scales_the_initial_weights():
    g = torch.Generator().manual_seed(3)
    a, b = FullyConnected(64, 32), FullyConnected(64, 32, weight_init=0.1)
    init_parameters(torch.nn.ModuleList([a]), torch.Generator().manual_seed(3))
    init_parameters(torch.nn.ModuleList([b]), g)
    assert torch.allclose(b.weight, 0.1 * a.weight) and b.weight.std().item() == pytest.approx(0.1, rel=0.15)


def test_init_parameters_is_seeded():
    a, b = FullyConnected(8, 8), FullyConnected(8, 8)
    init_parameters(torch.nn.ModuleList([a]), torch.Generator().manual_seed(5))
    init_parameters(torch.nn.ModuleList([b]), torch.Generator().manual_seed(5))
    assert torch.equal(a.weight, b.weight)
    init_parameters(torch.nn.ModuleList([b]), torch.Generator().manual_seed(6))
    assert not torch.equal(a.weight, b.weight)
