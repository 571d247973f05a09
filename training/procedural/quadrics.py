# SPDX-License-Identifier: GPL-3.0-or-later
"""Clipped quadrics: exact ray intersection and inside tests, batched in torch (pure functions).

A primitive ``p`` of a head is the convex set

    { x : |diag(inv_radii_p) @ rot_p @ (x - centre_p)|^2 <= 1  and  n_k . x <= h_k for its planes k }

``rot_p`` (3, 3) has the primitive's local axes as rows; ``inv_radii_p`` (3,) holds 1 / radius per local
axis, and 0 on an axis makes the quadric an infinite elliptic cylinder along that axis (so ellipsoids,
spheres, discs and rods are all one formula). Each primitive owns up to two half-spaces taken from a flat
per-head plane list (``plane_slots[p] = (i, j)``, index ``L`` meaning "no plane"): the slot layout is the
same for every head, so the whole batch intersects as dense tensors with no Python loop over heads,
rays or primitives.

Why this formulation: all rays of a pinhole camera share one origin ``o``, so with ``A = diag(inv_r) rot``
and ``u = A (o - c)`` the ray ``o + t d`` meets the quadric where ``a t^2 + 2 b t + c = 0`` with

    a = d^T (A^T A) d,   b = d . (A^T u),   b^2 - a c = d^T (A^T A - C^T C) d,   C = [u]_x A.

The discriminant is written as a quadratic form in ``d`` whose matrix is formed once per primitive in
float64: the textbook ``b*b - a*c`` loses all float32 digits for a 1 cm primitive 2.7 units away (both
terms are ~1e11 and differ by ~1e5), this form does not. All per-ray work then is one batched matmul of
nine direction features against the per-primitive coefficients plus a handful of elementwise ops.

Units: model-world units; ray parameters ``t`` are distances along unit directions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices ``[v]_x`` with ``[v]_x w = v x w``."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1),
                        torch.stack([-y, x, z], -1)], -2)


def _direction_features(d: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) unit directions -> (B, N, 9) features ``[dx^2, dy^2, dz^2, 2dxdy, 2dxdz, 2dydz, dx, dy, dz]``
    so that ``features @ [sym(M); g]`` evaluates ``d^T M d + g . d``."""
    x, y, z = d.unbind(-1)
    return torch.stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z, x, y, z], -1)


