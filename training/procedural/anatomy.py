# SPDX-License-Identifier: GPL-3.0-or-later
"""The seeded generator of stylised heads: proportions, parts, styles and colours.

:func:`sample_heads` draws every random number from one ``torch.Generator`` on the CPU (so a seed gives
the same heads on any device) and lays out the primitive slots with :class:`.heads.HeadBuilder`.

Frame and size (model world, ide3d_core.cameras): y up, the face looks toward +z, subject's left = +x.
Chin at y ~ -0.21, crown (with hair) at y ~ +0.24, so chin to crown is ~0.45 units (0.42-0.47) and
the canonical camera (focal 4.2647, radius 2.7, pivot (0, 0, 0.2)) frames head, neck and the top of
the shoulders like an FFHQ crop. Everything lies inside [-0.5, 0.5]^3.

Parts are placed relative to the analytic surface of the skull/face ellipsoids (:func:`_surface_z`), so
eyes, brows, nose and lips sit on the face whatever the proportions.
"""
from __future__ import annotations

import math

import torch

from ide3d_core.labels import ID

from .heads import HeadBatch, HeadBuilder, Material, deg, rotation_xyz, unit

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


def _stack3(b: int, x, y, z) -> torch.Tensor:
    """(B, 3) from per-head (B,) tensors or scalars."""
    f = lambda v: v.float() if torch.is_tensor(v) and v.ndim else torch.full((b,), float(v))  # noqa: E731
    return torch.stack([f(x), f(y), f(z)], -1)


