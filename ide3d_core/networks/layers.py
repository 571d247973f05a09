# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared network primitives, plain PyTorch (CPU, CUDA, bf16 autocast, CUDA-graph capturable).

* Equalised learning rate (StyleGAN): parameters are stored as ``N(0, 1) / lr_mult`` and scaled at run
  time by ``lr_mult / sqrt(fan_in)``, so Adam sees the same effective step for every layer.
* Modulated convolution with demodulation (StyleGAN2), written in the *non-fused* form: the input is
  scaled by the per-sample styles, convolved with the shared weight, and scaled by the per-sample
  demodulation coefficients. This is exactly equivalent to the grouped per-sample-weight form, but it
  is one ordinary ``conv2d`` (fast cuDNN/oneDNN kernels, bf16 under autocast, any batch size).
* Up-sampling by 2 is bilinear with ``align_corners=False``: this is the ``[1, 3, 3, 1]`` FIR filter of
  StyleGAN2 (each output pixel is 3/4 of its nearest and 1/4 of its next input pixel) with the border
  replicated instead of zero-padded (no dark frame at the edges). Down-sampling (for discriminators
  and encoders) uses the same filter, then keeps every second pixel.
* No per-pixel noise inputs: they add nothing to a 3D-consistent tri-plane generator and would need
  random draws in the forward pass.

Every random draw at initialisation goes through an explicit ``torch.Generator``
(:func:`init_parameters`), so a module is the same function of its seed on every machine.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Activation name -> (function, gain). ``lrelu`` keeps StyleGAN's sqrt(2) gain.
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2.0)),
    "softplus": (F.softplus, 1.0),
    "relu": (F.relu, math.sqrt(2.0)),
}


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", dim: int = 1,
             gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """``act(x + bias) * act_gain * gain``, optionally clamped to ``[-clamp, clamp]``.

    Args:
        x: any shape; ``bias`` (x.shape[dim],) is broadcast along ``dim``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.to(x.dtype).reshape(shape)
    fn, act_gain = _ACTIVATIONS[activation]
    x = fn(x)
    g = act_gain * gain
    if g != 1.0:
        x = x * g
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _new_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _randn_(param: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> None:
    """Fill ``param`` with ``N(0, scale^2)`` drawn on the CPU from ``generator`` (device independent);
    parameters on the meta device (shape-only models) are left alone."""
    if param.is_meta:
        return
    param.copy_(torch.randn(param.shape, generator=generator) * scale)


class FullyConnected(nn.Module):
    """Equalised-lr linear layer ``[..., in] -> [..., out]`` with bias and activation.

    ``weight_init`` scales the initial weights (1 = unit-gain He initialisation); an output head that
    should start near zero (the encoders' offsets from ``w_avg``) uses a small value.
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_mult: float = 1.0, bias: bool = True, bias_init: float = 0.0,
                 weight_init: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.lr_mult, self.bias_init = activation, lr_mult, bias_init
        self.weight_init = weight_init
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.reset_parameters(_new_generator())

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        _randn_(self.weight, generator, self.weight_init / self.lr_mult)
        if self.bias is not None:
            self.bias.fill_(self.bias_init / self.lr_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.lr_mult
        x = F.linear(x, w, b)
        return x if self.activation == "linear" else bias_act(x, None, self.activation)

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, act={self.activation}, lr_mult={self.lr_mult}"


class Conv2dLayer(nn.Module):
    """Equalised-lr (unmodulated) convolution ``[B, Cin, H, W] -> [B, Cout, H', W']`` with optional
    2x down-sampling after the convolution (for discriminators and encoders)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 activation: str = "lrelu", down: bool = False, bias: bool = True,
                 clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.down, self.clamp = activation, down, clamp
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.reset_parameters(_new_generator())

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        _randn_(self.weight, generator)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = F.conv2d(x, w, padding=self.kernel_size // 2)
        if self.down:
            x = downsample2x(x)
        return bias_act(x, self.bias, self.activation, clamp=self.clamp)


class ResidualDownBlock(nn.Module):
    """StyleGAN2 residual down-sampling block ``[B, Cin, R, R] -> [B, Cout, R/2, R/2]`` (discriminators,
    encoders): 3x3 conv, 3x3 conv + 2x down, plus a 1x1 skip (no bias) + 2x down; the sum is scaled by
    ``sqrt(1/2)`` so the output variance matches the input's."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, activation="linear", down=True, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, 2H, 2W]``: the [1, 3, 3, 1] filter, border replicated (see module doc)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, H/2, W/2]``: low-pass with the separable [1, 3, 3, 1] / 8 filter
    (border replicated), then keep every second pixel. H and W must be even."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"downsample2x needs even sizes, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    # [1, 3, 3, 1] / 8 built on the device by arithmetic (no host-to-device copy: graph capturable).
    i = torch.arange(4, dtype=x.dtype, device=x.device)
    f = torch.where((2.0 * i - 3.0).abs() == 1.0, 3.0, 1.0).to(x.dtype) / 8.0
    k = (f[:, None] * f[None, :]).expand(c, 1, 4, 4)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k, stride=2, groups=c)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution ``(x [B, Cin, H, W], w [B, w_dim]) -> [B, Cout, H', W']``.

    ``up=True`` up-samples the input by 2 (bilinear, :func:`upsample2x`) before the convolution.
    ``demodulate=False`` with ``kernel_size=1`` gives the ToRGB/ToPlane output layers (linear).
    The style affine is initialised with bias 1 so that styles start near one.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 3,
                 up: bool = False, demodulate: bool = True, activation: str = "lrelu",
                 clamp: float | None = 256.0) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.up, self.demodulate, self.activation, self.clamp = up, demodulate, activation, clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.reset_parameters(_new_generator())

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        _randn_(self.weight, generator)
        self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # [B, Cin]
        if not self.demodulate:
            styles = styles * self.weight_gain
        weight = self.weight.to(x.dtype)
        if self.up:
            x = upsample2x(x)
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if self.demodulate:
            # dcoef[b, o] = 1 / sqrt(sum_{i,k} (gain * W[o,i,k] * s[b,i])^2); computed in fp32.
            wsq = self.weight.float().square().sum(dim=(2, 3)) * self.weight_gain ** 2  # [Cout, Cin]
            dcoefs = torch.rsqrt(styles.float().square() @ wsq.t() + 1e-8)  # [B, Cout]
            x = x * (dcoefs * self.weight_gain).to(x.dtype)[:, :, None, None]
        return bias_act(x, self.bias, self.activation, clamp=self.clamp)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, k={self.kernel_size}, up={self.up}, "
                f"demod={self.demodulate}, act={self.activation}")