def _sym_coefficients(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) symmetric matrices -> (..., 6) coefficients matching :func:`_direction_features`."""
    return torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]], -1)


#: Penalty scale for misses, and the distance beyond which a ray counts as a miss (model units).
_BIG = 1e30
_FAR = 1e6


@dataclass(frozen=True)
class RayHits:
    """Nearest hit of every ray over all primitives.

    Attributes:
        t: (B, N) distance along the unit ray to the first surface, ``inf`` where nothing is hit.
        prim: (B, N) int64 index of the primitive hit first (0 where nothing is hit).
        hit: (B, N) bool.
        normal: (B, N, 3) unit outward world normal at the hit (zeros where nothing is hit).
    """

    t: torch.Tensor
    prim: torch.Tensor
    hit: torch.Tensor
    normal: torch.Tensor


def local_matrix(rot: torch.Tensor, inv_radii: torch.Tensor) -> torch.Tensor:
    """``A = diag(inv_radii) @ rot``: (..., 3, 3) world offset -> unit-quadric coordinates."""
    return inv_radii[..., :, None] * rot


def clipped_planes(planes: torch.Tensor, plane_slots: torch.Tensor) -> torch.Tensor:
    """(B, L, 4) plane list + (P, 2) slots -> (B, P, 2, 4) dense planes per primitive slot, with the
    "no plane" slot as ``(0, 0, 0, 1)`` (``0 . x <= 1`` always holds)."""
    none = torch.zeros_like(planes[:, :1])
    none[..., 3] = 1.0
    full = torch.cat([planes, none], 1)
    return full[:, plane_slots]


def intersect(origin: torch.Tensor, dirs: torch.Tensor, centre: torch.Tensor, rot: torch.Tensor,
              inv_radii: torch.Tensor, planes: torch.Tensor, plane_slots: torch.Tensor,
              active: torch.Tensor, n_plain: int = 0) -> RayHits:
    """Nearest entry of each ray into the union of clipped quadrics.

    Args:
        origin: (B, 3) ray origin shared by all rays of image ``b`` (a pinhole centre), outside every
            primitive.
        dirs: (B, N, 3) unit ray directions.
        centre, rot, inv_radii: (B, P, 3), (B, P, 3, 3), (B, P, 3) primitive frames (module docstring).
        planes: (B, L, 4) half-spaces ``(n, h)``: inside where ``n . x <= h``.
        plane_slots: (P, 2) int64 indices into the plane list, ``L`` for "no plane".
        active: (B, P) bool; inactive primitives are never hit.
        n_plain: the first ``n_plain`` primitives have no planes (their slots are ignored), which saves
            the clipping arithmetic for them; any value up to that count is correct.
    Returns:
        :class:`RayHits`. Ties (two surfaces at exactly the same distance) go to the lower primitive
        index.
    """
    b_, n_, _ = dirs.shape
    p_ = centre.shape[1]
    dt = dirs.dtype
    a_mat = local_matrix(rot, inv_radii).double()  # (B, P, 3, 3)
    u = (a_mat @ (origin[:, None, :].double() - centre.double())[..., None])[..., 0]  # (B, P, 3)
    m_a = a_mat.transpose(-1, -2) @ a_mat
    c_mat = _skew(u) @ a_mat
    m_disc = m_a - c_mat.transpose(-1, -2) @ c_mat
    # an inactive primitive gets a negative-definite discriminant: never hit
    m_disc = torch.where(active[..., None, None], m_disc, -torch.eye(3, dtype=m_disc.dtype, device=m_disc.device))
    g = (a_mat.transpose(-1, -2) @ u[..., None])[..., 0]  # (B, P, 3)
    zeros3 = torch.zeros_like(g)
    zeros6 = torch.zeros_like(_sym_coefficients(m_a))
    coef_a = torch.cat([_sym_coefficients(m_a), zeros3], -1)  # (B, P, 9)
    coef_d = torch.cat([_sym_coefficients(m_disc), zeros3], -1)
    coef_b = torch.cat([zeros6, -g], -1)  # the matmul yields -b
    # planes of the clipped primitives, slot 0 of all of them then slot 1: (B, 2C, 4)
    dense = clipped_planes(planes, plane_slots)[:, n_plain:].transpose(1, 2).reshape(b_, -1, 4).double()
    n_clip = p_ - n_plain
    normals, heights = dense[..., :3], dense[..., 3]
    coef_s = torch.cat([torch.zeros_like(normals[..., :1]).expand(-1, -1, 6), normals], -1)
    weights = torch.cat([coef_a, coef_d, coef_b, coef_s], 1).to(dt)  # (B, 3P + 2C, 9)
    r = (heights - (normals * origin[:, None, :].double()).sum(-1)).to(dt)[..., None]  # (B, 2C, 1)

    # Layout (B, K, N): primitives outside, rays inside, so every slice below is a contiguous block and
    # elementwise loops run over long rows (3x faster than (B, N, K) on the CPU, measured).
    out = weights @ _direction_features(dirs).transpose(1, 2)  # (B, 3P + 2C, N)
    qa, qd, nb, s = out[:, :p_], out[:, p_:2 * p_], out[:, 2 * p_:3 * p_], out[:, 3 * p_:]
    # Branch-free on purpose: torch.where and sqrt of negative numbers run ~4-10 ns per element on
    # this CPU (mispredicted branches / slow paths) against ~0.2-1 ns for arithmetic, min and max.
    # A miss (qd < 0) is pushed beyond any real distance by a penalty; no primitive reaches behind the
    # camera (cameras are outside the head box), so no "t > 0" test is needed.
    inv_a = 1.0 / qa.clamp_min(1e-20)
    sq = (qd.clamp_min(0.0) + 1e-30).sqrt()
    miss = qd.clamp_max(0.0) * -_BIG
    t0 = (nb - sq) * inv_a
    t_plain = t0[:, :n_plain] + miss[:, :n_plain]
    # clipped primitives: half-spaces n . (o + t d) <= h  <=>  s t <= r with s = n . d: an entry
    # t >= r / s where s < 0, an exit t <= r / s where s > 0.  s == 0 reads as an exit at +-1e30 r
    # (no bound when r > 0, empty when r < 0), which is what the "no plane" slot (0 . x <= 1) needs.
    q = r / (s + 1e-30)
    neg = (s < 0).to(dt)
    enter = q * neg - (1.0 - neg) * _BIG  # (B, 2C, N)
    leave = q * (1.0 - neg) + neg * _BIG
    t0c = t0[:, n_plain:]
    t1c = (nb[:, n_plain:] + sq[:, n_plain:]) * inv_a[:, n_plain:]
    t_in = torch.maximum(t0c, torch.maximum(enter[:, :n_clip], enter[:, n_clip:]))
    t_out = torch.minimum(t1c, torch.minimum(leave[:, :n_clip], leave[:, n_clip:]))
    t_clip = t_in + miss[:, n_plain:] + (t_in - t_out).clamp_min(0.0) * _BIG
    t_min, prim = torch.cat([t_plain, t_clip], 1).min(1)  # (B, N)
    hit = t_min < _FAR

    # Which constraint made the entry: the quadric (0) or plane slot 0/1 (1, 2).
    ci = (prim - n_plain).clamp_min(0)[:, None, :]  # (B, 1, N)
    e_hit = torch.cat([enter[:, :n_clip].gather(1, ci), enter[:, n_clip:].gather(1, ci)], 1)  # (B, 2, N)
    kinds = torch.cat([t0.gather(1, prim[:, None, :]), e_hit], 1)
    kind = torch.where(prim >= n_plain, kinds.argmax(1), 0)  # (B, N)
    t_safe = torch.where(hit, t_min, torch.zeros_like(t_min))
    x = origin[:, None, :].to(dt) + t_safe[..., None] * dirs
    quad_n = quadric_gradient(x, prim, centre, rot, inv_radii)
    pn = normals.to(dt).reshape(b_, 2, n_clip, 3)  # (B, slot, C, 3)
    idx = ci[:, 0, :, None].expand(-1, -1, 3)  # (B, N, 3)
    plane_n = torch.where((kind == 2)[..., None], pn[:, 1].gather(1, idx), pn[:, 0].gather(1, idx))
    normal = torch.where((kind == 0)[..., None], quad_n, plane_n)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normal = torch.where(hit[..., None], normal, torch.zeros_like(normal))
    return RayHits(t=t_min, prim=torch.where(hit, prim, torch.zeros_like(prim)), hit=hit, normal=normal)


def gather_prim(values: torch.Tensor, prim: torch.Tensor) -> torch.Tensor:
    """Per-ray values of the hit primitive: values (B, P, *F), prim (B, N) -> (B, N, *F)."""
    b_, n_ = prim.shape
    feat = values.shape[2:]
    flat = values.reshape(b_, values.shape[1], -1)
    out = flat.gather(1, prim[..., None].expand(-1, -1, flat.shape[-1]))
    return out.reshape(b_, n_, *feat)


def quadric_gradient(x: torch.Tensor, prim: torch.Tensor, centre: torch.Tensor, rot: torch.Tensor,
                     inv_radii: torch.Tensor) -> torch.Tensor:
    """Unnormalised outward gradient ``A^T A (x - c)`` of primitive ``prim`` at points x (B, N, 3)."""
    a_mat = gather_prim(local_matrix(rot, inv_radii), prim).to(x.dtype)  # (B, N, 3, 3)
    off = x - gather_prim(centre, prim).to(x.dtype)
    xl = (a_mat * off[..., None, :]).sum(-1)  # elementwise: tiny batched matmuls are slow on the CPU
    return (a_mat * xl[..., :, None]).sum(-2)


def signed_distance(x: torch.Tensor, centre: torch.Tensor, rot: torch.Tensor, inv_radii: torch.Tensor,
                    planes: torch.Tensor, plane_slots: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance, **positive inside**, of points to every primitive of one head.

    Args:
        x: (N, 3) model-world points. centre, rot, inv_radii: (P, 3), (P, 3, 3), (P, 3);
        planes: (L, 4); plane_slots: (P, 2); active: (P,).
    Returns:
        (N, P): ``min(quadric, planes)`` where the quadric term is the first-order distance
        ``(1 - |A(x - c)|) / |grad|`` (exact on the surface, the right sign everywhere) and plane terms
        are exact. Inactive primitives give ``-inf``. The zero level set is exactly the primitive's
        surface, which is all marching cubes and vertex labelling need.
    """
    a_mat = local_matrix(rot, inv_radii).to(x.dtype)  # (P, 3, 3)
    xl = torch.einsum("pij,npj->npi", a_mat, x[:, None, :] - centre[None].to(x.dtype))  # (N, P, 3)
    rad = xl.norm(dim=-1).clamp_min(1e-9)
    grad = torch.einsum("pji,npj->npi", a_mat, xl / rad[..., None]).norm(dim=-1).clamp_min(1e-9)
    d = (1.0 - rad) / grad
    n, h = planes[:, :3].to(x.dtype), planes[:, 3].to(x.dtype)
    nn = n.norm(dim=-1)
    pd = (h[None] - x @ n.T) / nn.clamp_min(1e-12)  # (N, L)
    pd = torch.where(nn[None] > 0, pd, torch.full_like(pd, float("inf")))
    pd = torch.cat([pd, torch.full_like(pd[:, :1], float("inf"))], -1)
    d = torch.minimum(d, torch.minimum(pd[:, plane_slots[:, 0]], pd[:, plane_slots[:, 1]]))
    return torch.where(active[None], d, torch.full_like(d, float("-inf")))
