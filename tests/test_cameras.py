# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera convention against analytic answers (similar triangles, explicit rotations), round trips and
mirror symmetry. Blender's own projection is the truth in tests/test_blender_cameras.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C


def test_canonical_camera_matches_ffhq_front_label():
    cam = C.canonical_camera()
    # FFHQ/EG3D front label: camera at (0, 0, 2.7) looking at the pivot, OpenCV axes: x right (= +x world),
    # y down (= -y world), z forward (= -z world).
    np.testing.assert_allclose(cam.position, [0, 0, 2.7], atol=1e-12)
    np.testing.assert_allclose(cam.cam2world[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(cam.intrinsics, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])
    assert C.focal_to_fov(C.CANONICAL_FOCAL) == pytest.approx(13.37, abs=0.01)


def test_point_on_optical_axis_lands_on_image_centre():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cam = C.orbit_camera(rng.uniform(-1, 1), rng.uniform(-0.5, 0.5))
        p = cam.position + 1.7 * cam.forward
        uv, z = cam.project(p, 640, 480)
        np.testing.assert_allclose(uv, [320, 240], atol=1e-9)
        assert z == pytest.approx(1.7)


def test_projection_follows_similar_triangles():
    # Front camera at z = 2.7 looking down -z: a point at height h above the axis at distance d lands
    # f * h / d (normalised) above the centre: image y points down, world y up.
    cam = C.canonical_camera()
    w = h = 512
    d, dx, dy = 2.0, 0.1, 0.05
    p = np.array([dx, dy, 2.7 - d])
    uv, z = cam.project(p, w, h)
    f = C.CANONICAL_FOCAL
    assert z == pytest.approx(d)
    assert uv[0] == pytest.approx(w * (0.5 + f * dx / d))
    assert uv[1] == pytest.approx(h * (0.5 - f * dy / d))


def test_rays_go_through_pixel_centres():
    cam = C.orbit_camera(0.3, -0.1)
    w, h = 7, 5
    o, d = cam.rays(w, h)
    pts = o + 2.0 * d
    uv, _ = cam.project(pts, w, h)
    jj, ii = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(uv[..., 0], ii + 0.5, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], jj + 0.5, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0)


def test_torch_rays_match_numpy_rays():
    cams = [C.orbit_camera(0.4, 0.2), C.orbit_camera(-0.7, -0.1, focal=3.0)]
    labels = torch.from_numpy(C.stack_labels(cams)).double()
    o, d = C.rays_from_labels(labels, 6, 9)
    for b, cam in enumerate(cams):
        on, dn = cam.rays(9, 6)
        np.testing.assert_allclose(o[b].numpy(), on.reshape(-1, 3), atol=1e-6)
        np.testing.assert_allclose(d[b].numpy(), dn.reshape(-1, 3), atol=1e-6)


def test_label_pack_unpack_round_trip():
    cam = C.orbit_camera(0.25, 0.1, focal=5.0)
    lab = cam.label()
    assert lab.shape == (25,) and lab.dtype == np.float32
    back = C.Camera.from_label(lab)
    np.testing.assert_allclose(back.cam2world, cam.cam2world, atol=1e-6)
    np.testing.assert_allclose(back.intrinsics, cam.intrinsics, atol=1e-6)
    with pytest.raises(ValueError):
        C.unpack_label(np.zeros(24))


def test_orbit_yaw_pitch_signs_and_inverse():
    cam = C.orbit_camera(math.radians(30), math.radians(10))
    p = cam.position
    assert p[0] > 0 and p[1] > 0  # positive yaw -> +x (subject's left), positive pitch -> above
    assert np.linalg.norm(p) == pytest.approx(2.7)
    yaw, pitch = cam.yaw_pitch()
    assert math.degrees(yaw) == pytest.approx(30)
    assert math.degrees(pitch) == pytest.approx(10)
    # The pivot projects to the image centre.
    uv, _ = cam.project(np.array(C.CANONICAL_PIVOT), 100, 100)
    np.testing.assert_allclose(uv, [50, 50], atol=1e-9)
    # Up in the world stays up in the image.
    up_uv, _ = cam.project(np.array(C.CANONICAL_PIVOT) + [0, 0.1, 0], 100, 100)
    assert up_uv[1] < 50


def test_mirrored_camera_projects_mirrored_point_to_mirrored_pixel():
    rng = np.random.default_rng(1)
    w, h = 256, 200
    for _ in range(10):
        cam = C.orbit_camera(rng.uniform(-1, 1), rng.uniform(-0.4, 0.4), focal=rng.uniform(2, 6))
        cam = cam.with_intrinsics(C.intrinsics(cam.intrinsics[0, 0], cx=0.45, cy=0.55))
        pts = rng.uniform(-0.5, 0.5, size=(30, 3))
        uv, z = cam.project(pts, w, h)
        uvm, zm = cam.mirrored().project(pts * [-1, 1, 1], w, h)
        np.testing.assert_allclose(uvm[:, 0], w - uv[:, 0], atol=1e-8)
        np.testing.assert_allclose(uvm[:, 1], uv[:, 1], atol=1e-8)
        np.testing.assert_allclose(zm, z, atol=1e-10)
        np.testing.assert_allclose(C.mirror_label(cam.label()), cam.mirrored().label(), atol=1e-6)