def to_output(in_channels: int, out_channels: int, w_dim: int) -> ModulatedConv2d:
    """A ToRGB-style output layer: 1x1 modulated convolution, no demodulation, linear, no clamp."""
    return ModulatedConv2d(in_channels, out_channels, w_dim, kernel_size=1, demodulate=False,
                           activation="linear", clamp=None)


class ConstantInput(nn.Module):
    """A learned constant ``[C, R, R]`` broadcast to the batch (the StyleGAN synthesis input)."""

    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.empty(channels, resolution, resolution))
        self.reset_parameters(_new_generator())

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        _randn_(self.const, generator)

    def forward(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return self.const.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` from ``generator`` in a fixed (registration) order."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            try:
                m.reset_parameters(generator)
            except TypeError:  # a torch built-in layer: not used by this package
                raise TypeError(f"{type(m).__name__} has no reset_parameters(generator)") from None


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that its mean square along ``dim`` is one (StyleGAN's pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the minibatch standard deviation feature(s) (Karras et al. 2018; discriminators).

    x: [B, C, H, W] -> [B, C + num_channels, H, W]. Samples are split into groups of
    ``min(group_size, B)`` (B must be divisible by it; sample i is in group ``i % (B / g)``); each
    group's per-feature standard deviation is averaged over ``C / num_channels`` channels and the
    spatial positions. Computed in fp32.
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"batch {b} is not divisible by the minibatch-stddev group {g}")
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w).float()
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1)
    y = y.repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)
