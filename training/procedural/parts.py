# SPDX-License-Identifier: GPL-3.0-or-later
"""The parts of the procedural heads laid out as primitive slots, from the draws of :mod:`.anatomy`.

:mod:`.anatomy` draws styles, colours and proportions (:class:`Styles`, :class:`Colours`,
:class:`Proportions`); the ``add_*`` functions here place each part on the analytic surface of the
skull/jaw ellipsoids (:meth:`Proportions.face_z`) and add its slots to a :class:`.heads.HeadBuilder`.
Some parts draw a few numbers of their own (left/right jitter, a tint, a hairline) through
:attr:`Layout.r`, in the order written: :func:`.anatomy._build_heads` calls them in a pinned order
(tests/test_procedural_draw_order.py).

Frame and units: model world (ide3d_core.cameras), y up, the face toward +z, subject's left = +x; (B,)
tensors hold one value per head, (B, 3) a point or radii per head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ide3d_core.labels import ID

from .heads import HeadBuilder, Material, deg, rotation_xyz

if TYPE_CHECKING:  # pragma: no cover
    from .anatomy import _Rand


def stack3(b: int, x, y, z) -> torch.Tensor:
    """(B, 3) from per-head (B,) tensors or scalars."""
    f = lambda v: v.float() if torch.is_tensor(v) and v.ndim else torch.full((b,), float(v))  # noqa: E731
    return torch.stack([f(x), f(y), f(z)], -1)


def _surface_z(centre: torch.Tensor, radii: torch.Tensor, x, y) -> torch.Tensor:
    """Front (+z) surface height of an axis-aligned ellipsoid above (x, y), -inf outside its outline."""
    q = 1 - ((x - centre[:, 0]) / radii[:, 0]) ** 2 - ((y - centre[:, 1]) / radii[:, 1]) ** 2
    return torch.where(q > 0, centre[:, 2] + radii[:, 2] * q.clamp_min(0).sqrt(), torch.full_like(q, -1.0))


#: Vertical placement of the head in the frame (model units).
OY = -0.015


class Layout:
    """What the parts of one batch share: the draws, the slot builder and per-head helpers."""

    def __init__(self, r: _Rand, symmetric: bool) -> None:
        self.r, self.n, self.symmetric = r, r.b, symmetric
        self.bld = HeadBuilder(r.b)
        self.zero = torch.zeros(r.b)

    def v3(self, x, y, z) -> torch.Tensor:
        """(B, 3) from per-head (B,) tensors or scalars."""
        return stack3(self.n, x, y, z)

    def full(self, value: float) -> torch.Tensor:
        return torch.full((self.n,), value)

    def side_jitter(self, s: float) -> torch.Tensor:
        """(B,) left/right asymmetry in [-s, s]; zero (and no draw) for symmetric heads."""
        return torch.zeros(self.n) if self.symmetric else self.r.u(-s, s)


@dataclass(frozen=True)
class Styles:
    """(B,) indices into the module's style tuples (``necklace``, ``mouth_open``: bool)."""

    hair_style: torch.Tensor
    hat: torch.Tensor
    glasses: torch.Tensor
    earrings: torch.Tensor
    necklace: torch.Tensor
    mouth_open: torch.Tensor
    collar: torch.Tensor
    pattern: torch.Tensor

    def traits(self) -> dict[str, torch.Tensor]:
        return dict(hair_style=self.hair_style, hat=self.hat, glasses=self.glasses, earrings=self.earrings,
                    necklace=self.necklace.long(), mouth_open=self.mouth_open.long(), collar=self.collar,
                    cloth_pattern=self.pattern)


@dataclass(frozen=True)
class Colours:
    """(B, 3) RGB in [0, 1] of each part (``cloth_param``: (B,) pattern kind + phase)."""

    skin: torch.Tensor
    blush: torch.Tensor
    hair: torch.Tensor
    hair_highlight: torch.Tensor
    brow: torch.Tensor
    iris: torch.Tensor
    sclera: torch.Tensor
    lip: torch.Tensor
    cloth1: torch.Tensor
    cloth2: torch.Tensor
    cloth_param: torch.Tensor
    hat: torch.Tensor
    metal: torch.Tensor
    beads: torch.Tensor
    frame: torch.Tensor
    lens: torch.Tensor

    def skin_slot(self) -> dict:
        return dict(label=ID["skin"], material=Material.SKIN, colour1=self.skin, colour2=self.blush)


