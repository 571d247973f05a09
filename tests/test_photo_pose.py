# SPDX-License-Identifier: GPL-3.0-or-later
"""Head pose and alignment against ground truth that does not come from the code under test.

* Template points projected through ``ide3d_core.cameras.orbit_camera`` at known yaw/pitch (the
  landmark-free ground truth), for both domain templates: the fitted yaw/pitch must match within 5 degrees
  (with pixel noise too), which also pins the sign convention to the camera module.
* Rays and triangulation (the template builder's maths) against points projected by ``Camera.project``
  and synthetic ray bundles with known intersections and outliers.
* A known similarity (rotation, scale, shift) applied to such a projection simulates a photo: the crop must
  undo it (roll, scale) and put the landmarks where the fitted camera projects the template.
* Held-out procedural heads (``training.procedural``, seeds not used to build the template) rendered at
  known cameras, through MediaPipe and the procedural template, against measured bounds (slow).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ide3d_core.cameras import CANONICAL_FOCAL, orbit_camera
from ide3d_core.photo.align import align_face, apply_matrix, ffhq_matrix, similarity_fit
from ide3d_core.photo.pose import (DOMAINS, TEMPLATE_CM, TEMPLATE_INDICES, PoseTemplate, landmark_rays, load_template,
                                   orbit_from_direction, pose_template, solve_pose, template_world,
                                   triangulate_rays)

pytestmark = pytest.mark.timeout(120)

ANGLES = [(y, p) for y in (-40, -25, -10, 0, 10, 25, 40) for p in (-15, 0, 15)]


def _project(yaw_deg: float, pitch_deg: float, size: int = 512, world: np.ndarray | None = None) -> np.ndarray:
    cam = orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg))
    uv, z = cam.project(template_world() if world is None else world, size, size)
    assert (z > 0).all()
    return uv


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("yaw,pitch", ANGLES)
def test_pose_from_projected_template(yaw, pitch, domain):
    tpl = pose_template(domain)
    est = solve_pose(_project(yaw, pitch, world=tpl.points), 512, template=tpl)
    assert abs(est.yaw - yaw) < 0.1 and abs(est.pitch - pitch) < 0.1 and abs(est.roll) < 0.1
    true_yaw, true_pitch = (math.degrees(a) for a in orbit_camera(math.radians(yaw), math.radians(pitch)).yaw_pitch())
    got_yaw, got_pitch = (math.degrees(a) for a in est.camera.yaw_pitch())
    assert abs(got_yaw - true_yaw) < 0.1 and abs(got_pitch - true_pitch) < 0.1
    assert est.camera.intrinsics[0, 0] == CANONICAL_FOCAL


@pytest.mark.parametrize("domain", DOMAINS)
def test_pose_with_pixel_noise_within_5_degrees(domain):
    tpl = pose_template(domain)
    rng = np.random.default_rng(0)
    worst = 0.0
    for yaw in range(-40, 41, 10):
        for pitch in (-10, 0, 10):
            uv = _project(yaw, pitch, world=tpl.points) + rng.normal(0.0, 1.0, (len(tpl.indices), 2))
            est = solve_pose(uv, 512, template=tpl)
            worst = max(worst, abs(est.yaw - yaw), abs(est.pitch - pitch))
    assert worst < 5.0, worst


def test_fit_weights_are_honoured():
    """A landmark 60 px off moves a weighted fit that nearly ignores it by well under a degree, but drags
    an equal-weight fit (so the weights really enter the objective)."""
    tpl = pose_template("procedural")
    uv = _project(30.0, -8.0, world=tpl.points)
    uv[0] += (60.0, -40.0)
    w = np.ones(len(tpl.indices))
    w[0] = 1e-6
    light = solve_pose(uv, 512, template=PoseTemplate("t", tpl.indices, tpl.points, w))
    equal = solve_pose(uv, 512, template=PoseTemplate("t", tpl.indices, tpl.points, np.ones(len(w))))
    assert abs(light.yaw - 30.0) < 0.05 and abs(light.pitch + 8.0) < 0.05, (light.yaw, light.pitch)
    assert max(abs(equal.yaw - 30.0), abs(equal.pitch + 8.0)) > 0.2, (equal.yaw, equal.pitch)


def test_unknown_domain_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown domain 'cartoon'"):
        pose_template("cartoon")
    lm = np.zeros((468, 3))
    lm[TEMPLATE_INDICES, :2] = _project(0.0, 0.0)
    with pytest.raises(ValueError, match="unknown domain"):
        align_face(lm, 256, domain="cartoon")


def test_procedural_template_file_is_plausible_and_strict(tmp_path):
    """The shipped asset: enough landmarks, inside the head box, in front of the orbit centre, roughly
    mirror-symmetric (it is built from renders and their mirror images) and with the facial layout of the
    procedural heads (nose tip in front of the eye corners, eyes above the mouth above the chin)."""
    import json

    from ide3d_core.photo.pose import TEMPLATE_DIR

    tpl = pose_template("procedural")
    assert tpl.domain == "procedural" and len(tpl.indices) >= 60
    assert (np.abs(tpl.points) < 0.5).all() and np.isclose(tpl.weights.mean(), 1.0, atol=1e-2)
    mirrored = tpl.points * np.array([-1.0, 1.0, 1.0])
    gaps = np.min(np.linalg.norm(mirrored[:, None] - tpl.points[None], axis=-1), axis=1)
    assert np.median(gaps) < 0.003, np.median(gaps)
    at = {int(i): p for i, p in zip(tpl.indices, tpl.points)}
    if {1, 33, 263} <= at.keys():
        assert at[1][2] > max(at[33][2], at[263][2]) + 0.02
        assert at[263][0] > 0.0 > at[33][0]  # MediaPipe's 263 is the subject's left eye: +x
    data = json.loads((TEMPLATE_DIR / "procedural.json").read_text())
    data["extra"] = 1
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="keys"):
        load_template(tmp_path / "t.json")
    with pytest.raises(ValueError, match="unique"):
        PoseTemplate("x", np.zeros(6, int), np.zeros((6, 3)), np.ones(6))


def test_landmark_rays_pass_through_projected_points():
    rng = np.random.default_rng(4)
    pts = rng.uniform(-0.3, 0.3, (50, 3))
    cam = orbit_camera(math.radians(-33.0), math.radians(12.0))
    uv, _ = cam.project(pts, 320, 240)
    origin, dirs = landmark_rays(cam, uv, 320, 240)
    rel = pts - origin
    perp = rel - (rel * dirs).sum(-1, keepdims=True) * dirs
    assert np.abs(perp).max() < 1e-9 and np.allclose(np.linalg.norm(dirs, axis=-1), 1.0)


def test_triangulate_rays_recovers_known_points_despite_outliers():
    rng = np.random.default_rng(5)
    truth = rng.uniform(-0.2, 0.2, (6, 3))
    m = 60
    yaw, pitch = rng.uniform(-0.8, 0.8, m), rng.uniform(-0.3, 0.3, m)
    origins = 2.7 * np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], -1)
    d = truth[None] - origins[:, None]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    noisy = d + rng.normal(0.0, 1e-3, d.shape)                       # ~1 mrad: ~1 px at 512 px
    bad = rng.random((m, 6)) < 0.1
    noisy[bad] += rng.normal(0.0, 0.05, (int(bad.sum()), 3))          # 10 % wild detections
    noisy /= np.linalg.norm(noisy, axis=-1, keepdims=True)
    valid = rng.random((m, 6)) > 0.1
    valid[:, 5] = False
    valid[:1, 5] = True                                               # one ray: not enough
    pts, spread = triangulate_rays(origins, noisy, valid)
    assert np.linalg.norm(pts[:5] - truth[:5], axis=-1).max() < 2e-3
    assert np.isnan(pts[5]).all() and np.isnan(spread[5])
    assert (spread[:5] > 0.5e-3).all() and (spread[:5] < 3e-3).all(), spread


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


#: Heads seed of the procedural test: NOT the builder's (scripts/build_pose_template.py, 20261125).
HELD_OUT_SEED = 3


@pytest.mark.slow
def test_procedural_heads_through_mediapipe(tmp_path):
    """Held-out procedural heads rendered at known orbit cameras (yaw -40..40, pitch -10..10) and their
    mirror images (the mirrored camera's pose is the truth), through MediaPipe and the pipeline's
    model-framing alignment.

    Bounds are those measured on held-out detections (docs/photo_import.md, Accuracy: max yaw error 8.6,
    pitch mean error -0.4 against -5.0 with the human template, 82 % of pitch errors within 5 degrees),
    with margin. The issue's 5-degree bound on every image is NOT met for pitch: MediaPipe's landmarks on
    these stylised heads move much less than the geometry predicts when the camera pitches, and the heads'
    proportions vary (see the docs). One render also goes through ``ide3d prepare --domain procedural``."""
    torch = pytest.importorskip("torch")
    procedural = pytest.importorskip("training.procedural")
    from ide3d_core.photo.detect import detect_faces, mediapipe_available

    if not mediapipe_available():
        pytest.skip("MediaPipe not installed")
    import json

    from PIL import Image

    from ide3d_core.cameras import stack_labels
    from ide3d_core.cli import main

    res = 128
    yaws = np.arange(-40.0, 41.0, 10.0)
    pitches = np.resize([-10.0, 0.0, 10.0, 5.0, -5.0], len(yaws))
    heads = procedural.sample_heads(len(yaws), torch.Generator().manual_seed(HELD_OUT_SEED))
    cams = [orbit_camera(math.radians(y), math.radians(p)) for y, p in zip(yaws, pitches)]
    r = procedural.render_heads(heads, torch.from_numpy(stack_labels(cams)), res, antialias=1)
    imgs = ((r.image.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    errors = {"procedural": [], "human": []}
    for img, yaw, pitch in zip(imgs, yaws, pitches):
        for sign, view in ((1.0, img), (-1.0, img[:, ::-1].copy())):
            faces = detect_faces(view)
            assert faces and faces[0].landmarks is not None, f"no face found at yaw {sign * yaw}"
            for domain, errs in errors.items():
                est = align_face(faces[0].landmarks, res, domain=domain).pose
                errs.append((est.yaw - sign * yaw, est.pitch - pitch))
    err = np.array(errors["procedural"])
    human = np.array(errors["human"])
    report = np.round(err, 1).tolist()
    print("procedural-template errors (yaw, pitch):", report)
    assert np.abs(err[:, 0]).max() < 12.0 and np.abs(err[:, 0]).mean() < 4.0, report
    assert abs(err[:, 1].mean()) < 3.0 and np.abs(err[:, 1]).mean() < 6.0, report
    assert (np.abs(err[:, 1]) < 5.0).mean() >= 0.5, report
    assert abs(err[:, 1].mean()) < abs(human[:, 1].mean()), (err[:, 1].mean(), human[:, 1].mean())

    Image.fromarray(imgs[-1]).save(tmp_path / "head.png")
    assert main(["prepare", str(tmp_path / "head.png"), "--out", str(tmp_path / "out"), "--size", "128",
                 "--domain", "procedural"]) == 0
    info = json.loads((tmp_path / "out" / "camera.json").read_text())
    assert abs(info["yaw_degrees"] - yaws[-1]) < 12.0, info
