# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 8's alignment bar, end to end in real Blender on the trained bundled model.

The add-on (in-process backend, bundled ``default`` model) makes a portrait, imports its head mesh
and renders the neural view from three free Blender cameras (different lenses, positions, sensor fit,
shift and a non-square frame). Blender's own Workbench render of the imported mesh (transparent film:
its alpha is the mesh's silhouette as Blender projects it) must match the neural render's silhouette
(the alpha of the view image, i.e. the neural opacity > 0.5) with IoU > 0.9 from every camera. Nothing
here projects with the project's camera module on the Blender side: Blender rasterises its own camera.
"""
from __future__ import annotations

import pytest

from blender_helpers import SCRIPT_HELPERS, requires_bpy, run_blender
from ide3d_core.model_loading import BUNDLED_MODEL_DIR

pytestmark = [pytest.mark.blender, requires_bpy,
              pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")]

SCRIPT = SCRIPT_HELPERS + """
import os
bpy.ops.preferences.addon_enable(module="blender_addon")
from blender_addon import conversions
prefs = bpy.context.preferences.addons["blender_addon"].preferences
prefs.backend_mode, prefs.device, prefs.model_path = "IN_PROCESS", "CPU", ""   # "" = the bundled model
scene = bpy.context.scene
scene.ide3d.seed, scene.ide3d.truncation, scene.ide3d.mesh_resolution = 0, 0.7, 128
scene.ide3d.mesh_texture = 0  # geometry only: the texture import is tests/test_blender_mesh_texture.py
say(step="new", result=run(bpy.ops.ide3d.new_portrait))
say(step="mesh", result=run(bpy.ops.ide3d.import_mesh, parts_by_label=False))
from blender_addon.properties import MESH_NAME
hidden = []
for obj in scene.objects:   # the startup file's cube and light: only the imported head renders
    if obj.type == "MESH" and not obj.name.startswith(MESH_NAME):
        obj.hide_render = True
        hidden.append(obj.name)
say(step="scene", hidden=hidden, head=[o.name for o in scene.objects if o.name.startswith(MESH_NAME)])
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.film_transparent = True
scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGBA"
scene.render.resolution_percentage = 100
# Blender world: the face looks toward -Y, up is +Z; the head is about 0.25 m around the origin.
CAMS = [  # eye, lens (mm), sensor fit, shift x, shift y, resolution
    ((0.35, -1.3, 0.2), 85.0, "AUTO", 0.05, -0.03, (128, 128)),
    ((-0.95, -0.95, -0.1), 70.0, "HORIZONTAL", 0.0, 0.0, (160, 120)),
    ((0.1, -1.7, 0.45), 100.0, "VERTICAL", -0.04, 0.06, (112, 144)),
]
for k, (eye, lens, fit, sx, sy, (w, h)) in enumerate(CAMS):
    data = bpy.data.cameras.new(f"Free{k}")
    cam = bpy.data.objects.new(f"Free{k}", data)
    scene.collection.objects.link(cam)
    eye = np.array(eye); fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 0, 1.0]); right /= np.linalg.norm(right); up = np.cross(right, fwd)
    m = np.eye(4); m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    cam.matrix_world = mathutils.Matrix(m.tolist())
    data.lens, data.sensor_fit, data.shift_x, data.shift_y = lens, fit, sx, sy
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = w, h
    r = run(bpy.ops.ide3d.render_view)
    neural = conversions.array_from_image(bpy.data.images[f"IDE-3D View Free{k}"])[..., 3] > 127
    scene.render.filepath = os.path.join(os.getcwd(), f"blender_{k}.png")
    bpy.ops.render.render(write_still=True)
    mesh_sil = conversions.load_png(scene.render.filepath)[..., 3] > 127
    inter, union = (neural & mesh_sil).sum(), (neural | mesh_sil).sum()
    say(step=f"cam{k}", result=r, shape=list(neural.shape), blender_shape=list(mesh_sil.shape),
        iou=float(inter / max(union, 1)), coverage=float(neural.mean()))
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


def test_blender_render_of_imported_mesh_matches_neural_render(tmp_path):
    s = {r.pop("step"): r for r in run_blender(SCRIPT, tmp_path, timeout=400)}
    assert s["new"]["result"] == [["FINISHED"], ""], s["new"]
    assert s["mesh"]["result"] == [["FINISHED"], ""], s["mesh"]
    sizes = [[128, 128], [120, 160], [144, 112]]
    for k in range(3):
        c = s[f"cam{k}"]
        assert c["result"] == [["FINISHED"], ""], c
        assert c["shape"] == c["blender_shape"] == sizes[k], c
        assert 0.1 < c["coverage"] < 0.9, c  # the head is in the frame, not filling it
        print(f"camera {k}: silhouette IoU {c['iou']:.3f}")
        assert c["iou"] > 0.9, c
