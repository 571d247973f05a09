# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's Export glTF in real headless Blender writes what ``ide3d mesh`` writes.

Blender's own glTF exporter drops attributes whose names do not start with ``_`` and has no baked
texture; the add-on therefore exports through the backend (``export_mesh`` request ->
``ide3d_core.operations.mesh``). Truth: the Khronos glTF validator, the label names of
``ide3d_core.labels``, and the file ``ide3d mesh --portrait`` writes for the same document.
"""
from __future__ import annotations

import numpy as np
import pytest

from blender_helpers import SCRIPT_HELPERS, requires_bpy, run_blender
from gltf_helpers import glb_json, validate

pytestmark = [pytest.mark.blender, pytest.mark.slow, requires_bpy]

OPTIONS = dict(resolution=64, texture=256, faces=3000)

EXPORT = SCRIPT_HELPERS + """
import os
bpy.ops.preferences.addon_enable(module="blender_addon")
prefs = bpy.context.preferences.addons["blender_addon"].preferences
prefs.backend_mode, prefs.device, prefs.model_path = "IN_PROCESS", "CPU", ""   # the bundled model
scene = bpy.context.scene
say(step="no_portrait", result=run(bpy.ops.ide3d.export_gltf, filepath=os.path.join(os.getcwd(), "none.glb")))
scene.ide3d.seed = 3
say(step="new", result=run(bpy.ops.ide3d.new_portrait))
scene.ide3d.mesh_resolution = RESOLUTION
out = os.path.join(os.getcwd(), "blender.glb")
r = run(bpy.ops.ide3d.export_gltf, filepath=out, texture_size=TEXTURE, faces=FACES, parts_by_label=True)
say(step="export", result=r, status=scene.ide3d.status)
doc = os.path.join(os.getcwd(), "portrait.ide3d")
say(step="save", result=run(bpy.ops.ide3d.save_portrait, filepath=doc))
scene.ide3d.mesh_resolution = 4
say(step="bad_resolution", result=run(bpy.ops.ide3d.export_gltf, filepath=out + "x.glb"))
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


def test_addon_export_has_labels_texture_and_passes_the_validator(tmp_path, request):
    pytest.importorskip("torch")
    head = f"RESOLUTION, TEXTURE, FACES = {OPTIONS['resolution']}, {OPTIONS['texture']}, {OPTIONS['faces']}\n"
    s = {r.pop("step"): r for r in run_blender(head + EXPORT, tmp_path, timeout=400)}
    ok = [["FINISHED"], ""]
    assert s["no_portrait"]["result"][0] == ["CANCELLED"] and "no portrait" in s["no_portrait"]["result"][1]
    assert s["new"]["result"] == ok, s["new"]
    assert s["export"]["result"] == ok and s["export"]["status"].startswith("exported"), s["export"]
    assert s["save"]["result"] == ok
    # one range, owned by ide3d_core.operations.limits and reported by the backend
    assert s["bad_resolution"]["result"][0] == ["CANCELLED"], s["bad_resolution"]
    assert "mesh resolution must be in 16..1024" in s["bad_resolution"]["result"][1], s["bad_resolution"]

    path = tmp_path / "blender.glb"
    issues = validate(path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]
    doc = glb_json(path)
    from ide3d_core.labels import NAMES

    names = [n["name"] for n in doc["nodes"] if "mesh" in n]
    assert len(names) >= 3 and set(names) <= set(NAMES) and "skin" in names, names  # label parts
    for mesh in doc["meshes"]:
        for prim in mesh["primitives"]:
            assert {"POSITION", "TEXCOORD_0", "_LABEL"} <= set(prim["attributes"]), prim["attributes"]
    assert len({im["bufferView"] for im in doc["images"]}) == 1  # one shared baked texture blob
    assert all("baseColorTexture" in m["pbrMetallicRoughness"] for m in doc["materials"])

    # Each part is the faces of its class (ide3d_core.mesh.attributes.face_labels): every triangle has a
    # vertex whose _LABEL is that class (border vertices keep their own labels).
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(path, force="scene")
    for name, g in scene.geometry.items():
        lab = np.asarray(g.vertex_attributes["_LABEL"]).reshape(-1)
        assert (lab[np.asarray(g.faces)] == NAMES.index(name)).any(axis=1).all(), name
        assert g.visual.material.baseColorTexture.size == (OPTIONS["texture"],) * 2

    # Exactly like `ide3d mesh` on the same document.
    from ide3d_core.cli import main

    cli = tmp_path / "cli.glb"
    import torch

    # One torch thread, as Blender's worker has (blender_helpers.isolated_env): bake and clean-up
    # results depend on the thread count by float rounding, and the comparison below is exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    assert main(["mesh", "--portrait", str(tmp_path / "portrait.ide3d"), "--resolution", str(OPTIONS["resolution"]),
                 "--texture", str(OPTIONS["texture"]), "--faces", str(OPTIONS["faces"]), "--parts", "--quiet",
                 "--out", str(cli)]) == 0
    assert glb_json(cli) == doc
    assert cli.read_bytes() == path.read_bytes()