def test_fov_focal_inverse():
    for fov in (5.0, 13.37, 45.0, 120.0):
        assert C.focal_to_fov(C.fov_to_focal(fov)) == pytest.approx(fov)
    assert C.fov_to_focal(90.0) == pytest.approx(0.5)


def test_invalid_cameras_raise():
    with pytest.raises(ValueError):
        C.Camera(np.diag([1.0, 1.0, -1.0, 1.0]), C.intrinsics())  # reflection
    with pytest.raises(ValueError):
        C.Camera(np.eye(4), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        C.orbit_camera(0.0, math.radians(95))


def test_model_to_blender_world_axes():
    # Up (model +y) becomes Blender +Z; the face direction (model +z) becomes Blender -Y; metres scale.
    s = C.METRES_PER_UNIT
    np.testing.assert_allclose(C.model_points_to_blender([0, 1, 0]), [0, 0, s], atol=1e-12)
    np.testing.assert_allclose(C.model_points_to_blender([0, 0, 1]), [0, -s, 0], atol=1e-12)
    np.testing.assert_allclose(C.model_points_to_blender([1, 0, 0]), [s, 0, 0], atol=1e-12)
    p = np.random.default_rng(2).normal(size=(5, 3))
    np.testing.assert_allclose(C.blender_points_to_model(C.model_points_to_blender(p)), p, atol=1e-12)


def _blender_project(bc: C.BlenderCamera, pts_blender: np.ndarray) -> np.ndarray:
    """Independent re-statement of Blender's projection, written from its camera definition: camera
    object looks down -Z with +Y up; pixel coordinates from the sensor-fit rules of
    shared/reference/blender.md section 4, without going through the typed camera."""
    mw = np.array(bc.matrix_world, dtype=np.float64)
    mw[:3, :3] /= np.linalg.norm(mw[:3, :3], axis=0, keepdims=True)  # object scale is ignored
    inv = np.linalg.inv(mw)
    pc = pts_blender @ inv[:3, :3].T + inv[:3, 3]
    w, h = bc.pixel_size()
    ycor = bc.pixel_aspect_y / bc.pixel_aspect_x
    fit = bc.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if bc.pixel_aspect_x * w >= bc.pixel_aspect_y * h else "VERTICAL"
    sensor = bc.sensor_height if bc.sensor_fit == "VERTICAL" else bc.sensor_width
    viewfac = w if fit == "HORIZONTAL" else ycor * h
    # Blender: a positive shift moves the view window right/up, so the scene moves left/down:
    #   x_img = W/2 + (lens/sensor * viewfac) * X / -Z - shift_x * viewfac (x right),
    #   y_img (up) = H/2 + (lens/sensor * viewfac / ycor) * Y / -Z - shift_y * viewfac / ycor.
    depth = -pc[:, 2]
    fpx = bc.lens / sensor * viewfac
    x = w / 2 + fpx * pc[:, 0] / depth - bc.shift_x * viewfac
    y_up = h / 2 + fpx / ycor * pc[:, 1] / depth - bc.shift_y * viewfac / ycor
    return np.stack([x, h - y_up], axis=1)


def test_blender_camera_conversion_and_round_trip():
    rng = np.random.default_rng(3)
    for i in range(60):
        cam = C.orbit_camera(rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), radius=rng.uniform(2, 4))
        w, h = int(rng.integers(64, 1920)), int(rng.integers(64, 1080))
        mw = C.blender_from_camera(cam, w, h).matrix_world @ np.diag([1.3, 0.7, 2.0, 1.0])
        bc = C.BlenderCamera(
            matrix_world=mw, lens=rng.uniform(15, 200), sensor_width=rng.uniform(10, 50),
            sensor_height=rng.uniform(10, 50), sensor_fit=["AUTO", "HORIZONTAL", "VERTICAL"][i % 3],
            shift_x=rng.uniform(-0.3, 0.3), shift_y=rng.uniform(-0.3, 0.3), resolution_x=w,
            resolution_y=h, resolution_percentage=[100, 50, 25][i % 3 if i % 2 else 0],
            pixel_aspect_x=1.0, pixel_aspect_y=rng.uniform(0.5, 2.0) if i % 4 == 0 else 1.0)
        typed, tw, th = C.camera_from_blender(bc)
        pts_model = rng.uniform(-0.5, 0.5, size=(20, 3))
        uv_typed, z = typed.project(pts_model, tw, th)
        assert (z > 0).all()
        uv_blender = _blender_project(bc, C.model_points_to_blender(pts_model))
        np.testing.assert_allclose(uv_typed, uv_blender, atol=1e-6 * max(tw, th))
        # Round trip typed -> Blender -> typed gives the same projection.
        back, bw, bh = C.camera_from_blender(C.blender_from_camera(typed, tw, th))
        assert (bw, bh) == (tw, th)
        uv_back, _ = back.project(pts_model, bw, bh)
        np.testing.assert_allclose(uv_back, uv_typed, atol=1e-6 * max(tw, th))
