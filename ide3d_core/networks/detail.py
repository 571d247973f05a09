# SPDX-License-Identifier: GPL-3.0-or-later
"""Surface detail: the fine texture a 64 px field cannot hold, read from a shared 3D hash grid at the
visible surface and laid over the super-resolved image.

Why: the tri-planes (128 texels across the head box) and the 64 px neural render cannot carry hair
strands, pores, lip creases or knit ribs; the super-resolution alone can only guess them, and detail in
the wrong place costs more PSNR than blur (docs/training.md, "Sharpness against PSNR"). But the procedural
heads' fine texture is a function of the **3D surface point** (their noises are fixed functions of the
world point, modulated by each head's colours and materials), so the right detail is *predictable* where
the surface is known: one table of it, shared by every head and learned from their exact renders, can
place strands where the truth has them.

*Decision (reference: Müller et al. 2022, multiresolution hash encoding; IDE-3D has no such stage):*
``image' = image + m (a image + b)``, per output pixel, where ``(a, b) = MLP(hash(p), image, softmax(s))``:

* ``p [B, H*W, 3]``: the visible surface point of each output pixel, from the neural render's expected
  surface depth (``(depth - (1 - opacity) far) / opacity``), upsampled to the output resolution with the
  opacity as weight, along each output pixel's own ray;
* ``hash(p)``: :class:`HashGrid`, ``levels`` resolutions from ``min_res`` to ``max_res`` cells across the
  box, ``features`` numbers per level, shared by every head (the codes never reach it);
* ``m = sum_k s_k p_k`` over the head classes: the super-resolved class probabilities ``p`` weighted by
  a per-class **strength** ``s`` (a buffer; all 1 as trained, and then ``m = 1 - p_bg``), so the backdrop
  is untouched and a portrait can turn the detail down.

The strength is not learned with the stage: the inversion solves it per portrait in closed form at its
input views (:mod:`ide3d_core.inversion.detail_strength`), because the shared texture lands right on
some heads and not on others, and the views can tell which; the portrait's weight delta carries it.

The depth, opacity and semantics enter detached: the detail's loss must not move the geometry or the
labels. Density and semantics still depend on ``w_s`` alone; the detail reads only the image and the
semantics (see :class:`SurfaceDetail`), and no code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import rays_from_labels
from ide3d_core.networks.layers import FullyConnected

#: Spatial hash primes (Teschner et al. 2003, as in instant-ngp); the x prime 1 keeps x-neighbours apart.
_PRIMES = (1, 2654435761, 805459861)
#: Smallest opacity that still counts as a surface when the depth is normalised.
_MIN_OPACITY = 1e-3


def level_resolutions(levels: int, min_res: int, max_res: int) -> list[int]:
    """Cells across the box at each level: a geometric series from ``min_res`` to ``max_res``."""
    if levels == 1:
        return [min_res]
    return [int(round(min_res * (max_res / min_res) ** (i / (levels - 1)))) for i in range(levels)]


def parameter_count(levels: int, log2_table: int, features: int, hidden: int, num_classes: int) -> int:
    """Parameters of a :class:`SurfaceDetail` (its tables, weights and biases)."""
    d = levels * features + 3 + num_classes
    return levels * (2 ** log2_table) * features + (d + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * 6


class HashGrid(nn.Module):
    """Multiresolution hash encoding: ``points [N, 3]`` in ``[0, 1]^3`` -> ``[N, levels * features]``.

    Level ``l`` has ``res_l`` cells per side; its ``(res_l + 1)^3`` vertices index a table of ``2^log2_table``
    rows directly when they fit, else through a spatial hash (collisions are shared rows, resolved by
    training as in instant-ngp). Trilinear interpolation of the 8 vertices of a point's cell.
    """

    def __init__(self, levels: int, min_res: int, max_res: int, log2_table: int, features: int) -> None:
        super().__init__()
        self.resolutions = level_resolutions(levels, min_res, max_res)
        self.table_size, self.features = 2 ** log2_table, features
        self.tables = nn.Parameter(torch.empty(levels, self.table_size, features))
        self.reset_parameters(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.tables.copy_(torch.rand(self.tables.shape, generator=generator) * 2e-4 - 1e-4)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
        x = points.float().clamp(0.0, 1.0)
        corners = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], device=x.device)  # [8, 3]
        out = []
        for level, res in enumerate(self.resolutions):
            s = x * res
            base = torch.floor(s).clamp(max=res - 1)
            w = s - base
            v = base.long()[:, None, :] + corners  # [N, 8, 3] the cell's vertices
            if (res + 1) ** 3 <= self.table_size:  # dense: every vertex its own row
                rows = (v[..., 0] * (res + 1) + v[..., 1]) * (res + 1) + v[..., 2]
            else:  # the spatial hash (instant-ngp's), folded into the table
                rows = ((v[..., 0] * _PRIMES[0]) ^ (v[..., 1] * _PRIMES[1]) ^ (v[..., 2] * _PRIMES[2])) \
                    % self.table_size
            weight = torch.where(corners.bool(), w[:, None, :], 1.0 - w[:, None, :]).prod(-1)  # [N, 8]
            out.append(torch.einsum("nkf,nk->nf", self.tables[level][rows].float(), weight))
        return torch.cat(out, dim=1)


def surface_points(depth: torch.Tensor, opacity: torch.Tensor, c: torch.Tensor, far: torch.Tensor,
                   resolution: int) -> torch.Tensor:
    """The visible surface point of every output pixel.

    ``depth``/``opacity [B, 1, h, h]`` the neural render's expected depth (background at ``far``) and
    opacity; ``c [B, 25]`` cameras; ``far [B, 1, 1]`` each ray set's far bound; -> ``[B, H*H, 3]`` model-world
    points (``H = resolution``; rows of pixels as :func:`~ide3d_core.cameras.rays_from_labels`). Where the
    ray meets nothing the point is meaningless (the caller's matte hides it)."""
    op = opacity.float()
    surface = (depth.float() - (1.0 - op) * far.float().view(-1, 1, 1, 1)) / op.clamp_min(_MIN_OPACITY)
    size = (resolution, resolution)
    num = F.interpolate(surface * op, size=size, mode="bilinear", align_corners=False)
    den = F.interpolate(op, size=size, mode="bilinear", align_corners=False)
    t = (num / den.clamp_min(_MIN_OPACITY)).flatten(1)  # [B, H*H]
    origins, dirs = rays_from_labels(c.detach().float(), resolution, resolution)
    return origins + t[..., None] * dirs


class SurfaceDetail(nn.Module):
    """``(image [B, 3, H, H], semantic logits [B, K, H, H], depth [B, 1, h, h], opacity [B, 1, h, h],
    c [B, 25], far [B, 1, 1]) -> image [B, 3, H, H]`` (image range, not clamped); see the module docstring.
    ``box_size``: the field's box (points are mapped from ``[-box/2, box/2]^3`` to the grid's unit cube).
    The last layer starts at zero, so a new detail stage changes nothing until it is trained."""

    def __init__(self, num_classes: int, box_size: float, levels: int, min_res: int, max_res: int,
                 log2_table: int, features: int, hidden: int, background_class: int = 0) -> None:
        super().__init__()
        self.num_classes, self.box_size, self.background_class = num_classes, box_size, background_class
        self.grid = HashGrid(levels, min_res, max_res, log2_table, features)
        self.fc0 = FullyConnected(levels * features + 3 + num_classes, hidden, activation="lrelu")
        self.fc1 = FullyConnected(hidden, hidden, activation="lrelu")
        self.out = FullyConnected(hidden, 6, weight_init=0.0)
        #: [K] per-class strength of the detail (module docstring); background entry unused
        self.register_buffer("strength", torch.ones(num_classes))

    def optional_state(self) -> dict[str, torch.Tensor]:
        """The strength is newer than the first models with a detail stage: files without it load with 1s
        (:func:`~ide3d_core.weights_io.optional_state`)."""
        return {"strength": torch.ones(self.num_classes)}

    def pixel_strength(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs [..., K]`` class probabilities -> ``[...]`` the matte times the strength, ``sum_k p_k s_k``
        over the head classes (the background class contributes nothing)."""
        s = self.strength.float().clone()
        s[self.background_class] = 0.0
        return probs.float() @ s

    def modulation(self, points: torch.Tensor, rgb: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Per pixel ``points [N, 3]`` (model world), ``rgb [N, 3]``, ``probs [N, K]`` -> ``[N, 6]`` = (a, b)."""
        code = self.grid(points / self.box_size + 0.5)
        x = torch.cat([code, rgb.float(), probs.float()], dim=1)
        return self.out(self.fc1(self.fc0(x)))

    def forward(self, image: torch.Tensor, semantic: torch.Tensor, depth: torch.Tensor, opacity: torch.Tensor,
                c: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        if h != w or semantic.shape[-2:] != (h, w) or c.shape[0] != b:
            raise ValueError(f"need square image [B, 3, H, H], semantic [B, K, H, H] and c [B, 25]; got "
                             f"{tuple(image.shape)}, {tuple(semantic.shape)}, {tuple(c.shape)}")
        probs = semantic.detach().float().softmax(dim=1).permute(0, 2, 3, 1).reshape(b, h * w, -1)
        matte = self.pixel_strength(probs)  # [B, H*H]
        points = surface_points(depth.detach(), opacity.detach(), c, far, h)  # [B, H*H, 3]
        rgb = image.permute(0, 2, 3, 1).reshape(b, h * w, 3)
        if image.device.type == "cpu":
            # only the pixels that can show detail (about half of a portrait); data-dependent shapes, so
            # elsewhere (CUDA graphs) every pixel is evaluated
            keep = probs[..., self.background_class] < 1.0 - 1e-3  # the head, whatever the strengths
            ab = self.modulation(points[keep], rgb[keep], probs[keep])
            delta = matte[keep][:, None] * (rgb[keep].float() * ab[:, :3] + ab[:, 3:])
            flat = torch.zeros(b, h * w, 3, dtype=delta.dtype, device=image.device).index_put(
                keep.nonzero(as_tuple=True), delta)
        else:
            ab = self.modulation(points.reshape(-1, 3), rgb.reshape(-1, 3), probs.reshape(b * h * w, -1))
            flat = matte.reshape(-1, 1) * (rgb.reshape(-1, 3).float() * ab[:, :3] + ab[:, 3:])
        return image + flat.reshape(b, h, w, 3).permute(0, 3, 1, 2).to(image.dtype)

