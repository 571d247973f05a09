# SPDX-License-Identifier: GPL-3.0-or-later
"""Head pose and alignment against ground truth that does not come from the code under test.

* Template points projected through ``ide3d_core.cameras.orbit_camera`` at known yaw/pitch (the
  landmark-free ground truth): the fitted yaw/pitch must match within 5 degrees (with pixel noise too),
  which also pins the sign convention to the camera module.
* A known similarity (rotation, scale, shift) applied to such a projection simulates a photo: the crop must
  undo it (roll, scale) and put the landmarks where the fitted camera projects the template.
* Procedural heads (``training.procedural``) rendered at known cameras, through MediaPipe (slow).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ide3d_core.cameras import CANONICAL_FOCAL, orbit_camera
from ide3d_core.photo.align import align_face, apply_matrix, ffhq_matrix, similarity_fit
from ide3d_core.photo.pose import TEMPLATE_CM, TEMPLATE_INDICES, orbit_from_direction, solve_pose, template_world

pytestmark = pytest.mark.timeout(120)

ANGLES = [(y, p) for y in (-40, -25, -10, 0, 10, 25, 40) for p in (-15, 0, 15)]


def _project(yaw_deg: float, pitch_deg: float, size: int = 512) -> np.ndarray:
    cam = orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg))
    uv, z = cam.project(template_world(), size, size)
    assert (z > 0).all()
    return uv


@pytest.mark.parametrize("yaw,pitch", ANGLES)
def test_pose_from_projected_template(yaw, pitch):
    est = solve_pose(_project(yaw, pitch), 512)
    assert abs(est.yaw - yaw) < 0.1 and abs(est.pitch - pitch) < 0.1 and abs(est.roll) < 0.1
    true_yaw, true_pitch = (math.degrees(a) for a in orbit_camera(math.radians(yaw), math.radians(pitch)).yaw_pitch())
    got_yaw, got_pitch = (math.degrees(a) for a in est.camera.yaw_pitch())
    assert abs(got_yaw - true_yaw) < 0.1 and abs(got_pitch - true_pitch) < 0.1
    assert est.camera.intrinsics[0, 0] == CANONICAL_FOCAL


def test_pose_with_pixel_noise_within_5_degrees():
    rng = np.random.default_rng(0)
    worst = 0.0
    for yaw in range(-40, 41, 10):
        for pitch in (-10, 0, 10):
            uv = _project(yaw, pitch) + rng.normal(0.0, 1.0, (len(TEMPLATE_INDICES), 2))
            est = solve_pose(uv, 512)
            worst = max(worst, abs(est.yaw - yaw), abs(est.pitch - pitch))
    assert worst < 5.0, worst


def test_mirrored_points_mirror_the_yaw():
    """Mirror the image (u -> W - u) and swap left/right landmarks: yaw flips sign, pitch stays."""
    mirror = {33: 263, 263: 33, 133: 362, 362: 133, 105: 334, 334: 105, 61: 291, 291: 61}
    order = {int(i): k for k, i in enumerate(TEMPLATE_INDICES)}
    for yaw, pitch in ((30, 10), (-20, -5)):
        uv = _project(yaw, pitch)
        m = uv.copy()
        for i in TEMPLATE_INDICES:
            m[order[int(i)]] = uv[order[mirror.get(int(i), int(i))]]
        m[:, 0] = 512 - m[:, 0]
        est = solve_pose(m, 512)
        assert abs(est.yaw + yaw) < 0.1 and abs(est.pitch - pitch) < 0.1


def test_template_is_mirror_symmetric():
    for i, (x, y, z) in TEMPLATE_CM.items():
        twins = [j for j, (x2, y2, z2) in TEMPLATE_CM.items() if (x2, y2, z2) == (-x, y, z)]
        assert twins, i


def test_orbit_from_direction_inverts_orbit_camera():
    rng = np.random.default_rng(1)
    for yaw, pitch in rng.uniform([-1.2, -0.6], [1.2, 0.6], (20, 2)):
        cam = orbit_camera(yaw, pitch)
        y2, p2 = orbit_from_direction(cam.forward)
        assert abs(y2 - yaw) < 1e-9 and abs(p2 - pitch) < 1e-9


def _photo_landmarks(yaw: float, pitch: float, angle_deg: float, scale: float, shift) -> tuple[np.ndarray, np.ndarray]:
    """468 landmarks of a 'photo': the template projection at 512 moved by a known similarity."""
    uv = _project(yaw, pitch)
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.concatenate([rot, np.asarray(shift, float)[:, None]], 1)
    lm = np.zeros((468, 3))
    lm[TEMPLATE_INDICES, :2] = apply_matrix(m, uv)
    return lm, m


def test_model_alignment_undoes_a_known_similarity():
    lm, m = _photo_landmarks(25.0, -8.0, angle_deg=20.0, scale=1.7, shift=(300.0, -40.0))
    al = align_face(lm, 256, "model")
    assert abs(al.pose.yaw - 25.0) < 0.1 and abs(al.pose.pitch + 8.0) < 0.1
    # The crop composes with the photo transform to the plain 512 -> 256 scaling.
    total = al.matrix[:, :2] @ m[:, :2]
    assert np.allclose(total, 0.5 * np.eye(2), atol=1e-6)
    want, _ = al.pose.camera.project(template_world(), 256, 256)
    assert np.abs(al.apply(lm[TEMPLATE_INDICES, :2]) - want).max() < 1e-3


def test_ffhq_alignment_of_a_rolled_face_levels_the_eyes():
    from ide3d_core.photo.align import LEFT_EYE_RING, MOUTH_CORNERS, RIGHT_EYE_RING

    lm = np.zeros((468, 3))
    lm[list(RIGHT_EYE_RING), :2] = [100.0, 100.0]
    lm[list(LEFT_EYE_RING), :2] = [160.0, 100.0]
    lm[list(MOUTH_CORNERS), :2] = [[110.0, 160.0], [150.0, 160.0]]
    a = math.radians(30)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lm[:, :2] = lm[:, :2] @ rot.T
    m = ffhq_matrix(lm, 512)
    e_r, e_l = apply_matrix(m, lm[list(RIGHT_EYE_RING), :2]).mean(0), apply_matrix(m, lm[list(LEFT_EYE_RING), :2]).mean(0)
    assert abs(e_r[1] - e_l[1]) < 0.5 and e_l[0] > e_r[0]
    # FFHQ: eye distance = a quarter of the crop for faces whose eye-to-eye term dominates.
    assert abs(np.linalg.norm(e_l - e_r) - 128.0) < 1.0


def test_similarity_fit_recovers_a_transform():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (30, 2))
    a = 0.7
    m = np.array([[2 * math.cos(a), -2 * math.sin(a), 5.0], [2 * math.sin(a), 2 * math.cos(a), -3.0]])
    assert np.allclose(similarity_fit(src, apply_matrix(m, src)), m, atol=1e-9)


@pytest.mark.slow
def test_procedural_heads_through_mediapipe():
    """Procedural heads at known cameras: MediaPipe must find every face, and the estimated yaw follow the
    truth. Their stylised, randomised proportions differ from the human template, so the measured error
    (docs/photo_import.md) is larger than the 5-degree bound met by the landmark-free test above."""
    torch = pytest.importorskip("torch")
    procedural = pytest.importorskip("training.procedural")
    from ide3d_core.photo.detect import detect_faces, mediapipe_available

    if not mediapipe_available():
        pytest.skip("MediaPipe not installed")
    from ide3d_core.cameras import stack_labels

    yaws = (-40.0, -20.0, 0.0, 20.0, 40.0)
    heads = procedural.sample_heads(len(yaws), torch.Generator().manual_seed(0))
    cams = [orbit_camera(math.radians(y), math.radians(5.0)) for y in yaws]
    r = procedural.render_heads(heads, torch.from_numpy(stack_labels(cams)), 192, antialias=1)
    imgs = ((r.image.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    errors = []
    for img, yaw in zip(imgs, yaws):
        faces = detect_faces(img)
        assert faces and faces[0].landmarks is not None, f"no face found at yaw {yaw}"
        est = align_face(faces[0].landmarks, 192).pose
        errors.append(est.yaw - yaw)
        assert math.copysign(1, est.yaw) == math.copysign(1, yaw) or yaw == 0
    assert max(abs(e) for e in errors) < 12.0, errors
