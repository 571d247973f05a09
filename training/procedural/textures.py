# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural surface texture and lighting of the heads: pure functions of the 3D hit point.

Everything here is evaluated per ray on dense (B, N) tensors (every material's formula is computed and
the right one selected with ``where``): no boolean indexing, so no host synchronisation on a GPU.
Textures are functions of the *world* point (and of the primitive's local frame), never of the pixel,
so a surface point has the same colour in every view. For symmetric heads the world x is replaced by
|x| and local formulas are even in the local x, so mirrored views are exact mirror images.
"""
from __future__ import annotations

import math

import torch

from .heads import Material

_TWO_PI = 2.0 * math.pi
#: The renderer evaluates the shared noises at ``direction * BACKGROUND_NOISE_SCALE`` on background
#: rays, so the background blotches have the frequency of ``value_noise(direction * 6)``.
BACKGROUND_NOISE_SCALE = 6.0 / 45.0


_PRIMES = (73856093, 19349663, 83492791)


def _mix01(h: torch.Tensor) -> torch.Tensor:
    """int64 lattice hash -> pseudo-random float in [0, 1) (xor-shift-multiply finaliser)."""
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).to(torch.float32) * (1.0 / 65536.0)


def _smooth_cell(p: torch.Tensor, axis: int):
    f = torch.floor(p[..., axis])
    w = p[..., axis] - f
    h = f.to(torch.int64) * _PRIMES[axis]
    return h, h + _PRIMES[axis], w * w * (3.0 - 2.0 * w)


def value_noise(p: torch.Tensor) -> torch.Tensor:
    """Smooth 3D value noise in [0, 1): (..., 3) float -> (...,). Trilinear with smoothstep weights
    over a hashed integer lattice (pure integer arithmetic, identical on CPU and CUDA)."""
    x0, x1, wx = _smooth_cell(p, 0)
    y0, y1, wy = _smooth_cell(p, 1)
    z0, z1, wz = _smooth_cell(p, 2)
    a0, a1 = y0 ^ z0, y1 ^ z0
    b0, b1 = y0 ^ z1, y1 ^ z1
    def row(c: torch.Tensor) -> torch.Tensor:
        return torch.lerp(_mix01(x0 ^ c), _mix01(x1 ^ c), wx)

    lo = torch.lerp(row(a0), row(a1), wy)
    hi = torch.lerp(row(b0), row(b1), wy)
    return torch.lerp(lo, hi, wz)


def value_noise2(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Smooth 2D value noise in [0, 1) of two (...,) coordinate tensors (bilinear, smoothstep)."""
    x0, x1, wx = _smooth_cell(u[..., None], 0)
    y0, y1, wy = _smooth_cell(v[..., None], 0)
    y0, y1 = y0 * 31 + 7, y1 * 31 + 7
    lo = torch.lerp(_mix01(x0 ^ y0), _mix01(x1 ^ y0), wx)
    return torch.lerp(lo, torch.lerp(_mix01(x0 ^ y1), _mix01(x1 ^ y1), wx), wy)


def albedo(material: torch.Tensor, p: torch.Tensor, xm: torch.Tensor, xu: torch.Tensor, colour1: torch.Tensor,
           colour2: torch.Tensor, param: torch.Tensor, n_mid: torch.Tensor, n_fine: torch.Tensor) -> torch.Tensor:
    """Surface colour before lighting.

    Args:
        material: (B, N) int64 :class:`Material` of the primitive hit.
        p: (B, N, 3) texture-space world point (x already folded to |x| for symmetric heads).
        xm: (B, N, 3) point in the primitive's local frame, metric (``rot @ (x - centre)``).
        xu: (B, N, 3) point in the primitive's unit-quadric frame (``diag(inv_radii) @ xm``).
        colour1, colour2: (B, N, 3); param: (B, N) per-material parameter (see anatomy).
        n_mid, n_fine: (B, N) ``value_noise(p * 45)`` and ``value_noise(p * 170 + 17)``, shared with the
            background (computed once per ray by the renderer).
    Returns:
        (B, N, 3) RGB in [0, 1].
    """
    # hair strands: 2D noise across the strands (x, z), stretched along y by the slow n_mid
    n_strand = value_noise2(p[..., 0] * 260.0 + 5.0, p[..., 2] * 260.0 + 9.0 * n_mid)
    n_strand2 = value_noise2(p[..., 0] * 700.0 + 11.0, p[..., 2] * 700.0 + 3.0 * n_mid)
    c1, c2 = colour1, colour2
    rho = xm[..., :2].norm(dim=-1)
    mat = material[..., None]
    out = torch.zeros_like(c1)

    def put(m: Material, value: torch.Tensor) -> None:
        nonlocal out
        out = torch.where(mat == int(m), value, out)

    # skin: mottling + pores, blush towards colour2 near the centre of cheek primitives (param > 0)
    blush = (param * torch.exp(-2.0 * (xu * xu).sum(-1)))[..., None]
    skin = c1 * (0.93 + 0.10 * n_mid + 0.05 * (n_fine - 0.5))[..., None]
    put(Material.SKIN, torch.lerp(skin, c2, 0.6 * blush))
    # eye: sclera, iris with radial streaks and a dark limbal ring, pupil (local +z looks forward)
    iris_r = param
    front = xm[..., 2] > 0
    theta = torch.atan2(xm[..., 1], xm[..., 0])
    streak = 0.75 + 0.25 * torch.cos(24.0 * theta) * (0.5 + n_fine)
    iris = c2 * (streak * torch.where(rho > 0.82 * iris_r, 0.55, 1.0))[..., None]
    pupil = torch.full_like(c1, 0.03)
    sclera = c1 * (1.0 - 0.18 * (xu[..., 0] ** 2))[..., None]
    eye = torch.where((front & (rho < 0.42 * iris_r))[..., None], pupil,
                      torch.where((front & (rho < iris_r))[..., None], iris, sclera))
    put(Material.EYE, eye)
    # brow and hair: strands running along y, highlights towards colour2
    strands = (n_strand * 0.7 + n_strand2 * 0.3)
    hair = torch.lerp(c1, c2, (strands ** 2)[..., None]) * (0.65 + 0.5 * n_strand2)[..., None]
    put(Material.HAIR, hair)
    put(Material.BROW, c1 * (0.6 + 0.6 * n_strand2)[..., None])
    # lips: vertical creases
    crease = 1.0 - 0.12 * torch.cos(p[..., 0] * 900.0).abs()
    put(Material.LIP, c1 * ((0.9 + 0.15 * n_mid) * crease)[..., None])
    # mouth: teeth in the upper part, dark inside
    teeth = (xu[..., 1] > 0.15) & (xu[..., 0].abs() < 0.75)
    inside = c1 * (0.7 + 0.5 * n_mid)[..., None]
    put(Material.MOUTH, torch.where(teeth[..., None], c2 * (0.9 + 0.1 * n_fine)[..., None], inside))
    # cloth: pattern kind = floor(param), frequency from frac(param); all patterns even in x
    kind = torch.floor(param)
    freq = 35.0 + 70.0 * (param - kind)
    stripes = torch.sin(p[..., 1] * freq) > 0.2
    checks = torch.cos(p[..., 0] * freq) * torch.sin(p[..., 1] * freq) > 0
    cx = torch.frac(p[..., 0] * freq / _TWO_PI + 0.5) - 0.5
    cy = torch.frac(p[..., 1] * freq / _TWO_PI + 0.5) - 0.5
    dots = cx * cx + cy * cy < 0.07
    use2 = torch.where(kind == 1, stripes, torch.where(kind == 2, checks, torch.where(kind == 3, dots, False)))
    weave = (0.9 + 0.08 * n_fine + 0.06 * (n_mid - 0.5))[..., None]
    put(Material.CLOTH, torch.where(use2[..., None], c2, c1) * weave)
    # hat: knitted ribs (beanie, param 1) or felt
    ribs = 0.8 + 0.2 * torch.cos(torch.atan2(p[..., 0], p[..., 2]) * 60.0).abs()
    felt = 0.9 + 0.12 * n_mid
    put(Material.HAT, c1 * torch.where(param > 0.5, ribs * (0.9 + 0.1 * n_fine), felt)[..., None])
    # lens: a frame rim (colour2) and a tinted glass with a vertical sheen
    rim = xu[..., :2].norm(dim=-1) > 0.84
    glass = c1 * (0.85 + 0.25 * (0.5 - 0.5 * xu[..., 1]))[..., None]
    put(Material.LENS, torch.where(rim[..., None], c2, glass))
    put(Material.FRAME, c1)
    put(Material.METAL, c1 * (0.75 + 0.4 * n_mid)[..., None])
    # necklace: alternating beads around the neck
    phase = torch.frac(torch.atan2(p[..., 0], p[..., 2]) * param / _TWO_PI)
    bead = (phase - 0.5).abs() < 0.25
    put(Material.BEADS, torch.where(bead[..., None], c1, c2) * (0.8 + 0.3 * n_mid)[..., None])
    return out.clamp(0.0, 1.0)


def background(dirs: torch.Tensor, params: torch.Tensor, n_mid: torch.Tensor, n_fine: torch.Tensor) -> torch.Tensor:
    """Background colour (label 0) as a function of the ray direction, like an environment at infinity.

    Args:
        dirs: (B, N, 3) unit world directions (x folded to |x| for symmetric heads). params: (B, 7)
        colour1, colour2, kind (0 blotches, 1 vertical stripes, 2 gradient). n_mid, n_fine: (B, N) noise
        of the direction (see :data:`BACKGROUND_NOISE_SCALE`).
    Returns:
        (B, N, 3) RGB in [0, 1].
    """
    d = dirs
    c1, c2, kind = params[:, None, 0:3], params[:, None, 3:6], params[:, None, 6]
    blotch = n_mid
    stripes = 0.5 + 0.5 * torch.tanh(6.0 * torch.sin(d[..., 0] * 50.0))
    grad = (0.5 + 2.5 * d[..., 1]).clamp(0.0, 1.0)
    t = torch.where(kind == 0, blotch, torch.where(kind == 1, stripes, grad))
    grain = 0.94 + 0.12 * n_fine
    return (torch.lerp(c1, c2, t[..., None]) * grain[..., None]).clamp(0.0, 1.0)


def shade(albedo_rgb: torch.Tensor, normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Lambert key light + a weak mirrored fill + sky ambient, all fixed in the world.

    Args:
        albedo_rgb: (B, N, 3); normal: (B, N, 3) unit world normals; light: (B, 3) unit key direction
        (towards the light). Returns (B, N, 3) in [0, 1].
    """
    key = (normal * light[:, None, :]).sum(-1).clamp_min(0.0)
    fill_dir = torch.stack([-light[:, 0], torch.zeros_like(light[:, 0]), light[:, 2]], -1)  # mirrored, level
    fill_dir = fill_dir / fill_dir.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    fill = (normal * fill_dir[:, None, :]).sum(-1).clamp_min(0.0)
    sky = 0.5 + 0.5 * normal[..., 1]
    light_amount = 0.30 + 0.62 * key + 0.18 * fill + 0.12 * sky
    return (albedo_rgb * light_amount[..., None]).clamp(0.0, 1.0)
