# SPDX-License-Identifier: GPL-3.0-or-later
"""The seeded generator of stylised heads: proportions, parts, styles and colours.

:func:`sample_heads` draws every random number from one ``torch.Generator`` on the CPU (so a seed gives
the same heads on any device): styles, colours and proportions here, then the parts of :mod:`.parts`
(which draw a few numbers of their own) lay out the primitive slots with :class:`.heads.HeadBuilder`.

Frame and size (model world, ide3d_core.cameras): y up, the face looks toward +z, subject's left = +x.
Chin at y ~ -0.21, crown (with hair) at y ~ +0.24, so chin to crown is ~0.45 units (0.42-0.47) and
the canonical camera (focal 4.2647, radius 2.7, pivot (0, 0, 0.2)) frames head, neck and the top of
the shoulders like an FFHQ crop. Everything lies inside [-0.5, 0.5]^3.

Parts are placed relative to the analytic surface of the skull/face ellipsoids
(:meth:`.parts.Proportions.face_z`), so eyes, brows, nose and lips sit on the face whatever the proportions.
"""
from __future__ import annotations

import math

import torch

from .heads import HeadBatch, unit
from .parts import (OY, Colours, Layout, Proportions, Styles, add_brows, add_earrings, add_ears, add_eyes,
                    add_glasses, add_hair, add_hat, add_mouth, add_neck_and_clothes, add_nose, add_skull_and_cheeks,
                    stack3)

HAIR_STYLES = ("bald", "short", "long", "fringe", "bun")
HAIR_STYLE_P = (0.10, 0.30, 0.30, 0.15, 0.15)
HAT_KINDS = ("none", "beanie", "brimmed", "cap")
HAT_P = (0.80, 0.07, 0.07, 0.06)
GLASSES_KINDS = ("none", "clear", "sun")
GLASSES_P = (0.75, 0.17, 0.08)
EARRING_KINDS = ("none", "both", "left", "right")
EARRING_P = (0.65, 0.25, 0.05, 0.05)
NECKLACE_P = 0.25
MOUTH_OPEN_P = 0.35
COLLAR_KINDS = ("none", "band", "turtleneck")
COLLAR_P = (0.55, 0.30, 0.15)
CLOTH_PATTERNS = ("plain", "stripes", "checks", "dots")
CLOTH_PATTERN_P = (0.4, 0.2, 0.2, 0.2)

_SKIN_TONES = torch.tensor([[0.96, 0.80, 0.69], [0.85, 0.64, 0.50], [0.66, 0.46, 0.33], [0.40, 0.27, 0.19]])
_HAIR_COLOURS = torch.tensor([[0.06, 0.05, 0.05], [0.20, 0.12, 0.07], [0.42, 0.27, 0.15], [0.86, 0.70, 0.44],
                              [0.55, 0.22, 0.10], [0.68, 0.68, 0.68]])
_HAIR_COLOUR_P = (0.27, 0.27, 0.16, 0.13, 0.07, 0.06)  # + 4 % dyed (random saturated colour)
_IRIS_COLOURS = torch.tensor([[0.33, 0.19, 0.09], [0.14, 0.09, 0.05], [0.30, 0.50, 0.75], [0.33, 0.50, 0.30],
                              [0.50, 0.40, 0.20]])


