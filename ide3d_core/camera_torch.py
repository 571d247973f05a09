# SPDX-License-Identifier: GPL-3.0-or-later
"""The batched torch side of the camera convention of :mod:`ide3d_core.cameras` (frames, the 25-float
label, pixel centres: all defined there): rays through pixel centres for a batch of labels
(:func:`rays_from_labels`), the cameras' centres (:func:`camera_positions`), points projected into a
batch of cameras (:func:`project_points`) and cameras moved along their orbit about the head
(:func:`turn_labels`, the differentiable pose correction of inversion). Re-exported by :mod:`ide3d_core.cameras`.
"""
from __future__ import annotations

import torch

from ide3d_core.cameras import CANONICAL_PIVOT, LABEL_DIM


def rays_from_labels(labels: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres for a batch of cameras, in torch (any device and float dtype).

    Args:
        labels: (B, 25) packed camera labels.
        height, width: image size in pixels.
    Returns:
        origins: (B, height*width, 3) model world.
        directions: (B, height*width, 3) unit vectors, model world; pixels in row-major order
        (row 0 at the top).
    """
    if labels.ndim != 2 or labels.shape[1] != LABEL_DIM:
        raise ValueError(f"labels must be (B, {LABEL_DIM}), got {tuple(labels.shape)}")
    b = labels.shape[0]
    c2w = labels[:, :16].reshape(b, 4, 4)
    k = labels[:, 16:].reshape(b, 3, 3)
    dev, dt = labels.device, labels.dtype
    u = (torch.arange(width, device=dev, dtype=dt) + 0.5) / width
    v = (torch.arange(height, device=dev, dtype=dt) + 0.5) / height
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # (H, W)
    uu, vv = uu.reshape(1, -1), vv.reshape(1, -1)
    x = (uu - k[:, 0, 2:3]) / k[:, 0, 0:1]
    y = (vv - k[:, 1, 2:3]) / k[:, 1, 1:2]
    d = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (B, HW, 3)
    d = d / d.norm(dim=-1, keepdim=True)
    dirs = d @ c2w[:, :3, :3].transpose(1, 2)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].expand(b, height * width, 3)
    return origins, dirs


def camera_positions(labels: torch.Tensor) -> torch.Tensor:
    """``labels (B, 25)`` packed camera labels -> ``(B, 3)`` the cameras' centres (model world)."""
    if labels.ndim != 2 or labels.shape[1] != LABEL_DIM:
        raise ValueError(f"labels must be (B, {LABEL_DIM}), got {tuple(labels.shape)}")
    return labels[:, :16].reshape(-1, 4, 4)[:, :3, 3]


def project_points(labels: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-world points projected into a batch of cameras (the torch twin of
    :meth:`ide3d_core.cameras.Camera.project`, in image fractions instead of pixels).

    Args:
        labels: (B, 25) packed camera labels.
        points: (B, N, 3) model-world points.
    Returns:
        uv: (B, N, 2) image fractions, x to the right and y down: pixel ``(u * W, v * H)`` of a
        ``W`` x ``H`` image, pixel centres at ``(i + 0.5) / W`` (so ``2 uv - 1`` is
        :func:`torch.nn.functional.grid_sample`'s grid with ``align_corners=False``).
        z: (B, N) camera-space depth along the optical axis (positive in front of the camera). Points with
        ``z <= 0`` get meaningless ``uv``.
    """
    if labels.ndim != 2 or labels.shape[1] != LABEL_DIM:
        raise ValueError(f"labels must be (B, {LABEL_DIM}), got {tuple(labels.shape)}")
    if points.ndim != 3 or points.shape[0] != labels.shape[0] or points.shape[2] != 3:
        raise ValueError(f"points must be (B, N, 3) with B = {labels.shape[0]}, got {tuple(points.shape)}")
    b = labels.shape[0]
    c2w = labels[:, :16].reshape(b, 4, 4).to(points.dtype)
    k = labels[:, 16:].reshape(b, 3, 3).to(points.dtype)
    rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
    pc = (points - pos[:, None]) @ rot  # rigid inverse: R^T (p - t), rows as row vectors
    z = pc[..., 2]
    zs = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    u = k[:, 0:1, 0] * pc[..., 0] / zs + k[:, 0:1, 2]  # no skew, as rays_from_labels
    v = k[:, 1:2, 1] * pc[..., 1] / zs + k[:, 1:2, 2]
    return torch.stack([u, v], dim=-1), z


def turn_labels(labels: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Cameras moved along their orbit about the *world origin* (the head box's centre), still aiming at the
    same point with the same roll; differentiable in the angles. This is how an orbit pose error looks: the
    camera of :func:`orbit_camera` at ``(yaw + dyaw, pitch + dpitch)`` is exactly the one at ``(yaw, pitch)``
    turned by ``(dyaw, dpitch)``.

    Args:
        labels: (B, 25) packed labels.
        yaw: (B,) radians about the world ``+y`` axis; positive moves a camera toward ``+x``, as a
            positive :func:`orbit_camera` yaw does.
        pitch: (B,) radians up along the camera's meridian (about ``up x position``, taken as given, not
            differentiated); positive moves the camera up, as a positive orbit pitch does.
    Returns:
        (B, 25) labels, intrinsics unchanged: the position turned by ``rot(+y, yaw) @ rot(up x position,
        -pitch)``; the orientation that looks from there at the aim point (the point of the original axis
        nearest ``CANONICAL_PIVOT``: the pivot itself for orbit cameras) with world ``+y`` up, rolled about
        its axis by the original camera's roll. Undefined for a camera looking straight up or down.
    """
    if labels.ndim != 2 or labels.shape[1] != LABEL_DIM:
        raise ValueError(f"labels must be (B, {LABEL_DIM}), got {tuple(labels.shape)}")
    b, dt, dev = labels.shape[0], labels.dtype, labels.device
    c2w = labels[:, :16].reshape(b, 4, 4)
    rot0, pos0 = c2w[:, :3, :3].detach(), c2w[:, :3, 3]
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dt, device=dev).expand(b, 3)
    axis = torch.cross(up, pos0.detach(), dim=-1)
    norm = axis.norm(dim=-1, keepdim=True)
    axis = torch.where(norm > 1e-6, axis / norm.clamp_min(1e-12), rot0[:, :, 0])
    pos = _rotate(_rotate(pos0, axis, -pitch.to(dt)), up, yaw.to(dt))
    fwd0 = rot0[:, :, 2]
    pivot = torch.tensor(CANONICAL_PIVOT, dtype=dt, device=dev)
    aim = pos0 + ((pivot - pos0) * fwd0).sum(-1, keepdim=True) * fwd0
    right0, down0 = _level_frame(fwd0, up)
    roll = torch.atan2((rot0[:, :, 0] * down0).sum(-1), (rot0[:, :, 0] * right0).sum(-1))
    fwd = aim - pos
    fwd = fwd / fwd.norm(dim=-1, keepdim=True)
    right, down = _level_frame(fwd, up)
    c, s = torch.cos(roll)[:, None], torch.sin(roll)[:, None]
    rot = torch.stack([c * right + s * down, c * down - s * right, fwd], -1)
    top = torch.cat([rot, pos[..., None]], 2)
    return torch.cat([top.reshape(b, 12), c2w[:, 3].reshape(b, 4), labels[:, 16:]], 1)


def _level_frame(fwd: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3) unit forward axes -> the OpenCV right and down axes of an unrolled camera (world ``up``)."""
    right = torch.cross(fwd, up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return right, torch.cross(fwd, right, dim=-1)


def _rotate(v: torch.Tensor, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(B, 3) vectors turned right-handedly about (B, 3) unit axes by (B,) radians (Rodrigues' formula)."""
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    return v * c + torch.cross(axis, v, dim=-1) * s + axis * (axis * v).sum(-1, keepdim=True) * (1.0 - c)
