# SPDX-License-Identifier: GPL-3.0-or-later
"""Adapters from the IDE-3D generator (:mod:`ide3d_core.networks`) to the mesh protocols.

The backbone runs once: the tri-planes of the codes are computed in the constructor and every density
or attribute query only samples them and runs the small decoders, so a 256^3 grid costs one synthesis
pass plus 16.7 M decoder evaluations (EG3D's extraction re-runs the backbone for every chunk).

Colour: the first three colour features (in (-1, 1)) mapped to [0, 1] (``(f + 1) / 2``), the same
mapping the generator's low-resolution image uses. Renders for baking use the super-resolved image.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ide3d_core.mesh.field import RenderedViews
from ide3d_core.triplane import sample_triplane


class GeneratorField:
    """:class:`ide3d_core.mesh.field.Field` of one head of a generator.

    Args:
        generator: an :class:`ide3d_core.networks.Generator` (eval mode; its device is used).
        ws: [1, num_ws, w_dim] codes.
        style_ws: optional [1, num_ws, w_dim] codes whose texture replaces the head's own for points
            whose semantic argmax is in ``style_classes`` (a portrait's region restyle).
        style_classes: class ids of the restyle.
    """

    def __init__(self, generator, ws: torch.Tensor, style_ws: Optional[torch.Tensor] = None,
                 style_classes: tuple[int, ...] = ()) -> None:
        if ws.ndim != 3 or ws.shape[0] != 1:
            raise ValueError(f"ws must be [1, num_ws, w_dim], got {tuple(ws.shape)}")
        self.generator = generator
        self.device = next(generator.parameters()).device
        self.ws = ws.to(self.device, torch.float32)
        self._lattice_key, self._lattice = None, None  # density_at_indices' plane tables, per grid axis
        with torch.no_grad():
            self.planes = generator.planes(self.ws)
            self.texture_swap = None
            if style_ws is not None:
                style_planes = generator.planes(style_ws.to(self.device, torch.float32))
                self.texture_swap = (style_planes.texture, tuple(int(c) for c in style_classes))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> sigma [N]; only the semantic planes and decoder run (no colour decoding)."""
        g, cfg = self.generator, self.generator.config
        with torch.no_grad():
            feats = sample_triplane(self.planes.semantic, points[None].to(self.device, torch.float32),
                                    cfg.plane_axes, cfg.aggregation, cfg.box_size)
            sigma, _ = g.semantic_decoder(feats)
        return sigma[0, :, 0].float()

    def density_at_indices(self, axis: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Density [M] at the lattice points ``(axis[i], axis[j], axis[k])`` of ``idx [M, 3]`` (long):
        equal to ``density(axis[idx])``, but each plane is bilinearly sampled once on the ``R x R``
        lattice of ``axis [R]`` (cached), so a point's features are three row gathers, and only the
        decoder's density output is computed. The mesh grid (:mod:`ide3d_core.mesh.grid`) uses it."""
        g, cfg = self.generator, self.generator.config
        key = (int(axis.shape[0]), float(axis[0]), float(axis[-1]))
        if self._lattice_key != key:
            self._lattice = _lattice_planes(self.planes.semantic[0], axis.to(self.device), cfg)
            self._lattice_key = key
        r = int(axis.shape[0])
        idx = idx.to(self.device)
        with torch.no_grad():
            feats = None
            for (a, h), table in zip(self._lattice[0], self._lattice[1]):
                rows = table[idx[:, a] * r + idx[:, h]]  # [M, C]
                feats = rows if feats is None else (torch.cat([feats, rows], -1) if cfg.aggregation == "concat"
                                                    else feats + rows)
            if cfg.aggregation == "mean":
                feats = feats / len(self._lattice[0])
            return g.semantic_decoder.density(feats)[:, 0].float()

    def query(self, points: torch.Tensor):
        """[N, 3] -> (sigma [N], semantic logits [N, 19], rgb [N, 3] in [0, 1])."""
        with torch.no_grad():
            f = self.generator.query(self.planes, points[None].to(self.device, torch.float32),
                                     self.texture_swap)
        rgb = ((f.features[0, :, :3].float() + 1.0) * 0.5).clamp(0.0, 1.0)
        return f.sigma[0, :, 0].float(), f.semantic[0].float(), rgb


def _lattice_planes(planes: torch.Tensor, axis: torch.Tensor, cfg) -> tuple[list, list]:
    """Each of ``planes [3, C, P, P]`` sampled (``grid_sample`` as :mod:`ide3d_core.triplane`) at the
    lattice ``axis x axis`` -> (the planes' world axes (width, height), tables ``[R * R, C]`` with row
    ``i_width * R + i_height``)."""
    import torch.nn.functional as F

    from ide3d_core.triplane import PLANE_AXES

    r = axis.shape[0]
    g = axis * (2.0 / cfg.box_size)
    gw, gh = torch.meshgrid(g, g, indexing="ij")  # [R(width), R(height)]
    grid = torch.stack([gw, gh], -1)[None].expand(planes.shape[0], r, r, 2).float()
    out = F.grid_sample(planes.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    tables = [out[k].permute(1, 2, 0).reshape(r * r, -1).contiguous() for k in range(planes.shape[0])]
    return [PLANE_AXES[name] for name in cfg.plane_axes], tables


class GeneratorRenderer:
    """:class:`ide3d_core.mesh.field.Renderer` of a :class:`GeneratorField`'s head (same cached planes).

    ``rgb`` is the super-resolved image ([-1, 1] mapped to [0, 1]); ``depth`` and ``opacity`` come at
    the neural-rendering resolution.
    """

    def __init__(self, field: GeneratorField) -> None:
        self.field = field

    def render(self, labels: np.ndarray) -> RenderedViews:
        f = self.field
        c = torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(-1, 25), device=f.device)
        b = c.shape[0]
        planes = type(f.planes)(semantic=f.planes.semantic.expand(b, -1, -1, -1, -1),
                                texture=f.planes.texture.expand(b, -1, -1, -1, -1))
        swap = None
        if f.texture_swap is not None:
            swap = (f.texture_swap[0].expand(b, -1, -1, -1, -1), f.texture_swap[1])
        with torch.no_grad():
            out = f.generator.render(planes, c, f.ws.expand(b, -1, -1), texture_swap=swap)
        rgb = ((out.image.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        return RenderedViews(rgb, out.depth.float(), out.opacity.float())
