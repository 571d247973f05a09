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
import torch.nn.functional as F

from ide3d_core.mesh.field import RenderedViews
from ide3d_core.shape_residual import with_residual
from ide3d_core.triplane import sample_triplane


class GeneratorField:
    """:class:`ide3d_core.mesh.field.Field` of one head of a generator.

    Args:
        generator: an :class:`ide3d_core.networks.Generator` (eval mode; its device is used).
        ws: [1, num_ws, w_dim] codes.
        style_ws: optional [1, num_ws, w_dim] codes whose texture replaces the head's own for points
            whose semantic argmax is in ``style_classes`` (a portrait's region restyle).
        style_classes: class ids of the restyle.
        shape_residual: optional ``[1, 3, Cs, r, r]`` residual on the semantic planes (a portrait state's,
            :mod:`ide3d_core.shape_residual`).
        impl: the lattice density's path (:meth:`density_at_indices`): ``"auto"`` the fused C kernel
            where it runs, else PyTorch; ``"torch"``; ``"c"`` (the kernel or RuntimeError).
    """

    def __init__(self, generator, ws: torch.Tensor, style_ws: Optional[torch.Tensor] = None,
                 style_classes: tuple[int, ...] = (), impl: str = "auto",
                 shape_residual: Optional[torch.Tensor] = None) -> None:
        if impl not in ("auto", "torch", "c"):
            raise ValueError(f"impl must be auto, torch or c, got {impl!r}")
        if ws.ndim != 3 or ws.shape[0] != 1:
            raise ValueError(f"ws must be [1, num_ws, w_dim], got {tuple(ws.shape)}")
        self.generator = generator
        self.device = next(generator.parameters()).device
        self.ws = ws.to(self.device, torch.float32)
        self._lattice_key, self._lattice = None, None  # density_at_indices' plane tables, per grid axis
        self._fused = None if impl != "torch" else False  # density_at_indices' fused kernel (False: not used)
        self._impl = impl
        with torch.no_grad():
            self.planes = with_residual(generator.planes(self.ws), shape_residual)
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
        equal to ``density(axis[idx])`` to float rounding. On a CPU with the ops kernels built, the
        fused tri-plane sample + decode kernel (:mod:`ops.triplane_decode`, the density row of the
        semantic decoder only); elsewhere each plane is bilinearly sampled once on the ``R x R``
        lattice of ``axis [R]`` (cached), so a point's features are three row gathers, and only the
        decoder's density output is computed (:func:`_lattice_density`). The mesh grid
        (:mod:`ide3d_core.mesh.grid`) uses it."""
        cfg = self.generator.config
        fused = self._fused_density()
        if fused is None and self._impl == "c":
            from ops import _native

            raise RuntimeError(f"the fused kernel does not run here: {_native.unavailable_reason() or 'not a float32 CPU field'}")
        if fused is not None:
            with torch.no_grad():
                return fused(axis.to(self.device)[idx.to(self.device)])
        key = (int(axis.shape[0]), float(axis[0]), float(axis[-1]))
        if self._lattice_key != key:
            self._lattice = _lattice_planes(self.planes.semantic[0], axis.to(self.device), cfg)
            self._lattice_key = key
        with torch.no_grad():
            return _lattice_density(self.generator.semantic_decoder, self._lattice, int(axis.shape[0]),
                                    idx.to(self.device), cfg.aggregation)

    def _fused_density(self):
        """``points [M, 3] -> density [M]`` through :func:`ops.triplane_decode.triplane_decode` (packed
        once per field), or None where its kernel does not run (not a float32 CPU field, no compiler)."""
        if self._fused is None:
            self._fused = False
            try:
                from ops import triplane_decode as td
            except ImportError:
                return None
            planes = self.planes.semantic[0]
            if not td.kernel_available(planes):
                return None
            from ide3d_core.triplane import PLANE_AXES
            from ops.triplane import channels_last_planes

            cfg, dec = self.generator.config, self.generator.semantic_decoder
            if dec.hidden.activation != "softplus":
                return None
            w1 = dec.hidden.weight.float() * dec.hidden.weight_gain
            b1 = (dec.hidden.bias.float() * dec.hidden.lr_mult if dec.hidden.bias is not None
                  else torch.zeros(w1.shape[0]))
            w2 = dec.out.weight.float()[:1] * dec.out.weight_gain
            b2 = (dec.out.bias.float()[:1] * dec.out.lr_mult if dec.out.bias is not None else torch.zeros(1))
            mlp = td.pack_mlp(w1, b1, w2, b2)
            axes = [PLANE_AXES[name] for name in cfg.plane_axes]
            cl = channels_last_planes(planes)
            self._fused = lambda pts: td.triplane_decode(planes, pts, axes, cfg.box_size, cfg.aggregation, mlp,
                                                         "semantic", dec.density_bias, impl="c",
                                                         planes_cl=cl)[:, 0]
        return self._fused or None

    def query(self, points: torch.Tensor):
        """[N, 3] -> (sigma [N], semantic logits [N, 19], rgb [N, 3] in [0, 1]). The logits carry the
        generator's ``label_offsets`` (a portrait's, solved at its photos), as its rendered label maps do,
        so a mesh's parts follow the same borders."""
        with torch.no_grad():
            f = self.generator.query(self.planes, points[None].to(self.device, torch.float32),
                                     self.texture_swap)
        rgb = ((f.features[0, :, :3].float() + 1.0) * 0.5).clamp(0.0, 1.0)
        logits = f.semantic[0].float()
        offsets = getattr(self.generator, "label_offsets", None)
        if offsets is not None:
            logits = logits + offsets.to(logits.device).float()
        return f.sigma[0, :, 0].float(), logits, rgb


