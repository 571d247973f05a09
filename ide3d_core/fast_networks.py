# SPDX-License-Identifier: GPL-3.0-or-later
"""Inference twins of the super-resolution and tri-plane synthesis networks with the modulation folded
into the convolution weights once per code (issue 15: the CPU cost of a frame and of a mask edit).

The reference :class:`~ide3d_core.networks.layers.ModulatedConv2d` works in the *non-fused* form: it
scales the input by the styles, convolves with the shared weight, scales the output by the demodulation
coefficients, adds the bias, applies the activation, multiplies by its gain and clamps: five passes over
every activation besides the convolution (per layer, per frame). For inference on one code those factors
are constants, so here they go into the weight and the bias once (a few thousand multiplications)::

    W'[o, i] = W[o, i] * gain * s[i] * d[o] * act_gain,    b'[o] = b[o] * act_gain

and a layer is one ``conv2d`` (bias included), one in-place leaky ReLU and one in-place clamp. The leaky
ReLU commutes with the positive ``act_gain`` (``lrelu(g x) = g lrelu(x)``), so the result is the same
function, to float rounding. The to-RGB and to-semantic output layers of a super-resolution block read the
same activations and the same code, so they are one 1x1 convolution with ``3 + 19`` outputs; the texture
heads of the synthesis read the same shared features and codes, so their first layers are one convolution
and their up-blocks grouped convolutions (``groups=3``). Activations are channels-last (NHWC, oneDNN's
native layout on CPUs: no reorder per call); outputs are returned contiguous (NCHW).

``dtype=torch.bfloat16`` runs the convolutions in bfloat16 (AVX-512 BF16 and AMX CPUs, and GPUs, have
fast bf16 convolutions) with the residual image/semantic sums and the tri-plane skip sums in float32;
``scripts/bench_interactive.py`` prints its PSNR against the float32 reference. The folded weights depend
only on the codes, so :func:`fold_superresolution` / :func:`fold_synthesis` results can be cached per code
(a camera-only re-render reuses the super-resolution's).

No gradients (inference only). Shapes as in :mod:`ide3d_core.networks.superres` and
:mod:`ide3d_core.networks.synthesis`; batch items are folded and run one at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ide3d_core.networks.layers import ModulatedConv2d, upsample2x

#: dtypes the fast networks run their convolutions in.
DTYPES = (torch.float32, torch.bfloat16)
_LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class FoldedConv:
    """A modulated convolution with its code folded in: ``weight [Cout, Cin/groups, k, k]``, ``bias [Cout]``
    (both already times the activation gain), ``activation`` "lrelu" or "linear", ``clamp`` or None."""

    weight: torch.Tensor
    bias: torch.Tensor
    up: bool
    activation: str
    clamp: float | None
    groups: int = 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x [1, Cin, H, W] -> [1, Cout, H', W']`` in the weight's dtype."""
        if self.up:
            x = upsample2x(x)
        x = x.to(self.weight.dtype, memory_format=torch.channels_last)
        x = F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2,
                     groups=self.groups)
        if self.activation == "lrelu":
            F.leaky_relu_(x, 0.2)
        if self.clamp is not None:
            x.clamp_(-self.clamp, self.clamp)
        return x


