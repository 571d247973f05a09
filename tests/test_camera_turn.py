# SPDX-License-Identifier: GPL-3.0-or-later
"""``turn_labels`` (the pose correction of inversion) against orbit cameras built independently by
``look_at``: turning an orbit camera by (dyaw, dpitch) must give the orbit camera at (yaw + dyaw,
pitch + dpitch), position and orientation; it keeps its aim point and its roll; gradients against finite
differences."""
import math

import numpy as np
import pytest
import torch

from ide3d_core.cameras import CANONICAL_PIVOT, Camera, orbit_labels, turn_labels


def _orbit(yaw_deg, pitch_deg):
    a = np.radians(np.stack([np.atleast_1d(yaw_deg), np.atleast_1d(pitch_deg)], 1).astype(np.float64))
    return torch.from_numpy(orbit_labels(a)).double()


def _turn(labels, dyaw_deg, dpitch_deg):
    t = lambda d: torch.tensor(np.radians(np.atleast_1d(d)), dtype=torch.float64)  # noqa: E731
    return turn_labels(labels, t(dyaw_deg), t(dpitch_deg))


@pytest.mark.parametrize("dyaw,dpitch", [(3, 0), (-8, 0), (0, -4), (0, 6)])
def test_a_pure_turn_from_the_front_is_the_orbit_camera_at_the_new_angle(dyaw, dpitch):
    diff = (_turn(_orbit(0, 0), dyaw, dpitch) - _orbit(dyaw, dpitch)).abs().max()
    assert diff < 1e-6, diff


@pytest.mark.parametrize("yaw,pitch,dyaw,dpitch", [(0, 0, 3, -2), (30, 10, -4, 3), (-60, -20, 12, 8),
                                                   (170, 35, -25, -30), (-35, 15, 6, 0)])
def test_any_turn_lands_on_the_orbit_camera_at_the_new_angles(yaw, pitch, dyaw, dpitch):
    out, truth = _turn(_orbit(yaw, pitch), dyaw, dpitch), _orbit(yaw + dyaw, pitch + dpitch)
    pos = lambda x: x[:, [3, 7, 11]]  # noqa: E731
    assert (pos(out) - pos(truth)).abs().max() < 1e-6  # on the same sphere, at the new angles
    assert (out[:, :12] - truth[:, :12]).abs().max() < 1e-6  # orientation: aim and (zero) roll kept
    assert torch.equal(out[:, 12:], truth[:, 12:])


def test_zero_turn_is_identity_and_the_camera_keeps_its_aim():
    labels = _orbit([0, 25, -40], [0, 5, -10])
    labels[:, 18] = 0.45  # a shifted principal point (intrinsics) must survive
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.allclose(turn_labels(labels, zero, zero), labels, atol=1e-6)  # (float32 labels are orthonormal to ~1e-8)
    out = _turn(labels, [7, -12, 4], [-3, 9, 2])
    assert torch.equal(out[:, 16:], labels[:, 16:])
    pivot = np.array(CANONICAL_PIVOT)
    for row in out.numpy():
        cam = Camera.from_label(row.astype(np.float32))  # still rigid (Camera checks it)
        assert abs(np.linalg.norm(cam.position) - 2.7) < 1e-5
        # the orbit pivot is still on the optical axis: it projects to the principal point
        uv, _ = cam.project(pivot[None], 256, 256)
        assert np.allclose(uv[0], [256 * row[18], 256 * row[21]], atol=1e-2)


def test_a_rolled_camera_keeps_its_roll():
    """A camera rolled about its axis by 10 degrees, turned, equals the turned unrolled camera rolled by 10."""
    base = _orbit(20, 5)
    r = math.radians(10.0)
    roll = torch.tensor([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]],
                        dtype=torch.float64)
    rolled = base.clone()
    c2w = rolled[0, :16].reshape(4, 4)
    c2w[:3, :3] = c2w[:3, :3] @ roll
    rolled[0, :16] = c2w.reshape(16)
    a, b = _turn(rolled, 5, -3)[0, :16].reshape(4, 4), _turn(base, 5, -3)[0, :16].reshape(4, 4)
    assert torch.allclose(a[:3, :3], b[:3, :3] @ roll, atol=1e-6) and torch.allclose(a[:3, 3], b[:3, 3])


def test_gradients_match_finite_differences():
    labels = _orbit([10, -35], [5, -15])
    yaw = torch.tensor([0.03, -0.02], dtype=torch.float64, requires_grad=True)
    pitch = torch.tensor([-0.01, 0.04], dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda y, p: (turn_labels(labels, y, p) * w).sum(), (yaw, pitch))