#: Points per step of :func:`_lattice_density` (its [n, hidden] activations stay in the CPU's L2 cache).
LATTICE_STEP = 4096
#: Softplus inputs below this are raised to it: softplus(-20) = 2.1e-9, so a hidden unit changes by less
#: than that (the density by about 1e-8 for the bundled model's decoder). PyTorch's CPU softplus takes
#: 3-6x longer per element far below it (subnormal intermediates in exp / log1p: about -28 to -36 and
#: below -42 on an AVX-512 CPU), and a trained decoder has many hidden units there away from the head.
SOFTPLUS_FLOOR = -20.0


def _lattice_density(decoder, lattice: tuple[list, list], r: int, idx: torch.Tensor,
                     aggregation: str) -> torch.Tensor:
    """The semantic decoder's density [M] (float32) at the features gathered from the lattice tables
    (:func:`_lattice_planes`) for ``idx [M, 3]``: ``SemanticDecoder.density`` computed in steps of
    :data:`LATTICE_STEP` points, the aggregation's mean folded into the first layer's weights, the
    softplus inputs raised to :data:`SOFTPLUS_FLOOR` (a change below 2.1e-9 per hidden unit). A decoder
    whose hidden activation is not softplus goes through ``decoder.density``."""
    axes, tables = lattice
    n = len(tables)
    hidden, out = decoder.hidden, decoder.out
    m = idx.shape[0]
    if hidden.activation != "softplus":
        feats = None
        for (a, h), table in zip(axes, tables):
            rows = table[idx[:, a] * r + idx[:, h]]
            feats = rows if feats is None else (torch.cat([feats, rows], -1) if aggregation == "concat"
                                                else feats + rows)
        if aggregation == "mean":
            feats = feats / n
        return decoder.density(feats)[:, 0].float()
    w1 = hidden.weight.float() * hidden.weight_gain  # [H, F]
    b1 = (hidden.bias.float() * hidden.lr_mult if hidden.bias is not None
          else torch.zeros(w1.shape[0], device=w1.device))
    if aggregation == "concat":  # one weight block per plane
        w1s = [w.t().contiguous() for w in w1.split(tables[0].shape[1], dim=1)]
    else:
        w1s = [(w1 / n if aggregation == "mean" else w1).t().contiguous()]
    w2 = out.weight[0].float() * out.weight_gain  # [H]
    b2 = decoder.density_bias + (0.0 if out.bias is None else float(out.bias[0]) * out.lr_mult)
    rows_of = [idx[:, a] * r + idx[:, h] for a, h in axes]
    result = torch.empty(m, device=idx.device)
    for s in range(0, m, LATTICE_STEP):
        e = min(m, s + LATTICE_STEP)
        if aggregation == "concat":
            pre = b1.expand(e - s, -1).clone()
            for k, table in enumerate(tables):
                pre.addmm_(table.index_select(0, rows_of[k][s:e]), w1s[k])
        else:
            feats = tables[0].index_select(0, rows_of[0][s:e])
            for k in range(1, n):
                feats += tables[k].index_select(0, rows_of[k][s:e])
            pre = torch.addmm(b1, feats, w1s[0])
        act = F.softplus(pre.clamp_(min=SOFTPLUS_FLOOR))
        raw = torch.mv(act, w2).add_(b2)
        result[s:e] = F.softplus(raw.clamp_(min=SOFTPLUS_FLOOR))
    return result


def _lattice_planes(planes: torch.Tensor, axis: torch.Tensor, cfg) -> tuple[list, list]:
    """Each of ``planes [3, C, P, P]`` sampled (``grid_sample`` as :mod:`ide3d_core.triplane`) at the
    lattice ``axis x axis`` -> (the planes' world axes (width, height), tables ``[R * R, C]`` with row
    ``i_width * R + i_height``)."""
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
    the neural-rendering resolution. With ``projection`` (a portrait's
    :class:`~ide3d_core.photo_projection.PhotoProjection`) and the portrait ``state`` the field shows, the
    portrait's photos are laid over the images, as its renders show them.
    """

    def __init__(self, field: GeneratorField, projection=None, state=None) -> None:
        if projection is not None and state is None:
            raise ValueError("a photo projection needs the portrait state the field shows")
        self.field = field
        self.projection, self.state = projection, state

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
            image = out.image
            if self.projection is not None:
                image = self.projection.apply(f.generator, out, c, self.state)[0].to(out.image.device)
        rgb = ((image.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        return RenderedViews(rgb, out.depth.float(), out.opacity.float())