def _surface_z(centre: torch.Tensor, radii: torch.Tensor, x, y) -> torch.Tensor:
    """Front (+z) surface height of an axis-aligned ellipsoid above (x, y), -inf outside its outline."""
    q = 1 - ((x - centre[:, 0]) / radii[:, 0]) ** 2 - ((y - centre[:, 1]) / radii[:, 1]) ** 2
    return torch.where(q > 0, centre[:, 2] + radii[:, 2] * q.clamp_min(0).sqrt(), torch.full_like(q, -1.0))


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
    n = r.b
    v3 = lambda x, y, z: _stack3(n, x, y, z)  # noqa: E731
    bld = HeadBuilder(n)
    side_jitter = (lambda s: torch.zeros(n)) if symmetric else (lambda s: r.u(-s, s))
    zero = torch.zeros(n)

    # --- styles and colours ---------------------------------------------------------------------
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
    brow_col = torch.where(hair_style[:, None] == 0, _pick(_HAIR_COLOURS, r.cat(_HAIR_COLOUR_P)), hair_col)
    brow_col = brow_col * 0.8
    iris = _pick(_IRIS_COLOURS, r.cat((0.4, 0.2, 0.2, 0.1, 0.1)))
    sclera = torch.tensor([0.92, 0.90, 0.86]).expand(n, 3) * r.u(0.92, 1.0)[:, None]
    lipstick = r.bern(0.15)
    lip_col = torch.where(lipstick[:, None], _hsv(r.u(0.93, 1.0), r.u(0.6, 0.9), r.u(0.45, 0.75)),
                          skin * torch.tensor([0.86, 0.58, 0.58]))
    cloth1 = _hsv(r.u(0, 1), r.u(0.15, 0.85), r.u(0.15, 0.9))
    cloth2 = _hsv(r.u(0, 1), r.u(0.0, 0.6), r.u(0.6, 1.0))
    cloth_param = pattern.float() + r.u(0.0, 0.99)
    hat_col = _hsv(r.u(0, 1), r.u(0.2, 0.8), r.u(0.15, 0.85))
    metal = torch.where(r.bern(0.5)[:, None], torch.tensor([0.95, 0.78, 0.35]), torch.tensor([0.85, 0.86, 0.9]))
    beads2 = _hsv(r.u(0, 1), r.u(0.3, 0.9), r.u(0.5, 1.0))
    frame_col = _hsv(r.u(0, 1), r.u(0.0, 0.6), r.u(0.05, 0.5))
    lens_col = torch.where((glasses == 2)[:, None], _hsv(r.u(0, 1), r.u(0.0, 0.5), r.u(0.05, 0.2)),
                           torch.tensor([0.75, 0.8, 0.82]).expand(n, 3))

    # --- proportions ----------------------------------------------------------------------------
    head_w, head_h, head_d = r.u(0.92, 1.07), r.u(0.95, 1.05), r.u(0.95, 1.05)
    oy = -0.015  # vertical placement of the head in the frame
    cran_c = v3(0.0, 0.06 + oy, -0.01)
    cran_r = v3(0.150 * head_w, 0.178 * head_h, 0.185 * head_d)
    jaw_w, jaw_h = r.u(0.80, 1.08), r.u(0.93, 1.06)
    jaw_c = v3(0.0, -0.045 + oy, 0.035)
    jaw_r = v3(0.122 * jaw_w, 0.150 * jaw_h, 0.145)
    chin = r.u(0.75, 1.25)
    chin_fwd = r.u(-0.012, 0.012)
    cheek = r.u(0.8, 1.2)

    def face_z(x, y):
        return torch.maximum(_surface_z(cran_c, cran_r, x, y), _surface_z(jaw_c, jaw_r, x, y))

    eye_x, eye_y, eye_s = r.u(0.050, 0.058), r.u(0.020, 0.036) + oy, r.u(0.9, 1.15)
    nose_len, nose_w, nose_p = r.u(0.85, 1.15), r.u(0.8, 1.25), r.u(0.85, 1.2)
    mouth_w, lip_t = r.u(0.85, 1.15), r.u(0.7, 1.3)
    gap = torch.where(mouth_open, r.u(0.006, 0.02), zero)
    brow_t, brow_tilt, brow_dy = r.u(0.7, 1.4), r.u(-12.0, 10.0), r.u(-0.004, 0.006)
    ear_s, ear_a = r.u(0.85, 1.15), r.u(15.0, 35.0)
    neck_w, shoulder_w = r.u(0.88, 1.12), r.u(0.9, 1.08)

    # --- face -----------------------------------------------------------------------------------
    skin_slot = dict(label=ID["skin"], material=Material.SKIN, colour1=skin, colour2=blush)
    bld.add("cranium", centre=cran_c, radii=cran_r, **skin_slot)
    bld.add("jaw", centre=jaw_c, radii=jaw_r, **skin_slot)
    chin_r = v3(0.046 * chin, 0.040 * chin, 0.040 * chin)
    chin_y = jaw_c[:, 1] - jaw_r[:, 1] + chin_r[:, 1] + 0.004
    bld.add("chin", centre=v3(0.0, chin_y, face_z(zero, chin_y) - chin_r[:, 2] + 0.006 + chin_fwd.clamp_min(0)),
            radii=chin_r, **skin_slot)
    for sgn, side in ((1, "l"), (-1, "r")):
        cx = sgn * (0.055 * jaw_w + side_jitter(0.003))
        cy = -0.03 + oy + side_jitter(0.003)
        # wide, shallow cheek pads sunk into the face: a soft swelling, not a ball
        cr = v3(0.05 * cheek, 0.04 * cheek, 0.08)
        yaw = torch.full((n,), sgn * deg(30.0))
        bld.add(f"{side}_cheek", centre=v3(cx, cy, face_z(cx, cy) - cr[:, 2] + 0.001), radii=cr,
                rot=rotation_xyz(zero, yaw, zero),
                label=ID["skin"], material=Material.SKIN, colour1=skin, colour2=blush, param=r.u(0.1, 0.45))

    # nose: bridge, tip, wings
    nose_top = eye_y + 0.012
    nose_bot = eye_y - 0.075 * nose_len
    ny = 0.5 * (nose_top + nose_bot)
    bridge_r = v3(0.015 * nose_w, 0.5 * (nose_top - nose_bot) + 0.01, 0.02 * nose_p)
    nose_slot = dict(label=ID["nose"], material=Material.SKIN, colour1=skin, colour2=blush)
    bld.add("nose_bridge", centre=v3(0.0, ny, face_z(zero, ny) - 0.006),
            radii=bridge_r, rot=rotation_xyz(torch.full((n,), deg(-16.0)), zero, zero), **nose_slot)
    tip_r = 0.019 * nose_w
    tip_c = v3(0.0, nose_bot + 0.012, face_z(zero, nose_bot) + 0.03 * nose_p - tip_r)
    bld.add("nose_tip", centre=tip_c, radii=torch.stack([tip_r] * 3, -1), **nose_slot)
    bld.add("nose_wings", centre=tip_c + v3(0.0, -0.004, -0.014),
            radii=v3(0.031 * nose_w, 0.014, 0.016), **nose_slot)

    # eyes (eyeball with iris) and upper lids
    eye_r = v3(0.025 * eye_s, 0.0145 * eye_s, 0.016)
    lid_cut = eye_y + r.u(0.004, 0.0075)
    for sgn, side in ((1, "l"), (-1, "r")):
        ex = sgn * (eye_x + side_jitter(0.002))
        ez = face_z(ex, eye_y) - eye_r[:, 2] + 0.0065
        yaw = torch.full((n,), sgn * deg(12.0))
        bld.add(f"{side}_eye", label=ID[f"{side}_eye"], material=Material.EYE, centre=v3(ex, eye_y, ez),
                radii=eye_r, rot=rotation_xyz(zero, yaw, zero), colour1=sclera, colour2=iris,
                param=r.u(0.0085, 0.0105) * eye_s)
        lid_p = bld.plane((0.0, -1.0, 0.0), -lid_cut)
        bld.add(f"{side}_lid", centre=v3(ex, eye_y + 0.002, ez + 0.0012), radii=eye_r * torch.tensor([1.1, 1.0, 1.06]),
                rot=rotation_xyz(zero, yaw, zero), planes=(lid_p,), **skin_slot)

    # brows
    for sgn, side in ((1, "l"), (-1, "r")):
        bx = sgn * (eye_x + 0.004 + side_jitter(0.002))
        by = eye_y + 0.04 + brow_dy + side_jitter(0.002)
        brow_r = v3(0.031, 0.0068 * brow_t, 0.010)
        rot = rotation_xyz(zero, torch.full((n,), sgn * deg(18.0)), -sgn * brow_tilt * math.pi / 180)
        bld.add(f"{side}_brow", label=ID[f"{side}_brow"], material=Material.BROW,
                centre=v3(bx, by, face_z(bx, by) - 0.005), radii=brow_r, rot=rot,
                colour1=brow_col, colour2=brow_col * 1.3)

    # ears
    ear_y = eye_y - 0.03
    ear_z = cran_c[:, 2] - 0.012
    ear_r = v3(0.014, 0.045 * ear_s, 0.027 * ear_s)
    ear_x = cran_r[:, 0] * 0.96
    for sgn, side in ((1, "l"), (-1, "r")):
        rot = rotation_xyz(torch.full((n,), deg(-8.0)), -sgn * ear_a * math.pi / 180, zero)
        bld.add(f"{side}_ear", label=ID[f"{side}_ear"], material=Material.SKIN,
                centre=v3(sgn * ear_x, ear_y, ear_z), radii=ear_r, rot=rot, colour1=skin, colour2=blush)

    # mouth: lips clipped at the lip line, a dark cavity behind them shows when they part
    mouth_y = nose_bot - 0.03
    mz = face_z(zero, mouth_y)
    up_p = bld.plane((0.0, -1.0, 0.0), -(mouth_y + 0.5 * gap))
    lo_p = bld.plane((0.0, 1.0, 0.0), mouth_y - 0.5 * gap)
    bld.add("upper_lip", label=ID["u_lip"], material=Material.LIP,
            centre=v3(0.0, mouth_y + 0.5 * gap + 0.001, mz - 0.004),
            radii=v3(0.036 * mouth_w, 0.0105 * lip_t, 0.012), planes=(up_p,), colour1=lip_col, colour2=skin)
    bld.add("lower_lip", label=ID["l_lip"], material=Material.LIP,
            centre=v3(0.0, mouth_y - 0.5 * gap - 0.003, mz - 0.005),
            radii=v3(0.032 * mouth_w, 0.012 * lip_t, 0.012), planes=(lo_p,), colour1=lip_col, colour2=skin)
    bld.add("mouth", label=ID["mouth"], material=Material.MOUTH, centre=v3(0.0, mouth_y, mz - 0.009),
            radii=v3(0.026 * mouth_w, 0.5 * gap + 0.005, 0.012),
            colour1=torch.tensor([0.30, 0.06, 0.07]), colour2=torch.tensor([0.93, 0.90, 0.82]))

    # --- neck and clothes -----------------------------------------------------------------------
    neck_c = v3(0.0, -0.2, -0.018)
    neck_r = 0.063 * neck_w
    n_top, n_bot = bld.plane((0.0, 1.0, 0.0), -0.05), bld.plane((0.0, -1.0, 0.0), 0.42)
    bld.add("neck", label=ID["neck"], material=Material.SKIN, centre=neck_c,
            radii=torch.stack([neck_r, torch.full((n,), math.inf), neck_r * 1.05], -1),
            planes=(n_top, n_bot), colour1=skin * 0.93, colour2=blush)
    cloth_slot = dict(label=ID["cloth"], material=Material.CLOTH, colour1=cloth1, colour2=cloth2, param=cloth_param)
    box_p = bld.plane((0.0, -1.0, 0.0), 0.5)
    bld.add("torso", centre=v3(0.0, -0.47, -0.03), radii=v3(0.34 * shoulder_w, 0.215, 0.16),
            planes=(box_p,), **cloth_slot)
    for sgn, side in ((1, "l"), (-1, "r")):
        bld.add(f"{side}_shoulder", centre=v3(sgn * 0.17 * shoulder_w, -0.375, -0.035), radii=v3(0.13, 0.085, 0.12),
                planes=(box_p,), **cloth_slot)
    collar_top = torch.where(collar == 2, r.u(-0.245, -0.225), r.u(-0.275, -0.26))
    c_top, c_bot = bld.plane((0.0, 1.0, 0.0), collar_top), bld.plane((0.0, -1.0, 0.0), 0.36)
    bld.add("collar", centre=neck_c, radii=torch.stack([neck_r + 0.011, torch.full((n,), math.inf),
                                                      neck_r * 1.05 + 0.011], -1),
            planes=(c_top, c_bot), active=collar > 0, **cloth_slot)
    # necklace: a thin band around the neck, dipping in front
    k = r.u(0.4, 0.9)
    y_front = r.u(-0.245, -0.22)
    band_r = neck_r + 0.005
    h0 = y_front + k * (band_r * 1.05 + neck_c[:, 2])
    nk1 = bld.plane(v3(0.0, 1.0, k), h0 + 0.007)
    nk2 = bld.plane(v3(0.0, -1.0, -k), -h0)
    bld.add("necklace", label=ID["neck_l"], material=Material.BEADS, centre=neck_c,
            radii=torch.stack([band_r, torch.full((n,), math.inf), band_r * 1.05], -1), planes=(nk1, nk2),
            active=necklace & (collar != 2), colour1=metal, colour2=beads2, param=r.u(30.0, 60.0))

    # earrings hang under the lobes
    ring_r = r.u(0.006, 0.010)
    for sgn, side, on in ((1, "l", (earrings == 1) | (earrings == 2)), (-1, "r", (earrings == 1) | (earrings == 3))):
        bld.add(f"{side}_earring", label=ID["ear_r"], material=Material.METAL,
                centre=v3(sgn * (ear_x + 0.006), ear_y - ear_r[:, 1] - ring_r + 0.003, ear_z + 0.006),
                radii=torch.stack([ring_r, ring_r * 1.3, ring_r], -1), active=on, colour1=metal, colour2=metal)

    # --- hair -----------------------------------------------------------------------------------
    has_hair = hair_style != 0
    thick = r.u(0.008, 0.02)
    cap_c = cran_c + v3(0.0, 0.006, -0.006)
    cap_r = cran_r + thick[:, None]
    fringe = hair_style == 3
    line_y = torch.where(fringe, r.u(0.072, 0.09) + brow_dy, r.u(0.115, 0.15)) + oy
    slope = torch.where(fringe, r.u(0.2, 0.45), r.u(0.8, 1.4))
    part = side_jitter(0.5) * fringe
    front_n = torch.stack([part, -slope, torch.ones(n)], -1)
    front_z = face_z(zero, line_y) + 0.01
    hp_front = bld.plane(front_n, (front_n * v3(0.0, line_y, front_z)).sum(-1))
    nape = torch.where(hair_style == 2, r.u(-0.2, -0.12), r.u(-0.035, 0.02)) + oy
    nape = torch.where(hair_style == 4, nape + 0.03, nape)
    hp_bottom = bld.plane(v3(0.0, -1.0, 0.6), -nape)
    bld.add("hair_cap", label=ID["hair"], material=Material.HAIR, centre=cap_c, radii=cap_r,
            planes=(hp_front, hp_bottom), active=has_hair, colour1=hair_col, colour2=hair_col2, param=r.u(0, 1))
    long_len = r.u(0.15, 0.3)
    hb_front = bld.plane((0.0, 0.0, 1.0), r.u(0.0, 0.05))
    hb_bottom = bld.plane((0.0, -1.0, 0.0), torch.full((n,), 0.05) + long_len)
    bld.add("hair_back", label=ID["hair"], material=Material.HAIR, centre=v3(0.0, -0.04 + oy, -0.04),
            radii=v3(cap_r[:, 0] + r.u(0.01, 0.035), torch.full((n,), 0.26), cap_r[:, 2] * 0.85),
            planes=(hb_front, hb_bottom), active=(hair_style == 2) | (fringe & r.bern(0.5)),
            colour1=hair_col, colour2=hair_col2, param=r.u(0, 1))
    bun_r = r.u(0.045, 0.065)
    bld.add("bun", label=ID["hair"], material=Material.HAIR,
            centre=v3(0.0, cap_c[:, 1] + cap_r[:, 1] * 0.72, cap_c[:, 2] - cap_r[:, 2] * 0.6),
            radii=torch.stack([bun_r] * 3, -1), active=hair_style == 4,
            colour1=hair_col, colour2=hair_col2, param=r.u(0, 1))

    # --- hat ------------------------------------------------------------------------------------
    hat_y = torch.where(hat == 1, r.u(0.085, 0.115), r.u(0.105, 0.13)) + oy
    hat_tilt = side_jitter(deg(6.0))
    hat_p = bld.plane(v3(-torch.sin(hat_tilt), -torch.cos(hat_tilt), 0.0), -hat_y)
    bld.add("hat_crown", label=ID["hat"], material=Material.HAT, centre=cap_c + v3(0.0, 0.008, 0.0),
            radii=cap_r + 0.014 + r.u(0.0, 0.015)[:, None], planes=(hat_p,), active=hat > 0,
            colour1=hat_col, colour2=hat_col * 0.7, param=(hat == 1).float())
    br_top, br_bot = bld.plane((0.0, 1.0, 0.0), hat_y + 0.004), bld.plane((0.0, -1.0, 0.0), -(hat_y - 0.004))
    brim = r.u(0.19, 0.23)
    bld.add("hat_brim", label=ID["hat"], material=Material.HAT, centre=cap_c,
            radii=torch.stack([brim, torch.full((n,), math.inf), brim * 1.03], -1), planes=(br_top, br_bot),
            active=hat == 2, colour1=hat_col, colour2=hat_col * 0.7)
    visor_back = bld.plane((0.0, 0.0, -1.0), -(cap_c[:, 2] + cap_r[:, 2] - 0.03))
    bld.add("hat_visor", label=ID["hat"], material=Material.HAT,
            centre=v3(0.0, hat_y + 0.004, cap_c[:, 2] + cap_r[:, 2] + 0.02),
            radii=v3(0.11, 0.006, 0.1), rot=rotation_xyz(torch.full((n,), deg(-8.0)), zero, zero),
            planes=(visor_back,), active=hat == 3, colour1=hat_col, colour2=hat_col * 0.7)

    # --- glasses --------------------------------------------------------------------------------
    on = glasses > 0
    gs = r.u(0.95, 1.15)
    lens_r = v3(0.026 * gs, 0.02 * gs, math.inf)
    gz = face_z(eye_x, eye_y) + 0.022
    g_front, g_back = bld.plane((0.0, 0.0, 1.0), gz + 0.002), bld.plane((0.0, 0.0, -1.0), -(gz - 0.002))
    for sgn, side in ((1, "l"), (-1, "r")):
        bld.add(f"{side}_lens", label=ID["eye_g"], material=Material.LENS,
                centre=v3(sgn * eye_x, eye_y, gz), radii=lens_r, planes=(g_front, g_back), active=on,
                colour1=lens_col, colour2=frame_col, param=(glasses == 2).float())
    in_edge = eye_x - lens_r[:, 0] + 0.002
    b_l, b_r = bld.plane((1.0, 0.0, 0.0), in_edge), bld.plane((-1.0, 0.0, 0.0), in_edge)
    bld.add("glasses_bridge", label=ID["eye_g"], material=Material.FRAME,
            centre=v3(0.0, eye_y + 0.008, gz), radii=(math.inf, 0.0028, 0.0028), planes=(b_l, b_r),
            active=on, colour1=frame_col, colour2=frame_col)
    arm_front, arm_back = bld.plane((0.0, 0.0, 1.0), gz), bld.plane((0.0, 0.0, -1.0), -ear_z)
    for sgn, side in ((1, "l"), (-1, "r")):
        x0 = eye_x + lens_r[:, 0] - 0.001
        x1 = ear_x + 0.004
        yaw = torch.atan2(sgn * (x1 - x0), ear_z - gz)
        # the rod's axis passes through (x0, y, gz) and (x1, y, ear_z); centre it at the front end
        bld.add(f"{side}_temple", label=ID["eye_g"], material=Material.FRAME,
                centre=v3(sgn * x0, eye_y + 0.006, gz), radii=(0.0028, 0.0035, math.inf),
                rot=rotation_xyz(zero, yaw, zero), planes=(arm_front, arm_back), active=on,
                colour1=frame_col, colour2=frame_col)

    # --- light and background -------------------------------------------------------------------
    lx = zero if symmetric else r.u(-0.7, 0.7)
    light = unit(torch.stack([lx, r.u(0.15, 0.8), torch.ones(n)], -1))
    bg = torch.cat([_hsv(r.u(0, 1), r.u(0.05, 0.5), r.u(0.25, 0.9)), _hsv(r.u(0, 1), r.u(0.05, 0.5), r.u(0.2, 0.9)),
                    r.cat((0.4, 0.3, 0.3)).float()[:, None]], 1)
    traits = dict(hair_style=hair_style, hat=hat, glasses=glasses, earrings=earrings, necklace=necklace.long(),
                  mouth_open=mouth_open.long(), collar=collar, cloth_pattern=pattern)
    return bld.build(light, bg, symmetric, traits, device)


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
