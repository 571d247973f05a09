# SPDX-License-Identifier: GPL-3.0-or-later
"""The project's camera convention against Blender itself (``world_to_camera_view`` is the truth).

For ~100 random Blender cameras (lens, sensor size and fit, shift, resolution, percentage, pixel
aspect, a scaled camera object) points projected through the add-on's reading of the camera
(``conversions.blender_camera`` -> ``cameras.camera_from_blender`` -> ``Camera.project``) must land
where Blender puts them: ``u = ndc.x * W``, ``v = (1 - ndc.y) * H``. Then the other way round: a
typed camera written onto a real Blender camera (``blender_from_camera`` ->
``conversions.apply_blender_camera``) projects like the typed camera and reads back unchanged.
"""
from __future__ import annotations

import numpy as np
import pytest

from blender_helpers import requires_bpy, run_blender

pytestmark = [pytest.mark.blender, requires_bpy]

SCRIPT = """
import json, math
import numpy as np
import bpy, mathutils
from bpy_extras.object_utils import world_to_camera_view
from blender_addon import conversions
from ide3d_core import cameras as C

rng = np.random.default_rng(7)
scene = bpy.context.scene
cam_data = bpy.data.cameras.new("probe")
obj = bpy.data.objects.new("probe", cam_data)
scene.collection.objects.link(obj)
scene.camera = obj

def blender_uv(points_blender, w, h):
    out = []
    for p in points_blender:
        ndc = world_to_camera_view(scene, obj, mathutils.Vector(p.tolist()))
        out.append((ndc.x * w, (1.0 - ndc.y) * h))
    return np.array(out)

def look_at_matrix(eye, target, roll):
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0, 0, 1.0]); right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c, s = math.cos(roll), math.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m

forward_err, round_trip_err, read_back_err = [], [], []
for i in range(100):
    cam_data.lens = rng.uniform(15, 200)
    cam_data.sensor_width, cam_data.sensor_height = rng.uniform(10, 50), rng.uniform(10, 50)
    cam_data.sensor_fit = ("AUTO", "HORIZONTAL", "VERTICAL")[i % 3]
    cam_data.shift_x, cam_data.shift_y = rng.uniform(-0.3, 0.3, 2)
    r = scene.render
    # Multiples of 4: with 25/50 % the pixel counts stay exact. (Otherwise Blender's view_frame uses the
    # unscaled aspect while the image has truncated pixel counts; see docs/blender.md.)
    r.resolution_x, r.resolution_y = 4 * int(rng.integers(16, 480)), 4 * int(rng.integers(16, 270))
    r.resolution_percentage = int((100, 50, 25)[i % 3])
    r.pixel_aspect_x, r.pixel_aspect_y = (1.0, 1.0) if i % 2 else tuple(rng.uniform(0.5, 2.0, 2))
    eye = rng.normal(size=3); eye = eye / np.linalg.norm(eye) * rng.uniform(2, 5)
    m = look_at_matrix(eye, rng.uniform(-0.2, 0.2, 3), rng.uniform(-0.5, 0.5))
    obj.matrix_world = mathutils.Matrix((m @ np.diag([1.3, 0.7, 2.0, 1.0])).tolist())  # scale is ignored
    bpy.context.view_layer.update()
    pts = rng.uniform(-0.4, 0.4, size=(30, 3))
    typed, w, h = C.camera_from_blender(conversions.blender_camera(obj, scene))
    assert (w, h) == (r.resolution_x * r.resolution_percentage // 100, r.resolution_y * r.resolution_percentage // 100)
    uv, _ = typed.project(C.blender_points_to_model(pts), w, h)
    forward_err.append(float(np.abs(uv - blender_uv(pts, w, h)).max()))
    # Typed camera -> a real Blender camera -> Blender's projection and a read-back.
    conversions.apply_blender_camera(obj, scene, C.blender_from_camera(typed, w, h))
    bpy.context.view_layer.update()
    round_trip_err.append(float(np.abs(uv - blender_uv(pts, w, h)).max()))
    back, bw, bh = C.camera_from_blender(conversions.blender_camera(obj, scene))
    assert (bw, bh) == (w, h)
    read_back_err.append(float(np.abs(back.project(C.blender_points_to_model(pts), w, h)[0] - uv).max()))
print("RESULT " + json.dumps(dict(forward=forward_err, round_trip=round_trip_err, read_back=read_back_err)))
"""


def test_projection_matches_world_to_camera_view_and_round_trips(tmp_path):
    (res,) = run_blender(SCRIPT, tmp_path, timeout=120)
    forward, round_trip, read_back = (np.array(res[k]) for k in ("forward", "round_trip", "read_back"))
    assert len(forward) == 100
    # float32 matrices in Blender: a few thousandths of a pixel at worst (fx up to ~20k px).
    assert forward.max() < 0.01, forward.max()
    assert round_trip.max() < 0.01, round_trip.max()
    assert read_back.max() < 0.01, read_back.max()
    print(f"max px error: forward {forward.max():.2e}, round trip {round_trip.max():.2e}, "
          f"read back {read_back.max():.2e}")
