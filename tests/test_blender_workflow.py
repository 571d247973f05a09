# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's operators headless in real Blender (each test a subprocess).

* In-process service on a stand-in sphere generator: new portrait, render from the active camera
  (checked against Blender's own camera rays), the mask snap path with a numpy-written label image,
  the clear "no canonical editor" error, restyle, animation frames, saving and reopening the .blend.
* Mesh conversion (torch-free process); Export glTF is tests/test_blender_export.py.
* The whole workflow through a real worker on the untrained ``tiny`` generator with an untrained
  canonical editor: new portrait, mask edit, restyle, global style, undo/redo, render, mesh, save the
  document, save the .blend, lose the worker and the user folder, reopen: same state and the same
  pixels; then the worker is killed mid photo import, which is reported, and the next operator works."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from blender_helpers import SCRIPT_HELPERS, SPHERE_HAIR_Y, SPHERE_RADIUS, requires_bpy, run_blender

pytestmark = [pytest.mark.blender, requires_bpy]

PRELUDE = """
import json, os, sys
""" + SCRIPT_HELPERS + """
if STAND_IN:
    import blender_helpers
    blender_helpers.install_sphere_networks(resolution=96)
bpy.ops.preferences.addon_enable(module="blender_addon")
import blender_addon
from blender_addon import conversions, properties, runtime
from ide3d_core import labels as L
prefs = bpy.context.preferences.addons["blender_addon"].preferences
prefs.backend_mode, prefs.device, prefs.model_path = "IN_PROCESS", "CPU", "config:tiny"
scene = bpy.context.scene
cam_data = bpy.data.cameras.new("Cam")
cam = bpy.data.objects.new("Cam", cam_data)
scene.collection.objects.link(cam)
scene.camera = cam
# Blender world: the face looks toward -Y; a camera in front, a little to the side and above.
eye = np.array([0.35, -1.3, 0.2])
fwd = -eye / np.linalg.norm(eye)
right = np.cross(fwd, [0, 0, 1.0]); right /= np.linalg.norm(right)
up = np.cross(right, fwd)
m = np.eye(4); m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
cam.matrix_world = mathutils.Matrix(m.tolist())
cam_data.lens, cam_data.shift_x, cam_data.shift_y = 85.0, 0.05, -0.03
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 96, 64, 100
scene.ide3d.seed, scene.ide3d.truncation = 5, 0.7
r = run(bpy.ops.ide3d.new_portrait)
ws = properties.get_ws(scene)
say(step="new", result=r, ws_shape=None if ws is None else list(ws.shape),
    images=sorted(i.name for i in bpy.data.images), packed=bool(bpy.data.images["IDE-3D Mask"].packed_file))
r = run(bpy.ops.ide3d.render_view)
view = bpy.data.images.get("IDE-3D View Cam")
bg = [b.image.name for b in cam_data.background_images if b.image]
say(step="render", result=r, size=list(view.size) if view else None, background=bg)
"""

STAND_IN_CHECKS = """
# Truth from Blender itself: rays through pixel centres spanned by the camera's view_frame.
ids = L.decode_colors(conversions.array_from_image(bpy.data.images["IDE-3D View Cam Labels"])[..., :3])
W, H = 96, 64
tr, br, bl, tl = [np.array(v) for v in cam_data.view_frame(scene=scene)]
jj, ii = np.mgrid[0:H, 0:W]
px = tl[0] + (ii + 0.5) / W * (tr[0] - tl[0])
py = tl[1] - (jj + 0.5) / H * (tl[1] - bl[1])
d_local = np.stack([px, py, np.full_like(px, tl[2])], -1)
rot = np.array(cam.matrix_world.normalized())[:3, :3]
d = d_local @ rot.T; d /= np.linalg.norm(d, axis=-1, keepdims=True)
o = np.array(cam.matrix_world.translation)
rad = SPHERE_RADIUS * 0.5                      # metres
b = d @ o; disc = b * b - (o @ o - rad ** 2)
hit = disc > 0
t = -b - np.sqrt(np.clip(disc, 0, None))
z = o[2] + t * d[..., 2]                       # Blender up = model up
hair = hit & (z > SPHERE_HAIR_Y * 0.5)
say(step="alignment", hit_fraction=float(hit.mean()), silhouette_agree=float(((ids != 0) == hit).mean()),
    hair_agree=float(((ids == 13) == hair).mean()))

# Mask painting: write label colours with numpy (painting needs a window), with anti-aliased fringes.
mask = bpy.data.images["IDE-3D Mask"]
px = conversions.array_from_image(mask)
h, w = px.shape[:2]
expected = np.zeros((h, w), np.uint8); expected[h // 4: h // 2, w // 4: 3 * w // 4] = L.ID["hair"]
expected[h // 2:, :] = L.ID["cloth"]
rgb = L.colorize(expected).astype(np.int16)
rgb[h // 4, :] = (rgb[h // 4, :] * 0.95).astype(np.int16)   # a soft edge row (5 % background)
rgb += np.random.default_rng(0).integers(-6, 7, size=rgb.shape, dtype=np.int16)      # brush noise
px[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
mask.pixels.foreach_set((px[::-1].astype(np.float32) / 255).ravel())
r = run(bpy.ops.ide3d.apply_mask_edit)
snapped = conversions.array_from_image(mask)[..., :3]
back = L.decode_colors(snapped)
say(step="mask", result=r, palette_only=bool((L.colorize(back) == snapped).all()),
    agree=float((back == expected).mean()))
scene.ide3d.regions[13] = True
view_img = bpy.data.images["IDE-3D View Cam"]
view_img.pixels.foreach_set(np.zeros(len(view_img.pixels), np.float32))  # so a re-render shows
r = run(bpy.ops.ide3d.apply_restyle)
runtime.poll()
say(step="restyle", result=r, status=scene.ide3d.status,
    view_refreshed=bool(conversions.array_from_image(view_img)[..., 3].max() > 0))
say(step="mesh", result=run(bpy.ops.ide3d.import_mesh))

# Animation: two frames of a moving camera.
scene.frame_start, scene.frame_end = 1, 2
cam.keyframe_insert("location", frame=1); cam.location.x += 0.2; cam.keyframe_insert("location", frame=2)
scene.render.filepath = os.path.join(os.getcwd(), "frames", "f_")
r = run(bpy.ops.ide3d.render_animation)
say(step="animation", result=r, files=sorted(os.listdir(os.path.join(os.getcwd(), "frames"))))
"""

SAVE_AND_REOPEN = """
path = os.path.join(os.getcwd(), "portrait.blend")
before = dict(ws=properties.get_ws(scene).tolist(), mask=conversions.array_from_image(bpy.data.images["IDE-3D Mask"]).tolist())
bpy.ops.wm.save_as_mainfile(filepath=path)
bpy.ops.wm.open_mainfile(filepath=path)
scene = bpy.context.scene
ws = properties.get_ws(scene)
mask = bpy.data.images.get("IDE-3D Mask")
say(step="reopen", has=scene.ide3d.has_portrait, seed=scene.ide3d.seed,
    ws_same=ws is not None and ws.tolist() == before["ws"],
    mask_same=mask is not None and conversions.array_from_image(mask).tolist() == before["mask"])
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


def _script(stand_in: bool, body: str) -> str:
    head = f"STAND_IN = {stand_in}\nSPHERE_RADIUS = {SPHERE_RADIUS}\nSPHERE_HAIR_Y = {SPHERE_HAIR_Y}\n"
    return head + PRELUDE + body + SAVE_AND_REOPEN


def _by_step(results):
    return {r.pop("step"): r for r in results}


def test_workflow_on_stand_in_generator(tmp_path):
    s = _by_step(run_blender(_script(True, STAND_IN_CHECKS), tmp_path, timeout=180))
    assert s["new"]["result"] == [["FINISHED"], ""] and s["new"]["ws_shape"] == [4, 8]
    assert {"IDE-3D Canonical", "IDE-3D Mask"} <= set(s["new"]["images"]) and s["new"]["packed"]
    assert s["render"] == dict(result=[["FINISHED"], ""], size=[96, 64], background=["IDE-3D View Cam"])
    a = s["alignment"]
    assert 0.05 < a["hit_fraction"] < 0.9 and a["silhouette_agree"] > 0.995 and a["hair_agree"] > 0.995, a
    m = s["mask"]
    assert m["palette_only"] and m["agree"] == 1.0, m
    # config:tiny has no canonical editor: the backend's clear error. The restyle works on the stand-in.
    assert s["mask"]["result"][0] == ["CANCELLED"] and "canonical editor" in s["mask"]["result"][1], s["mask"]
    assert s["restyle"]["result"] == [["FINISHED"], ""], s["restyle"]
    # the camera view shown before is re-rendered for the new state ("every preview")
    assert "re-rendering 1 camera view" in s["restyle"]["status"] and s["restyle"]["view_refreshed"], s["restyle"]
    # The stand-in has no density field internals for the mesh extractor: a one-line error, no crash.
    state, message = s["mesh"]["result"]
    assert state == ["FINISHED"] or (message.startswith("Error: ") and "\n" not in message), s["mesh"]
    assert s["animation"] == dict(result=[["FINISHED"], ""], files=["f_0001.png", "f_0002.png"])
    assert s["reopen"] == dict(has=True, seed=5, ws_same=True, mask_same=True)


MESH_AND_GLTF = SCRIPT_HELPERS + """
import os
bpy.ops.preferences.addon_enable(module="blender_addon")
from blender_addon import conversions, properties
# Mesh conversion on a known mesh: an octahedron in model units, labels by height.
verts = np.array([[0.2, 0, 0], [-0.2, 0, 0], [0, 0.2, 0], [0, -0.2, 0], [0, 0, 0.2], [0, 0, -0.2]])
faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
obj = conversions.mesh_object(properties.MESH_NAME, verts, faces, np.full((6, 3), 0.5), np.array([1, 1, 13, 17, 1, 1]))
co = np.empty(18, np.float32); obj.data.vertices.foreach_get("co", co)
say(step="conversion", top=co.reshape(6, 3)[2].tolist(), front=co.reshape(6, 3)[4].tolist(),
    slots=len(obj.material_slots))
labels = np.empty(6, np.int32); obj.data.attributes["ide3d_label"].data.foreach_get("value", labels)
say(step="labels", labels=labels.tolist())

# Canonical UVs for viewport mask painting, against Blender's projection through a real camera set
# up as the canonical camera: u = ndc.x, v = ndc.y (UV origin bottom-left, like ndc).
from bpy_extras.object_utils import world_to_camera_view
from ide3d_core import cameras as C
mask = conversions.image_from_array("IDE-3D Mask", np.zeros((32, 32, 3), np.uint8))
rng = np.random.default_rng(3)
verts = rng.uniform(-0.25, 0.25, size=(40, 3)); faces = np.stack([rng.choice(40, 3, replace=False) for _ in range(30)])
obj = conversions.mesh_object(properties.MESH_NAME, verts, faces, mask_image=mask)
uv = np.empty(90 * 2, np.float32); obj.data.uv_layers[conversions.CANONICAL_UV_NAME].data.foreach_get("uv", uv)
cam = bpy.data.objects.new("Canon", bpy.data.cameras.new("Canon")); bpy.context.scene.collection.objects.link(cam)
conversions.apply_blender_camera(cam, bpy.context.scene, C.blender_from_camera(C.canonical_camera(), 32, 32))
bpy.context.view_layer.update()
co = np.empty(120, np.float32); obj.data.vertices.foreach_get("co", co)
ndc = np.array([tuple(world_to_camera_view(bpy.context.scene, cam, mathutils.Vector(p)))[:2] for p in co.reshape(40, 3)])
active = obj.material_slots[0].material.node_tree.nodes.active
say(step="uv", err=float(np.abs(uv.reshape(90, 2) - ndc[faces.ravel()]).max()),
    paint_image=active.image.name if active is not None and active.type == "TEX_IMAGE" else None)
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


def test_mesh_conversion(tmp_path):
    # A torch-free process. Export glTF goes through the backend: tests/test_blender_export.py.
    s = _by_step(run_blender(MESH_AND_GLTF, tmp_path, timeout=120))
    g = s["conversion"]
    assert g["slots"] == 3
    # Model +y (up) is Blender +Z, model +z (face direction) is Blender -Y; 1 unit = 0.5 m.
    assert g["top"] == pytest.approx([0, 0, 0.1], abs=1e-6) and g["front"] == pytest.approx([0, -0.1, 0], abs=1e-6)
    assert s["labels"]["labels"] == [1, 1, 13, 17, 1, 1]
    assert s["uv"]["err"] < 1e-5 and s["uv"]["paint_image"] == "IDE-3D Mask", s["uv"]


TINY_WORKFLOW = """
import hashlib, json, os, shutil, sys, threading, time
""" + SCRIPT_HELPERS + """
bpy.ops.preferences.addon_enable(module="blender_addon")
from blender_addon import conversions, documents, properties, runtime
from ide3d_core import labels as L
prefs = bpy.context.preferences.addons["blender_addon"].preferences
prefs.backend_mode, prefs.device, prefs.python_path, prefs.model_path = "WORKER", "CPU", sys.executable, MODEL
scene = bpy.context.scene
cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
scene.collection.objects.link(cam)
scene.camera = cam
cam.matrix_world = mathutils.Matrix.LocRotScale(mathutils.Vector((0.4, -1.3, 0.15)),
                                                mathutils.Euler((1.45, 0.0, 0.3)), None)
cam.data.lens = 85.0
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 40, 24, 100
scene.ide3d.seed = 5
def snapshot():
    st = scene.ide3d
    return dict(history=documents.history(scene)[0], current=documents.history(scene)[1],
                ws=properties.get_ws(scene).tolist(), ns=st.num_shape_ws,
                document=hashlib.sha256(documents.get_document(scene)).hexdigest(), revision=st.revision)
r = run(bpy.ops.ide3d.new_portrait)
say(step="new", result=r, **snapshot(), file=os.path.isfile(scene.ide3d.document_path))
# Paint the canonical mask with numpy (painting needs a window): hair on top, skin, clothes below.
mask = bpy.data.images["IDE-3D Mask"]
h, w = mask.size[1], mask.size[0]
ids = np.zeros((h, w), np.uint8); ids[: h // 3, 4:-4] = L.ID["hair"]; ids[h // 3: 2 * h // 3, 8:-8] = L.ID["skin"]
ids[2 * h // 3:, :] = L.ID["cloth"]
rgba = np.full((h, w, 4), 255, np.uint8); rgba[..., :3] = L.colorize(ids)
mask.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255).ravel())
say(step="mask", result=run(bpy.ops.ide3d.apply_mask_edit), **snapshot())
for i in range(L.NUM_CLASSES):
    scene.ide3d.regions[i] = True
scene.ide3d.style_seed = 9
say(step="restyle", result=run(bpy.ops.ide3d.apply_restyle), **snapshot())
scene.ide3d.global_seed, scene.ide3d.shape_mix, scene.ide3d.texture_mix = 2, 0.0, 0.5
say(step="style", result=run(bpy.ops.ide3d.apply_style), **snapshot())
say(step="undo", result=run(bpy.ops.ide3d.history, step=-1), **snapshot())
say(step="redo", result=run(bpy.ops.ide3d.history, step=1), **snapshot())
say(step="redo_end", result=run(bpy.ops.ide3d.history, step=1))
# Live Edit: strokes written with numpy, the timer's tick called by hand (no timers in background mode).
from blender_addon import live
say(step="live_on", result=run(bpy.ops.ide3d.live_edit))   # remembers the mask as it is: nothing to send yet
idle = live.tick()
def paint(rows):
    ids = L.decode_colors(conversions.array_from_image(mask)[..., :3]); ids[:rows, 2:-2] = L.ID["hat"]
    rgba = np.full(ids.shape + (4,), 255, np.uint8); rgba[..., :3] = L.colorize(ids)
    mask.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255).ravel())
    return ids
paint(3); first = live.tick(); painted = paint(6); second = live.tick()
deadline = time.time() + 60
while runtime.owner().busy and time.time() < deadline:
    runtime.poll(); time.sleep(0.02)
say(step="live", idle=len(idle), sent=[len(first), len(second)], states=[first[0].state, second[0].state],
    mask_kept=bool(np.array_equal(L.decode_colors(conversions.array_from_image(mask)[..., :3]), painted)),
    on=scene.ide3d.live_edit, status=scene.ide3d.status, **snapshot())
say(step="live_off", result=run(bpy.ops.ide3d.live_edit), on=scene.ide3d.live_edit)
say(step="live_undo", result=run(bpy.ops.ide3d.history, step=-1), **snapshot())
say(step="live_redo", result=run(bpy.ops.ide3d.history, step=1), **snapshot())
r = run(bpy.ops.ide3d.render_view)
before = conversions.array_from_image(bpy.data.images["IDE-3D View Cam"])
say(step="render", result=r, size=list(before.shape))
# Show Photos off and on again: the views re-render (a seed portrait has no photo: the same pixels)
from blender_addon import jobs
flags, results = [], []
for _ in range(2):
    results.append(run(bpy.ops.ide3d.show_photos))
    flags.append(jobs.view_request(cam, scene, documents.scene_portrait_ref(scene)).photo)
    deadline = time.time() + 60
    while runtime.owner().busy and time.time() < deadline:
        runtime.poll(); time.sleep(0.02)
say(step="show_photo", flags=flags, results=results, status=scene.ide3d.status,
    same_pixels=bool(np.array_equal(before, conversions.array_from_image(bpy.data.images["IDE-3D View Cam"]))))
scene.ide3d.mesh_resolution = 32
say(step="mesh", result=run(bpy.ops.ide3d.import_mesh), has=properties.MESH_NAME in bpy.data.objects)
out = os.path.join(os.getcwd(), "saved.ide3d")
say(step="save_doc", result=run(bpy.ops.ide3d.save_portrait, filepath=out),
    same=open(out, "rb").read() == documents.get_document(scene))
path = os.path.join(os.getcwd(), "portrait.blend")
state = snapshot()
bpy.ops.wm.save_as_mainfile(filepath=path)
# The worker goes away and the user folder's document files with it: the .blend alone must restore.
pid = runtime.owner().current.pid
runtime.owner().shutdown()
shutil.rmtree(runtime.documents_folder())
bpy.ops.wm.open_mainfile(filepath=path)
scene = bpy.context.scene
after = snapshot()
r = run(bpy.ops.ide3d.render_view)
again = conversions.array_from_image(bpy.data.images["IDE-3D View Cam"])
say(step="reopen", result=r, same_state=after == state, same_pixels=bool(np.array_equal(before, again)),
    new_worker=runtime.owner().current.pid != pid, file=os.path.isfile(scene.ide3d.document_path))
# Kill the worker in the middle of a photo import's inversion: reported, Blender goes on, next works.
scene.ide3d.photo_steps, scene.ide3d.photo_tune_steps = 5000, 0
client = runtime.client(bpy.context)
seen = []
def killer():
    deadline = time.time() + 120
    while time.time() < deadline:
        busy = [j for j in list(client._active.values()) if j.kind == "invert"]
        if any(j.message.startswith("inversion") for j in busy):
            seen.append(busy[0].message); client.kill(); return
        time.sleep(0.02)
threading.Thread(target=killer, daemon=True).start()
r = run(bpy.ops.ide3d.import_photo, filepath=PHOTO)
say(step="killed", result=r, seen=seen, same_state=snapshot() == state)
r = run(bpy.ops.ide3d.render_view)
say(step="after_kill", result=r,
    same_pixels=bool(np.array_equal(before, conversions.array_from_image(bpy.data.images["IDE-3D View Cam"]))))
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


@pytest.mark.skipif(importlib.util.find_spec("ide3d_core.networks") is None, reason="no generator yet")
def test_tiny_workflow_in_worker_edits_history_reopen_and_kill(tmp_path):
    """The whole edit workflow through a real worker process (Blender's own process stays torch-free)."""
    pytest.importorskip("torch")
    cbook = pytest.importorskip("matplotlib.cbook")
    from blender_helpers import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    script = f"MODEL = {str(model)!r}\nPHOTO = {str(photo)!r}\n" + TINY_WORKFLOW
    s = _by_step(run_blender(script, tmp_path, timeout=300))
    ok = [["FINISHED"], ""]
    assert s["new"]["result"] == ok and s["new"]["history"] == ["seed"] and s["new"]["file"], s["new"]
    # The revision is the hash of the document bytes the .blend holds (the whole document, not cut short).
    for step in ("new", "mask", "restyle", "style", "undo", "redo"):
        assert s[step]["document"][:16] == s[step]["revision"], step
    ns = s["new"]["ns"]
    ws0, ws_mask = np.array(s["new"]["ws"]), np.array(s["mask"]["ws"])
    assert s["mask"]["result"] == ok and s["mask"]["history"] == ["seed", "mask"] and s["mask"]["current"] == 1
    # A mask edit moves the shape codes and keeps the texture codes bit for bit (canonical editor).
    assert np.array_equal(ws_mask[ns:], ws0[ns:]) and not np.array_equal(ws_mask[:ns], ws0[:ns])
    assert s["restyle"]["result"] == ok and s["restyle"]["history"][-1] == "restyle"
    assert np.array_equal(np.array(s["restyle"]["ws"]), ws_mask)  # a restyle leaves the codes alone
    ws_style = np.array(s["style"]["ws"])
    assert s["style"]["result"] == ok and s["style"]["history"] == ["seed", "mask", "restyle", "style"]
    assert np.array_equal(ws_style[:ns], ws_mask[:ns]) and not np.array_equal(ws_style[ns:], ws_mask[ns:])
    assert s["undo"]["result"] == ok and s["undo"]["current"] == 2 and s["undo"]["ws"] == s["restyle"]["ws"]
    assert s["redo"]["result"] == ok and s["redo"]["current"] == 3 and s["redo"]["ws"] == s["style"]["ws"]
    assert s["redo_end"]["result"] == [["CANCELLED"], "Error: nothing to redo"]
    assert s["live_on"]["result"] == ok and s["live_off"] == dict(result=ok, on=False), (s["live_on"], s["live_off"])
    lv = s["live"]
    assert lv["idle"] == 0 and lv["sent"] == [1, 1] and lv["states"][1] == "done", lv
    assert lv["states"][0] in ("done", "superseded") and lv["on"] and lv["mask_kept"], lv
    # two strokes, one history record: the second replaced the first
    assert lv["history"] == ["seed", "mask", "restyle", "style", "mask"] and lv["current"] == 4, lv
    ws_live = np.array(lv["ws"])
    assert np.array_equal(ws_live[ns:], ws_style[ns:]) and not np.array_equal(ws_live[:ns], ws_style[:ns])
    assert s["live_undo"]["ws"] == s["style"]["ws"] and s["live_redo"]["ws"] == lv["ws"]
    assert s["render"]["result"] == ok and s["render"]["size"] == [24, 40, 4]
    assert s["show_photo"]["flags"] == [False, True] and s["show_photo"]["same_pixels"], s["show_photo"]
    assert s["show_photo"]["results"] == [ok, ok] and s["show_photo"]["status"].startswith("photos shown")
    assert s["mesh"]["has"] or "no head surface" in s["mesh"]["result"][1], s["mesh"]
    assert s["save_doc"]["result"] == ok and s["save_doc"]["same"]
    assert s["reopen"] == dict(result=ok, same_state=True, same_pixels=True, new_worker=True, file=True)
    k = s["killed"]
    assert k["result"][0] == ["CANCELLED"] and "stopped unexpectedly" in k["result"][1], k
    assert k["seen"] and k["same_state"]
    assert s["after_kill"] == dict(result=ok, same_pixels=True)