@dataclass(frozen=True)
class Proportions:
    """Per-head proportions ((B,) factors near 1, positions in model units) and the skull/jaw ellipsoids
    ((B, 3) centres and radii) on whose front surface the parts are placed."""

    cran_c: torch.Tensor
    cran_r: torch.Tensor
    jaw_c: torch.Tensor
    jaw_r: torch.Tensor
    jaw_w: torch.Tensor
    chin: torch.Tensor
    chin_fwd: torch.Tensor
    cheek: torch.Tensor
    eye_x: torch.Tensor
    eye_y: torch.Tensor
    eye_s: torch.Tensor
    nose_len: torch.Tensor
    nose_w: torch.Tensor
    nose_p: torch.Tensor
    mouth_w: torch.Tensor
    lip_t: torch.Tensor
    gap: torch.Tensor
    brow_t: torch.Tensor
    brow_tilt: torch.Tensor
    brow_dy: torch.Tensor
    ear_s: torch.Tensor
    ear_a: torch.Tensor
    neck_w: torch.Tensor
    shoulder_w: torch.Tensor

    def face_z(self, x, y) -> torch.Tensor:
        """Front surface height of the face (skull or jaw, whichever is further forward) above (x, y)."""
        return torch.maximum(_surface_z(self.cran_c, self.cran_r, x, y), _surface_z(self.jaw_c, self.jaw_r, x, y))

    @property
    def nose_bot(self) -> torch.Tensor:
        return self.eye_y - 0.075 * self.nose_len

    def ears(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x of the left ear (B,), y (B,), z (B,), radii (B, 3)); the right ear is the mirror."""
        radii = stack3(self.ear_s.shape[0], 0.014, 0.045 * self.ear_s, 0.027 * self.ear_s)
        return self.cran_r[:, 0] * 0.96, self.eye_y - 0.03, self.cran_c[:, 2] - 0.012, radii


def add_skull_and_cheeks(layout: Layout, face: Proportions, c: Colours) -> None:
    bld, r, v3, zero = layout.bld, layout.r, layout.v3, layout.zero
    skin_slot = c.skin_slot()
    bld.add("cranium", centre=face.cran_c, radii=face.cran_r, **skin_slot)
    bld.add("jaw", centre=face.jaw_c, radii=face.jaw_r, **skin_slot)
    chin_r = v3(0.046 * face.chin, 0.040 * face.chin, 0.040 * face.chin)
    chin_y = face.jaw_c[:, 1] - face.jaw_r[:, 1] + chin_r[:, 1] + 0.004
    bld.add("chin", centre=v3(0.0, chin_y, face.face_z(zero, chin_y) - chin_r[:, 2] + 0.006
                              + face.chin_fwd.clamp_min(0)),
            radii=chin_r, **skin_slot)
    for sgn, side in ((1, "l"), (-1, "r")):
        cx = sgn * (0.055 * face.jaw_w + layout.side_jitter(0.003))
        cy = -0.03 + OY + layout.side_jitter(0.003)
        # wide, shallow cheek pads sunk into the face: a soft swelling, not a ball
        cr = v3(0.05 * face.cheek, 0.04 * face.cheek, 0.08)
        yaw = layout.full(sgn * deg(30.0))
        bld.add(f"{side}_cheek", centre=v3(cx, cy, face.face_z(cx, cy) - cr[:, 2] + 0.001), radii=cr,
                rot=rotation_xyz(zero, yaw, zero), param=r.u(0.1, 0.45), **skin_slot)


def add_nose(layout: Layout, face: Proportions, c: Colours) -> None:
    """Bridge, tip and wings."""
    bld, v3, zero = layout.bld, layout.v3, layout.zero
    nose_top = face.eye_y + 0.012
    nose_bot = face.nose_bot
    ny = 0.5 * (nose_top + nose_bot)
    bridge_r = v3(0.015 * face.nose_w, 0.5 * (nose_top - nose_bot) + 0.01, 0.02 * face.nose_p)
    nose_slot = dict(label=ID["nose"], material=Material.SKIN, colour1=c.skin, colour2=c.blush)
    bld.add("nose_bridge", centre=v3(0.0, ny, face.face_z(zero, ny) - 0.006),
            radii=bridge_r, rot=rotation_xyz(layout.full(deg(-16.0)), zero, zero), **nose_slot)
    tip_r = 0.019 * face.nose_w
    tip_c = v3(0.0, nose_bot + 0.012, face.face_z(zero, nose_bot) + 0.03 * face.nose_p - tip_r)
    bld.add("nose_tip", centre=tip_c, radii=torch.stack([tip_r] * 3, -1), **nose_slot)
    bld.add("nose_wings", centre=tip_c + v3(0.0, -0.004, -0.014),
            radii=v3(0.031 * face.nose_w, 0.014, 0.016), **nose_slot)


def add_eyes(layout: Layout, face: Proportions, c: Colours) -> None:
    """Eyeballs (with the iris) and upper lids."""
    bld, r, v3, zero = layout.bld, layout.r, layout.v3, layout.zero
    eye_y = face.eye_y
    eye_r = v3(0.025 * face.eye_s, 0.0145 * face.eye_s, 0.016)
    lid_cut = eye_y + r.u(0.004, 0.0075)
    for sgn, side in ((1, "l"), (-1, "r")):
        ex = sgn * (face.eye_x + layout.side_jitter(0.002))
        ez = face.face_z(ex, eye_y) - eye_r[:, 2] + 0.0065
        yaw = layout.full(sgn * deg(12.0))
        bld.add(f"{side}_eye", label=ID[f"{side}_eye"], material=Material.EYE, centre=v3(ex, eye_y, ez),
                radii=eye_r, rot=rotation_xyz(zero, yaw, zero), colour1=c.sclera, colour2=c.iris,
                param=r.u(0.0085, 0.0105) * face.eye_s)
        lid_p = bld.plane((0.0, -1.0, 0.0), -lid_cut)
        bld.add(f"{side}_lid", centre=v3(ex, eye_y + 0.002, ez + 0.0012), radii=eye_r * torch.tensor([1.1, 1.0, 1.06]),
                rot=rotation_xyz(zero, yaw, zero), planes=(lid_p,), **c.skin_slot())


def add_brows(layout: Layout, face: Proportions, c: Colours) -> None:
    zero = layout.zero
    for sgn, side in ((1, "l"), (-1, "r")):
        bx = sgn * (face.eye_x + 0.004 + layout.side_jitter(0.002))
        by = face.eye_y + 0.04 + face.brow_dy + layout.side_jitter(0.002)
        brow_r = layout.v3(0.031, 0.0068 * face.brow_t, 0.010)
        rot = rotation_xyz(zero, layout.full(sgn * deg(18.0)), -sgn * face.brow_tilt * math.pi / 180)
        layout.bld.add(f"{side}_brow", label=ID[f"{side}_brow"], material=Material.BROW,
                   centre=layout.v3(bx, by, face.face_z(bx, by) - 0.005), radii=brow_r, rot=rot,
                   colour1=c.brow, colour2=c.brow * 1.3)


def add_ears(layout: Layout, face: Proportions, c: Colours) -> None:
    ear_x, ear_y, ear_z, ear_r = face.ears()
    for sgn, side in ((1, "l"), (-1, "r")):
        rot = rotation_xyz(layout.full(deg(-8.0)), -sgn * face.ear_a * math.pi / 180, layout.zero)
        layout.bld.add(f"{side}_ear", label=ID[f"{side}_ear"], material=Material.SKIN,
                   centre=layout.v3(sgn * ear_x, ear_y, ear_z), radii=ear_r, rot=rot, colour1=c.skin, colour2=c.blush)


def add_mouth(layout: Layout, face: Proportions, c: Colours) -> None:
    """Lips clipped at the lip line; a dark cavity behind them shows when they part."""
    bld, v3, gap = layout.bld, layout.v3, face.gap
    mouth_y = face.nose_bot - 0.03
    mz = face.face_z(layout.zero, mouth_y)
    up_p = bld.plane((0.0, -1.0, 0.0), -(mouth_y + 0.5 * gap))
    lo_p = bld.plane((0.0, 1.0, 0.0), mouth_y - 0.5 * gap)
    bld.add("upper_lip", label=ID["u_lip"], material=Material.LIP,
            centre=v3(0.0, mouth_y + 0.5 * gap + 0.001, mz - 0.004),
            radii=v3(0.036 * face.mouth_w, 0.0105 * face.lip_t, 0.012), planes=(up_p,), colour1=c.lip,
            colour2=c.skin)
    bld.add("lower_lip", label=ID["l_lip"], material=Material.LIP,
            centre=v3(0.0, mouth_y - 0.5 * gap - 0.003, mz - 0.005),
            radii=v3(0.032 * face.mouth_w, 0.012 * face.lip_t, 0.012), planes=(lo_p,), colour1=c.lip,
            colour2=c.skin)
    bld.add("mouth", label=ID["mouth"], material=Material.MOUTH, centre=v3(0.0, mouth_y, mz - 0.009),
            radii=v3(0.026 * face.mouth_w, 0.5 * gap + 0.005, 0.012),
            colour1=torch.tensor([0.30, 0.06, 0.07]), colour2=torch.tensor([0.93, 0.90, 0.82]))


#: Centre of the neck cylinder (model units).
_NECK_C = (0.0, -0.2, -0.018)


def add_neck_and_clothes(layout: Layout, face: Proportions, c: Colours, styles: Styles) -> None:
    """Neck, torso, shoulders, collar and the necklace (a thin band around the neck, dipping in front)."""
    bld, r, v3, n = layout.bld, layout.r, layout.v3, layout.n
    neck_c = v3(*_NECK_C)
    neck_r = 0.063 * face.neck_w
    n_top, n_bot = bld.plane((0.0, 1.0, 0.0), -0.05), bld.plane((0.0, -1.0, 0.0), 0.42)
    bld.add("neck", label=ID["neck"], material=Material.SKIN, centre=neck_c,
            radii=torch.stack([neck_r, torch.full((n,), math.inf), neck_r * 1.05], -1),
            planes=(n_top, n_bot), colour1=c.skin * 0.93, colour2=c.blush)
    cloth_slot = dict(label=ID["cloth"], material=Material.CLOTH, colour1=c.cloth1, colour2=c.cloth2,
                      param=c.cloth_param)
    box_p = bld.plane((0.0, -1.0, 0.0), 0.5)
    bld.add("torso", centre=v3(0.0, -0.47, -0.03), radii=v3(0.34 * face.shoulder_w, 0.215, 0.16),
            planes=(box_p,), **cloth_slot)
    for sgn, side in ((1, "l"), (-1, "r")):
        bld.add(f"{side}_shoulder", centre=v3(sgn * 0.17 * face.shoulder_w, -0.375, -0.035),
                radii=v3(0.13, 0.085, 0.12), planes=(box_p,), **cloth_slot)
    collar = styles.collar
    collar_top = torch.where(collar == 2, r.u(-0.245, -0.225), r.u(-0.275, -0.26))
    c_top, c_bot = bld.plane((0.0, 1.0, 0.0), collar_top), bld.plane((0.0, -1.0, 0.0), 0.36)
    bld.add("collar", centre=neck_c, radii=torch.stack([neck_r + 0.011, torch.full((n,), math.inf),
                                                      neck_r * 1.05 + 0.011], -1),
            planes=(c_top, c_bot), active=collar > 0, **cloth_slot)
    k = r.u(0.4, 0.9)
    y_front = r.u(-0.245, -0.22)
    band_r = neck_r + 0.005
    h0 = y_front + k * (band_r * 1.05 + neck_c[:, 2])
    nk1 = bld.plane(v3(0.0, 1.0, k), h0 + 0.007)
    nk2 = bld.plane(v3(0.0, -1.0, -k), -h0)
    bld.add("necklace", label=ID["neck_l"], material=Material.BEADS, centre=neck_c,
            radii=torch.stack([band_r, torch.full((n,), math.inf), band_r * 1.05], -1), planes=(nk1, nk2),
            active=styles.necklace & (collar != 2), colour1=c.metal, colour2=c.beads, param=r.u(30.0, 60.0))


def add_earrings(layout: Layout, face: Proportions, c: Colours, styles: Styles) -> None:
    """Rings hanging under the lobes."""
    ear_x, ear_y, ear_z, ear_r = face.ears()
    earrings = styles.earrings
    ring_r = layout.r.u(0.006, 0.010)
    for sgn, side, on in ((1, "l", (earrings == 1) | (earrings == 2)), (-1, "r", (earrings == 1) | (earrings == 3))):
        layout.bld.add(f"{side}_earring", label=ID["ear_r"], material=Material.METAL,
                   centre=layout.v3(sgn * (ear_x + 0.006), ear_y - ear_r[:, 1] - ring_r + 0.003, ear_z + 0.006),
                   radii=torch.stack([ring_r, ring_r * 1.3, ring_r], -1), active=on, colour1=c.metal,
                   colour2=c.metal)


def add_hair(layout: Layout, face: Proportions, c: Colours, styles: Styles) -> tuple[torch.Tensor, torch.Tensor]:
    """Cap (with hairline and nape planes), long back hair and bun; returns the cap's (B, 3) centre and
    radii, which the hat sits on."""
    bld, r, v3, n = layout.bld, layout.r, layout.v3, layout.n
    hair_style, brow_dy = styles.hair_style, face.brow_dy
    hair = dict(label=ID["hair"], material=Material.HAIR, colour1=c.hair, colour2=c.hair_highlight)
    has_hair = hair_style != 0
    thick = r.u(0.008, 0.02)
    cap_c = face.cran_c + v3(0.0, 0.006, -0.006)
    cap_r = face.cran_r + thick[:, None]
    fringe = hair_style == 3
    line_y = torch.where(fringe, r.u(0.072, 0.09) + brow_dy, r.u(0.115, 0.15)) + OY
    slope = torch.where(fringe, r.u(0.2, 0.45), r.u(0.8, 1.4))
    part = layout.side_jitter(0.5) * fringe
    front_n = torch.stack([part, -slope, torch.ones(n)], -1)
    front_z = face.face_z(layout.zero, line_y) + 0.01
    hp_front = bld.plane(front_n, (front_n * v3(0.0, line_y, front_z)).sum(-1))
    nape = torch.where(hair_style == 2, r.u(-0.2, -0.12), r.u(-0.035, 0.02)) + OY
    nape = torch.where(hair_style == 4, nape + 0.03, nape)
    hp_bottom = bld.plane(v3(0.0, -1.0, 0.6), -nape)
    bld.add("hair_cap", centre=cap_c, radii=cap_r, planes=(hp_front, hp_bottom), active=has_hair,
            param=r.u(0, 1), **hair)
    long_len = r.u(0.15, 0.3)
    hb_front = bld.plane((0.0, 0.0, 1.0), r.u(0.0, 0.05))
    hb_bottom = bld.plane((0.0, -1.0, 0.0), torch.full((n,), 0.05) + long_len)
    bld.add("hair_back", centre=v3(0.0, -0.04 + OY, -0.04),
            radii=v3(cap_r[:, 0] + r.u(0.01, 0.035), torch.full((n,), 0.26), cap_r[:, 2] * 0.85),
            planes=(hb_front, hb_bottom), active=(hair_style == 2) | (fringe & r.bern(0.5)), param=r.u(0, 1),
            **hair)
    bun_r = r.u(0.045, 0.065)
    bld.add("bun", centre=v3(0.0, cap_c[:, 1] + cap_r[:, 1] * 0.72, cap_c[:, 2] - cap_r[:, 2] * 0.6),
            radii=torch.stack([bun_r] * 3, -1), active=hair_style == 4, param=r.u(0, 1), **hair)
    return cap_c, cap_r


def add_hat(layout: Layout, cap_c: torch.Tensor, cap_r: torch.Tensor, c: Colours, styles: Styles) -> None:
    """Crown (beanie or brimmed), brim and cap visor, sitting on the hair cap."""
    bld, r, v3, n, zero = layout.bld, layout.r, layout.v3, layout.n, layout.zero
    hat = styles.hat
    hat_slot = dict(label=ID["hat"], material=Material.HAT, colour1=c.hat, colour2=c.hat * 0.7)
    hat_y = torch.where(hat == 1, r.u(0.085, 0.115), r.u(0.105, 0.13)) + OY
    hat_tilt = layout.side_jitter(deg(6.0))
    hat_p = bld.plane(v3(-torch.sin(hat_tilt), -torch.cos(hat_tilt), 0.0), -hat_y)
    bld.add("hat_crown", centre=cap_c + v3(0.0, 0.008, 0.0), radii=cap_r + 0.014 + r.u(0.0, 0.015)[:, None],
            planes=(hat_p,), active=hat > 0, param=(hat == 1).float(), **hat_slot)
    br_top, br_bot = bld.plane((0.0, 1.0, 0.0), hat_y + 0.004), bld.plane((0.0, -1.0, 0.0), -(hat_y - 0.004))
    brim = r.u(0.19, 0.23)
    bld.add("hat_brim", centre=cap_c, radii=torch.stack([brim, torch.full((n,), math.inf), brim * 1.03], -1),
            planes=(br_top, br_bot), active=hat == 2, **hat_slot)
    visor_back = bld.plane((0.0, 0.0, -1.0), -(cap_c[:, 2] + cap_r[:, 2] - 0.03))
    bld.add("hat_visor", centre=v3(0.0, hat_y + 0.004, cap_c[:, 2] + cap_r[:, 2] + 0.02),
            radii=v3(0.11, 0.006, 0.1), rot=rotation_xyz(torch.full((n,), deg(-8.0)), zero, zero),
            planes=(visor_back,), active=hat == 3, **hat_slot)


def add_glasses(layout: Layout, face: Proportions, c: Colours, styles: Styles) -> None:
    """Lenses, bridge and temples reaching back to the ears."""
    bld, v3, zero = layout.bld, layout.v3, layout.zero
    eye_x, eye_y = face.eye_x, face.eye_y
    ear_x, _, ear_z, _ = face.ears()
    on = styles.glasses > 0
    frame = dict(label=ID["eye_g"], material=Material.FRAME, active=on, colour1=c.frame, colour2=c.frame)
    gs = layout.r.u(0.95, 1.15)
    lens_r = v3(0.026 * gs, 0.02 * gs, math.inf)
    gz = face.face_z(eye_x, eye_y) + 0.022
    g_front, g_back = bld.plane((0.0, 0.0, 1.0), gz + 0.002), bld.plane((0.0, 0.0, -1.0), -(gz - 0.002))
    for sgn, side in ((1, "l"), (-1, "r")):
        bld.add(f"{side}_lens", label=ID["eye_g"], material=Material.LENS,
                centre=v3(sgn * eye_x, eye_y, gz), radii=lens_r, planes=(g_front, g_back), active=on,
                colour1=c.lens, colour2=c.frame, param=(styles.glasses == 2).float())
    in_edge = eye_x - lens_r[:, 0] + 0.002
    b_l, b_r = bld.plane((1.0, 0.0, 0.0), in_edge), bld.plane((-1.0, 0.0, 0.0), in_edge)
    bld.add("glasses_bridge", centre=v3(0.0, eye_y + 0.008, gz), radii=(math.inf, 0.0028, 0.0028),
            planes=(b_l, b_r), **frame)
    arm_front, arm_back = bld.plane((0.0, 0.0, 1.0), gz), bld.plane((0.0, 0.0, -1.0), -ear_z)
    for sgn, side in ((1, "l"), (-1, "r")):
        x0 = eye_x + lens_r[:, 0] - 0.001
        x1 = ear_x + 0.004
        yaw = torch.atan2(sgn * (x1 - x0), ear_z - gz)
        # the rod's axis passes through (x0, y, gz) and (x1, y, ear_z); centre it at the front end
        bld.add(f"{side}_temple", centre=v3(sgn * x0, eye_y + 0.006, gz), radii=(0.0028, 0.0035, math.inf),
                rot=rotation_xyz(zero, yaw, zero), planes=(arm_front, arm_back), **frame)