class _Rand:
    """Batched draws (CPU, float32): from a ``torch.Generator``, or read column by column from a given
    ``(B, K)`` tensor of uniforms in (0, 1) (:func:`heads_from_latent`). Both give every head the same
    number of draws in the same order, so column ``k`` always drives the same property."""

    def __init__(self, b: int, g: torch.Generator | None, uniforms: torch.Tensor | None = None) -> None:
        self.b, self.g, self.uniforms, self.used = b, g, uniforms, 0

    def _rand(self, k: int = 0) -> torch.Tensor:
        """(B,) uniforms, or (B, k) when k > 0."""
        if self.uniforms is None:
            return torch.rand(self.b, k, generator=self.g) if k else torch.rand(self.b, generator=self.g)
        n = max(k, 1)
        if self.used + n > self.uniforms.shape[1]:
            raise ValueError(f"the procedural heads need more than {self.uniforms.shape[1]} uniforms")
        cols = self.uniforms[:, self.used:self.used + n]
        self.used += n
        return cols if k else cols[:, 0]

    def u(self, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * self._rand()

    def cat(self, probs) -> torch.Tensor:
        p = torch.tensor(probs, dtype=torch.float32)
        if self.uniforms is None:
            return torch.multinomial(p, self.b, True, generator=self.g)
        cdf = torch.cumsum(p / p.sum(), 0)
        return torch.searchsorted(cdf, self._rand().contiguous(), right=True).clamp_max(len(probs) - 1)

    def bern(self, p: float) -> torch.Tensor:
        return self._rand() < p

    def rgb(self, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * self._rand(3)


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,) hue in [0, 1), saturation, value -> (B, 3) RGB."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _pick(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return table[idx]


def sample_heads(n: int, generator: torch.Generator, device: torch.device | str = "cpu",
                 symmetric: bool = False) -> HeadBatch:
    """Draw ``n`` heads.

    Args:
        n: number of heads.
        generator: a CPU ``torch.Generator``; all randomness comes from it (same seed, same heads).
        device: where the returned tensors live.
        symmetric: mirror-symmetric heads (left/right parts equal, no one-sided earring or parting,
            light in the x = 0 plane, textures even in x) for the mirror test.
    Returns:
        :class:`HeadBatch` with traits ``hair_style``, ``hat``, ``glasses``, ``earrings``, ``necklace``,
        ``mouth_open``, ``collar``, ``cloth_pattern`` (indices into the tuples of this module).
    """
    if n < 1:
        raise ValueError(f"number of heads must be positive, got {n}")
    if generator.device.type != "cpu":
        raise ValueError("sample_heads draws on a CPU generator (the same heads on every device)")
    return _build_heads(_Rand(n, generator), device, symmetric)


def _build_heads(r: _Rand, device: torch.device | str, symmetric: bool) -> HeadBatch:
    """Lay out ``r.b`` heads from the draws of ``r``.

    The draws happen in the order of the calls below, and inside each function in the order written;
    that order is pinned (tests/test_procedural_draw_order.py): :func:`heads_from_latent` reads the
    ``k``-th draw from latent coordinate ``k``, and the bundled model's training heads are stored as
    latents. Add new draws only at the end.
    """
    layout = Layout(r, symmetric)
    styles = _draw_styles(r, symmetric)
    colours = _draw_colours(r, styles)
    face = _draw_proportions(r, styles.mouth_open)
    add_skull_and_cheeks(layout, face, colours)
    add_nose(layout, face, colours)
    add_eyes(layout, face, colours)
    add_brows(layout, face, colours)
    add_ears(layout, face, colours)
    add_mouth(layout, face, colours)
    add_neck_and_clothes(layout, face, colours, styles)
    add_earrings(layout, face, colours, styles)
    cap_c, cap_r = add_hair(layout, face, colours, styles)
    add_hat(layout, cap_c, cap_r, colours, styles)
    add_glasses(layout, face, colours, styles)
    light, background = _draw_light_and_background(layout)
    return layout.bld.build(light, background, symmetric, styles.traits(), device)


def _draw_styles(r: _Rand, symmetric: bool) -> Styles:
    hair_style = r.cat(HAIR_STYLE_P)
    hat = r.cat(HAT_P)
    glasses = r.cat(GLASSES_P)
    earrings = r.cat(EARRING_P)
    if symmetric:
        earrings = torch.where(earrings >= 2, torch.ones_like(earrings), earrings)
    necklace = r.bern(NECKLACE_P)
    mouth_open = r.bern(MOUTH_OPEN_P)
    collar = r.cat(COLLAR_P)
    pattern = r.cat(CLOTH_PATTERN_P)
    return Styles(hair_style, hat, glasses, earrings, necklace, mouth_open, collar, pattern)


def _draw_colours(r: _Rand, styles: Styles) -> Colours:
    n = r.b
    tone = r.u(0.0, 3.0)
    i0 = tone.floor().long().clamp_max(2)
    f = (tone - i0)[:, None]
    skin = (1 - f) * _SKIN_TONES[i0] + f * _SKIN_TONES[i0 + 1]
    skin = (skin * (1 + 0.04 * (r.rgb() - 0.5))).clamp(0, 1)
    blush = torch.tensor([0.85, 0.35, 0.35]) * skin + torch.tensor([0.12, 0.0, 0.02])
    hair_col = _pick(_HAIR_COLOURS, r.cat(_HAIR_COLOUR_P))
    dyed = r.bern(0.04)
    hair_col = torch.where(dyed[:, None], _hsv(r.u(0, 1), r.u(0.5, 0.9), r.u(0.4, 0.8)), hair_col)
    hair_col2 = (hair_col * r.u(1.2, 1.6)[:, None] + 0.04).clamp(0, 1)  # highlights
    brow_col = torch.where(styles.hair_style[:, None] == 0, _pick(_HAIR_COLOURS, r.cat(_HAIR_COLOUR_P)), hair_col)
    brow_col = brow_col * 0.8
    iris = _pick(_IRIS_COLOURS, r.cat((0.4, 0.2, 0.2, 0.1, 0.1)))
    sclera = torch.tensor([0.92, 0.90, 0.86]).expand(n, 3) * r.u(0.92, 1.0)[:, None]
    lipstick = r.bern(0.15)
    lip_col = torch.where(lipstick[:, None], _hsv(r.u(0.93, 1.0), r.u(0.6, 0.9), r.u(0.45, 0.75)),
                          skin * torch.tensor([0.86, 0.58, 0.58]))
    cloth1 = _hsv(r.u(0, 1), r.u(0.15, 0.85), r.u(0.15, 0.9))
    cloth2 = _hsv(r.u(0, 1), r.u(0.0, 0.6), r.u(0.6, 1.0))
    cloth_param = styles.pattern.float() + r.u(0.0, 0.99)
    hat_col = _hsv(r.u(0, 1), r.u(0.2, 0.8), r.u(0.15, 0.85))
    metal = torch.where(r.bern(0.5)[:, None], torch.tensor([0.95, 0.78, 0.35]), torch.tensor([0.85, 0.86, 0.9]))
    beads2 = _hsv(r.u(0, 1), r.u(0.3, 0.9), r.u(0.5, 1.0))
    frame_col = _hsv(r.u(0, 1), r.u(0.0, 0.6), r.u(0.05, 0.5))
    lens_col = torch.where((styles.glasses == 2)[:, None], _hsv(r.u(0, 1), r.u(0.0, 0.5), r.u(0.05, 0.2)),
                           torch.tensor([0.75, 0.8, 0.82]).expand(n, 3))
    return Colours(skin=skin, blush=blush, hair=hair_col, hair_highlight=hair_col2, brow=brow_col, iris=iris,
                    sclera=sclera, lip=lip_col, cloth1=cloth1, cloth2=cloth2, cloth_param=cloth_param, hat=hat_col,
                    metal=metal, beads=beads2, frame=frame_col, lens=lens_col)


def _draw_proportions(r: _Rand, mouth_open: torch.Tensor) -> Proportions:
    n = r.b
    head_w, head_h, head_d = r.u(0.92, 1.07), r.u(0.95, 1.05), r.u(0.95, 1.05)
    cran_c = stack3(n, 0.0, 0.06 + OY, -0.01)
    cran_r = stack3(n, 0.150 * head_w, 0.178 * head_h, 0.185 * head_d)
    jaw_w, jaw_h = r.u(0.80, 1.08), r.u(0.93, 1.06)
    jaw_c = stack3(n, 0.0, -0.045 + OY, 0.035)
    jaw_r = stack3(n, 0.122 * jaw_w, 0.150 * jaw_h, 0.145)
    chin = r.u(0.75, 1.25)
    chin_fwd = r.u(-0.012, 0.012)
    cheek = r.u(0.8, 1.2)
    eye_x, eye_y, eye_s = r.u(0.050, 0.058), r.u(0.020, 0.036) + OY, r.u(0.9, 1.15)
    nose_len, nose_w, nose_p = r.u(0.85, 1.15), r.u(0.8, 1.25), r.u(0.85, 1.2)
    mouth_w, lip_t = r.u(0.85, 1.15), r.u(0.7, 1.3)
    gap = torch.where(mouth_open, r.u(0.006, 0.02), torch.zeros(n))
    brow_t, brow_tilt, brow_dy = r.u(0.7, 1.4), r.u(-12.0, 10.0), r.u(-0.004, 0.006)
    ear_s, ear_a = r.u(0.85, 1.15), r.u(15.0, 35.0)
    neck_w, shoulder_w = r.u(0.88, 1.12), r.u(0.9, 1.08)
    return Proportions(cran_c=cran_c, cran_r=cran_r, jaw_c=jaw_c, jaw_r=jaw_r, jaw_w=jaw_w, chin=chin,
                       chin_fwd=chin_fwd, cheek=cheek, eye_x=eye_x, eye_y=eye_y, eye_s=eye_s, nose_len=nose_len,
                       nose_w=nose_w, nose_p=nose_p, mouth_w=mouth_w, lip_t=lip_t, gap=gap, brow_t=brow_t,
                       brow_tilt=brow_tilt, brow_dy=brow_dy, ear_s=ear_s, ear_a=ear_a, neck_w=neck_w,
                       shoulder_w=shoulder_w)


def _draw_light_and_background(layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3) unit key-light direction (in the x = 0 plane for symmetric heads) and the (B, 7) background:
    two colours and a pattern kind."""
    r = layout.r
    lx = layout.zero if layout.symmetric else r.u(-0.7, 0.7)
    light = unit(torch.stack([lx, r.u(0.15, 0.8), torch.ones(layout.n)], -1))
    bg = torch.cat([_hsv(r.u(0, 1), r.u(0.05, 0.5), r.u(0.25, 0.9)), _hsv(r.u(0, 1), r.u(0.05, 0.5), r.u(0.2, 0.9)),
                    r.cat((0.4, 0.3, 0.3)).float()[:, None]], 1)
    return light, bg


def uniforms_from_latent(z: torch.Tensor) -> torch.Tensor:
    """(B, D) standard-normal latents -> (B, D) uniforms ``Phi(z)`` in (0, 1) (float32, CPU)."""
    z = z.detach().float().cpu()
    return (0.5 * (1 + torch.erf(z / math.sqrt(2.0)))).clamp(1e-6, 1 - 1e-6)


def heads_from_latent(z: torch.Tensor, device: torch.device | str = "cpu") -> HeadBatch:
    """The procedural heads *of* latent codes: ``(B, D)`` standard-normal ``z`` (D >= LATENT_DRAWS)
    -> B heads whose every random property is driven by one coordinate of ``z``.

    Coordinate ``k`` becomes the uniform ``Phi(z[:, k])`` of the ``k``-th draw of :func:`sample_heads`
    (categories by inverse CDF), so ``z ~ N(0, I)`` gives exactly the heads' distribution, and a
    generator can be taught "the head of z" by supervision (training/distill.py). Coordinates past
    LATENT_DRAWS are ignored."""
    if z.ndim != 2 or z.shape[1] < LATENT_DRAWS:
        raise ValueError(f"z must be (B, >= {LATENT_DRAWS}), got {tuple(z.shape)}")
    return _build_heads(_Rand(z.shape[0], None, uniforms_from_latent(z)), device, symmetric=False)


def median_padded(z: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` latents widened to ``(B, max(D, LATENT_DRAWS))`` with zeros: a generator with fewer
    latent coordinates than draws (the tiny test model) drives the first ``D`` draws and the rest sit
    at their median."""
    return torch.nn.functional.pad(z, (0, max(0, LATENT_DRAWS - z.shape[1])))


def _count_draws() -> int:
    r = _Rand(1, None, torch.full((1, 4096), 0.5))
    _build_heads(r, "cpu", symmetric=False)
    return r.used


#: Uniform draws of one head (the latent coordinates that :func:`heads_from_latent` reads).
LATENT_DRAWS = _count_draws()