def _fold_weights(layer: ModulatedConv2d, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight [Cout, Cin, k, k], bias [Cout])`` of ``layer`` for one code ``w [w_dim]``, float32."""
    if layer.activation not in ("lrelu", "linear"):
        raise ValueError(f"fold supports lrelu and linear layers, got {layer.activation!r}")
    gain = _LRELU_GAIN if layer.activation == "lrelu" else 1.0
    styles = layer.affine(w.float()[None])[0]  # [Cin]
    weight = layer.weight.float() * (styles * layer.weight_gain)[None, :, None, None]
    out_scale = torch.full((weight.shape[0],), gain)
    if layer.demodulate:
        out_scale = out_scale * torch.rsqrt(weight.square().sum(dim=(1, 2, 3)) + 1e-8)
    return weight.mul_(out_scale[:, None, None, None]), layer.bias.float() * gain


def fold(layers: list[ModulatedConv2d], w: torch.Tensor, dtype: torch.dtype = torch.float32,
         groups: int = 1) -> FoldedConv:
    """Fold one code ``w [w_dim]`` into ``layers`` (all alike): one layer, or ``groups`` layers run as a
    grouped convolution, or (``groups=1``, several 1x1 layers reading the same input) their outputs
    concatenated."""
    if dtype not in DTYPES:
        raise ValueError(f"fast networks run in {DTYPES}, got {dtype}")
    parts = [_fold_weights(layer, w) for layer in layers]
    first = layers[0]
    weight = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    bias = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
    return FoldedConv(weight.to(dtype, memory_format=torch.channels_last), bias.to(dtype), first.up,
                      first.activation, first.clamp, groups)


@dataclass(frozen=True)
class ModulatedApply:
    """A layer left unfolded: ``layer(x, w)`` in float32 (small feature maps, where the weight is larger
    than the activations and folding would cost more than it saves)."""

    layer: ModulatedConv2d
    w: torch.Tensor  #: [1, w_dim]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float().contiguous(), self.w)


def fold_or_apply(layer: ModulatedConv2d, w: torch.Tensor, resolution: int,
                  dtype: torch.dtype = torch.float32) -> FoldedConv | ModulatedApply:
    """:func:`fold` when the layer's output (``resolution`` squared pixels) is at least as large as its
    weight per output channel, else :class:`ModulatedApply`."""
    k = layer.kernel_size
    if resolution * resolution >= layer.in_channels * k * k:
        return fold([layer], w, dtype)
    return ModulatedApply(layer, w.float()[None])


# ------------------------------------------------------------------------------------------------
# Super-resolution
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldedSuperResolution:
    """The super-resolution of one code (see :func:`fold_superresolution`)."""

    conv00: FoldedConv
    conv01: FoldedConv
    out0: FoldedConv  #: to-RGB and to-semantic of block 0: 3 + 19 outputs
    conv10: FoldedConv
    conv11: FoldedConv
    out1: FoldedConv


@torch.no_grad()
def fold_superresolution(sr, ws: torch.Tensor, dtype: torch.dtype = torch.float32) -> FoldedSuperResolution:
    """Fold the super-resolution codes ``ws [5, w_dim]`` (one item's ``ws[b, num_shape_ws + num_head_ws:]``)
    into ``sr`` (:class:`~ide3d_core.networks.superres.SuperResolution`)."""
    if ws.ndim != 2 or ws.shape[0] != 5:
        raise ValueError(f"super-resolution codes must be [5, w_dim], got {tuple(ws.shape)}")
    return FoldedSuperResolution(
        fold([sr.conv00], ws[0], dtype), fold([sr.conv01], ws[1], dtype),
        fold([sr.rgb0, sr.seg0], ws[1], torch.float32),
        fold([sr.conv10], ws[2], dtype), fold([sr.conv11], ws[3], dtype),
        fold([sr.rgb1, sr.seg1], ws[4], torch.float32))


def _folded_per_item(fold, net, ws: torch.Tensor, dtype: torch.dtype, folded: list | None) -> list:
    """``folded`` (one folded network per batch item of ``ws [B, ...]``), made with ``fold`` when None."""
    b = ws.shape[0]
    if folded is None:
        folded = [fold(net, ws[i], dtype) for i in range(b)]
    if len(folded) != b:
        raise ValueError(f"{len(folded)} folded networks for a batch of {b}")
    return folded


@torch.no_grad()
def superresolve(sr, features: torch.Tensor, semantic: torch.Tensor, ws: torch.Tensor,
                 dtype: torch.dtype = torch.float32,
                 folded: list[FoldedSuperResolution] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``sr(features, semantic, ws)`` (:class:`~ide3d_core.networks.superres.SuperResolution`) with the codes
    folded in: ``features [B, F, h, h]``, ``semantic [B, 19, h, h]``, ``ws [B, 5, w_dim]`` -> ``(image
    [B, 3, H, H], semantic logits [B, 19, H, H])``, float32. ``folded``: one :func:`fold_superresolution`
    per batch item (computed here when None)."""
    cfg = sr.cfg
    folded = _folded_per_item(fold_superresolution, sr, ws, dtype, folded)
    r = cfg.sr_input_resolution
    if features.shape[-1] != r or features.shape[-2] != r:
        shrink = features.shape[-1] > r
        features = F.interpolate(features.float(), size=(r, r), mode="bilinear", align_corners=False,
                                 antialias=shrink)
        semantic = F.interpolate(semantic.float(), size=(r, r), mode="bilinear", align_corners=False,
                                 antialias=shrink)
    features, semantic = features.float(), semantic.float()
    images, logits = [], []
    for i, f in enumerate(folded):
        x = torch.cat([features[i:i + 1], semantic[i:i + 1].softmax(dim=1)], dim=1)
        out = torch.cat([features[i:i + 1, :3], semantic[i:i + 1]], dim=1)  # [1, 3 + 19, r, r]
        x = f.conv01(f.conv00(x))
        out = upsample2x(out).add_(f.out0(x.float()))
        x = f.conv11(f.conv10(x))
        out = upsample2x(out).add_(f.out1(x.float()))
        images.append(out[:, :3])
        logits.append(out[:, 3:])
    return torch.cat(images).contiguous(), sr.adjust_logits(torch.cat(logits)).contiguous()


# ------------------------------------------------------------------------------------------------
# Tri-plane synthesis
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldedSynthesis:
    """The synthesis network of one code (see :func:`fold_synthesis`): per shape block ``(conv0, conv1,
    to_skip)``; the three texture heads as one: ``head_conv`` (one convolution, 3 x Ch outputs),
    ``head_to_plane`` and per up-block ``(conv0, conv1, to_skip)``, grouped by head."""

    shape_blocks: tuple[tuple[FoldedConv | ModulatedApply, ...], ...]
    head_conv: FoldedConv
    head_to_plane: FoldedConv
    head_blocks: tuple[tuple[FoldedConv, FoldedConv, FoldedConv], ...]


@torch.no_grad()
def fold_synthesis(synthesis, ws: torch.Tensor, dtype: torch.dtype = torch.float32) -> FoldedSynthesis:
    """Fold one item's codes ``ws [num_ws, w_dim]`` into ``synthesis``
    (:class:`~ide3d_core.networks.synthesis.SynthesisNetwork`)."""
    cfg = synthesis.cfg
    s, h = cfg.num_shape_ws, cfg.num_head_ws
    if ws.ndim != 2 or ws.shape[0] < s + h:
        raise ValueError(f"synthesis codes must be [>= {s + h}, w_dim], got {tuple(ws.shape)}")
    shape = tuple((fold_or_apply(blk.conv0, ws[2 * i], res, dtype), fold_or_apply(blk.conv1, ws[2 * i + 1], res, dtype),
                   fold_or_apply(blk.to_skip, ws[2 * i + 1], res, torch.float32))
                  for i, (blk, res) in enumerate(zip(synthesis.shape.blocks, cfg.shape_resolutions)))
    heads, wh = synthesis.heads, ws[s:s + h]
    n = len(heads)
    head_conv = fold([hd.conv for hd in heads], wh[0], dtype)  # shared input: outputs concatenated
    to_plane = fold([hd.to_plane for hd in heads], wh[0], torch.float32, groups=n)
    blocks = tuple((fold([hd.blocks[i].conv0 for hd in heads], wh[1 + 2 * i], dtype, groups=n),
                    fold([hd.blocks[i].conv1 for hd in heads], wh[2 + 2 * i], dtype, groups=n),
                    fold([hd.blocks[i].to_skip for hd in heads], wh[2 + 2 * i], torch.float32, groups=n))
                   for i in range(len(heads[0].blocks)))
    return FoldedSynthesis(shape, head_conv, to_plane, blocks)


@torch.no_grad()
def synthesize(synthesis, ws: torch.Tensor, dtype: torch.dtype = torch.float32,
               folded: list[FoldedSynthesis] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``synthesis(ws)`` with the codes folded in: ``ws [B, num_ws, w_dim]`` -> ``(semantic planes
    [B, 3, Cs, P, P], texture planes [B, 3, Ct, P, P])``, float32."""
    cfg = synthesis.cfg
    folded = _folded_per_item(fold_synthesis, synthesis, ws, dtype, folded)
    p = cfg.plane_resolution
    semantic, texture = [], []
    for f in folded:
        x = synthesis.shape.const.const[None].float()
        skip = None
        for conv0, conv1, to_skip in f.shape_blocks:
            x = conv1(conv0(x))
            y = to_skip(x.float())
            skip = y if skip is None else upsample2x(skip).add_(y)
        while skip.shape[-1] < p:
            skip = upsample2x(skip)
        semantic.append(skip.contiguous().reshape(1, 3, cfg.semantic_plane_channels, p, p))
        x = f.head_conv(x)
        plane = f.head_to_plane(x.float())
        for conv0, conv1, to_skip in f.head_blocks:
            x = conv1(conv0(x))
            plane = upsample2x(plane).add_(to_skip(x.float()))
        texture.append(plane.contiguous().reshape(1, 3, cfg.texture_plane_channels, p, p))
    return torch.cat(semantic), torch.cat(texture)


@torch.no_grad()
def planes(generator, ws: torch.Tensor, dtype: torch.dtype = torch.float32):
    """``generator.planes(ws)`` (a :class:`~ide3d_core.networks.generator.TriPlanes`) through
    :func:`synthesize`; float32 gives the reference's planes to float rounding."""
    from ide3d_core.networks.generator import TriPlanes

    generator._check_ws(ws)
    semantic, texture = synthesize(generator.synthesis, ws, dtype)
    return TriPlanes(semantic=semantic, texture=texture)
