# SPDX-License-Identifier: GPL-3.0-or-later
"""Import Head Mesh with a baked texture, in real Blender (a subprocess).

The mesh files come from the backend's own writer (``portrait_handlers.write_mesh_files``) for a head
whose truth is known: an analytic sphere (``ide3d_core.mesh.analytic``) with a smooth colour that is a
function of position, extracted and baked by the same pipeline as ``ide3d mesh`` (the exact ray caster
stands in for the generator's renders and the field's colour is that same function). Blender imports
them through ``apply.mesh``; the checks read Blender's own data back: the texture UV map (in [0, 1]),
the materials' Base Color image node, its image (packed, of the requested edge, surviving a save and
reopen without the PNG), and the texture sampled at the UVs Blender stores compared with the colour
function at the points (vertices and triangle centroids) and with the imported vertex colours. The
operator's one-line error for a bad texture size runs on the in-process stand-in backend.
"""
from __future__ import annotations

import numpy as np
import pytest

from blender_helpers import SCRIPT_HELPERS, requires_bpy, run_blender

pytestmark = [pytest.mark.blender, requires_bpy]

CENTER = (0.02, 0.03, 0.1)
RADIUS = 0.22
EDGE = 256  # texels


def _colour(p):
    """A smooth colour that is a known function of model-world position (torch [N, 3] -> [N, 3])."""
    import torch

    return torch.stack([0.5 + 0.4 * torch.sin(6 * p[:, 0]), 0.5 + 0.4 * torch.cos(5 * p[:, 1]),
                        0.5 + 0.4 * torch.sin(4 * p[:, 2] + 1)], dim=-1)


def _two_class(p):
    import torch

    from ide3d_core.labels import ID

    return torch.where(p[:, 1] > 0.1, ID["hair"], ID["skin"])


def _baked_sphere_files(folder):
    """The MeshResult files of the baked analytic sphere, and the colour function at its vertices and
    triangle centroids (sRGB [0, 1]): the truth."""
    import torch

    from ide3d_core.mesh.analytic import AnalyticField, SphereRenderer, sphere_sdf
    from ide3d_core.mesh.bake import BakeConfig
    from ide3d_core.mesh.cleanup import CleanupConfig
    from ide3d_core.mesh.grid import GridConfig
    from ide3d_core.mesh.pipeline import MeshConfig, extract_head_mesh
    from ide3d_core.service.portrait_handlers import write_mesh_files

    torch.set_num_threads(1)
    field = AnalyticField(sphere_sdf(CENTER, RADIUS), label=_two_class, color=_colour)
    renderer = SphereRenderer(CENTER, RADIUS, _colour, width=128, height=128)
    config = MeshConfig(grid=GridConfig(resolution=48), level=field.level,
                        cleanup=CleanupConfig(target_faces=3000), bake=BakeConfig(texture_size=EDGE))
    mesh = extract_head_mesh(field, config, renderer).mesh
    folder.mkdir(parents=True, exist_ok=True)
    result = write_mesh_files(mesh, folder)
    centroids = mesh.vertices[mesh.faces].mean(1)
    np.save(folder / "truth_vertices.npy", _colour(torch.from_numpy(mesh.vertices)).numpy())
    np.save(folder / "truth_centroids.npy", _colour(torch.from_numpy(centroids)).numpy())
    # the part the frontal bake views see head-on; the rest is seen at grazing angles (a polygon's point
    # there projects onto the sphere a little away from itself) or by none (the field colour alone)
    c = np.asarray(CENTER)
    np.save(folder / "front_vertices.npy", (mesh.vertices - c)[:, 2] / RADIUS > 0.3)
    np.save(folder / "front_faces.npy", (centroids - c)[:, 2] / RADIUS > 0.3)
    return result, mesh


SCRIPT = SCRIPT_HELPERS + """
import os, sys
bpy.ops.preferences.addon_enable(module="blender_addon")
from blender_addon import apply, conversions, properties
from ide3d_core.service import protocol as P
scene = bpy.context.scene

def bilinear(img, uv):
    # (H, W, C) top-first pixels sampled at Blender UVs (origin bottom-left, texel centres at +0.5)
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1); y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0 = np.floor(x).astype(int); y0 = np.floor(y).astype(int)
    x1 = np.minimum(x0 + 1, w - 1); y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[:, None]; fy = (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy

def linear_to_srgb(c):
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)

# 1. The textured import, as the operator applies a backend result.
result = P.MeshResult(MESH, NV, NF, TEXTURE)
message = apply.mesh(scene, True, result)
obj = bpy.data.objects[properties.MESH_NAME]
me = obj.data
nl = len(me.loops)
uv = np.empty(nl * 2, np.float32)
me.uv_layers[conversions.TEXTURE_UV_NAME].data.foreach_get("uv", uv)
uv = uv.reshape(nl, 2)
lv = np.empty(nl, np.int32); me.loops.foreach_get("vertex_index", lv)
col = np.empty(len(me.vertices) * 4, np.float32); me.color_attributes["Col"].data.foreach_get("color", col)
col = linear_to_srgb(col.reshape(-1, 4)[:, :3])
lab = np.empty(len(me.vertices), np.int32); me.attributes["ide3d_label"].data.foreach_get("value", lab)
mats = []
for slot in obj.material_slots:
    nodes = slot.material.node_tree.nodes
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    links = bsdf.inputs["Base Color"].links
    src = links[0].from_node if links else None
    uvnode = src.inputs["Vector"].links[0].from_node if src is not None and src.inputs["Vector"].links else None
    mats.append(dict(name=slot.material.name, src=src.type if src else None,
                     image=src.image.name if src is not None and src.type == "TEX_IMAGE" and src.image else None,
                     uv_map=getattr(uvnode, "uv_map", None)))
img = bpy.data.images[conversions.TEXTURE_IMAGE_NAME]
pixels = conversions.array_from_image(img)[..., :3].astype(np.float64) / 255.0
folder = os.path.dirname(MESH)
truth_v = np.load(os.path.join(folder, "truth_vertices.npy"))
truth_c = np.load(os.path.join(folder, "truth_centroids.npy"))
front_v = np.load(os.path.join(folder, "front_vertices.npy"))[lv]
front_c = np.load(os.path.join(folder, "front_faces.npy"))
at_vertices = bilinear(pixels, uv)                     # one sample per loop (corner)
err_all = np.abs(at_vertices - truth_v[lv]).max(1)
err_v = err_all[front_v]
err_col = np.abs(at_vertices - col[lv]).max(1)[front_v]
uv_c = uv.reshape(-1, 3, 2).mean(1)                    # triangle centroids: inside the charts
err_c_all = np.abs(bilinear(pixels, uv_c) - truth_c).max(1)
err_c = err_c_all[front_c]
say(step="textured", message=message, polygons=len(me.polygons), vertices=len(me.vertices),
    uv_layers=[l.name for l in me.uv_layers], render_uv=next(l.name for l in me.uv_layers if l.active_render),
    uv_min=float(uv.min()), uv_max=float(uv.max()), mats=mats, size=list(img.size), packed=img.packed_file is not None,
    colorspace=img.colorspace_settings.name, labels=sorted(set(lab.tolist())),
    err_v_mean=float(err_v.mean()), err_v_p99=float(np.percentile(err_v, 99)),
    err_col_mean=float(err_col.mean()), err_col_p99=float(np.percentile(err_col, 99)),
    err_all_mean=float(err_all.mean()), err_c_all_mean=float(err_c_all.mean()), front=[len(err_v), len(err_c)],
    err_c_mean=float(err_c.mean()), err_c_p99=float(np.percentile(err_c, 99)), err_c_max=float(err_c.max()))

# 2. Portable: saved, the PNG gone, reopened: the packed texture is still there.
path = os.path.join(os.getcwd(), "head.blend")
bpy.ops.wm.save_as_mainfile(filepath=path)
os.remove(TEXTURE)
bpy.ops.wm.open_mainfile(filepath=path)
img = bpy.data.images[conversions.TEXTURE_IMAGE_NAME]
again = conversions.array_from_image(img)[..., :3].astype(np.float64) / 255.0
say(step="reopen", size=list(img.size), same=bool(np.array_equal(again, pixels)))

# 3. A result without a texture: vertex colours only, as before.
scene = bpy.context.scene
message = apply.mesh(scene, False, P.MeshResult(PLAIN, NV_PLAIN, NF_PLAIN))
obj = bpy.data.objects[properties.MESH_NAME]
nodes = obj.material_slots[0].material.node_tree.nodes
bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
say(step="plain", uv_layers=[l.name for l in obj.data.uv_layers], slots=len(obj.material_slots),
    src=bsdf.inputs["Base Color"].links[0].from_node.type, has_col="Col" in obj.data.color_attributes)

# 4. The operator with a bad texture size on the in-process stand-in backend: one line, no crash.
import blender_helpers
blender_helpers.install_sphere_networks(resolution=32)
prefs = bpy.context.preferences.addons["blender_addon"].preferences
prefs.backend_mode, prefs.device, prefs.model_path = "IN_PROCESS", "CPU", "config:tiny"
bpy.data.objects.remove(obj)
r_new = run(bpy.ops.ide3d.new_portrait)
scene.ide3d.mesh_texture = 5
default = properties.IDE3D_PG_portrait.__annotations__["mesh_texture"].keywords["default"]
say(step="bad_size", new=r_new, default=default, result=run(bpy.ops.ide3d.import_mesh),
    has=properties.MESH_NAME in bpy.data.objects)
bpy.ops.preferences.addon_disable(module="blender_addon")
"""


def test_import_head_mesh_carries_the_baked_texture(tmp_path):
    from ide3d_core.service import protocol as P

    result, mesh = _baked_sphere_files(tmp_path / "textured")
    # the backend's files: per-vertex UVs in the npz, the texture PNG of the requested edge beside it
    data = np.load(result.mesh_file)
    assert set(data) == {"vertices", "faces", "colors", "labels", "uv"}
    assert data["uv"].shape == (result.num_vertices, 2) and result.texture_file.endswith(".png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(result.texture_file)), mesh.texture)
    plain = mesh.with_(uv=None, texture=None)
    from ide3d_core.service.portrait_handlers import write_mesh_files

    plain_result = write_mesh_files(plain, tmp_path / "plain")
    assert plain_result.texture_file == "" and "uv" not in np.load(plain_result.mesh_file)
    assert P.decode(P.encode(P.ResponseMessage(1, "mesh", result))).result == result

    head = (f"MESH = {result.mesh_file!r}\nTEXTURE = {result.texture_file!r}\nNV = {result.num_vertices}\n"
            f"NF = {result.num_faces}\nPLAIN = {plain_result.mesh_file!r}\nNV_PLAIN = {plain_result.num_vertices}\n"
            f"NF_PLAIN = {plain_result.num_faces}\n")
    s = {r.pop("step"): r for r in run_blender(head + SCRIPT, tmp_path, timeout=240)}

    t = s["textured"]
    assert t["message"].endswith(f"{EDGE} px texture") and t["polygons"] == result.num_faces, t
    assert t["vertices"] == result.num_vertices  # the seam-split vertices arrive as they are
    assert t["uv_layers"][0] == "IDE-3D Texture" and t["render_uv"] == "IDE-3D Texture", t
    assert 0.0 <= t["uv_min"] and t["uv_max"] <= 1.0, t
    # every label part's material shows the texture through the texture UV map
    assert len(t["mats"]) == 2 and {m["name"] for m in t["mats"]} == {"IDE-3D Skin Textured", "IDE-3D Hair Textured"}
    for m in t["mats"]:
        assert m == dict(name=m["name"], src="TEX_IMAGE", image="IDE-3D Head Texture", uv_map="IDE-3D Texture"), m
    assert t["size"] == [EDGE, EDGE] and t["packed"] and t["colorspace"] == "sRGB", t
    assert t["labels"] == [1, 13]  # skin, hair: the label attribute is kept
    # The texture at the UVs Blender holds is the colour function there (independent truth), and the
    # vertex colours the same mesh carries. Bounds as tests/test_mesh_bake.py's: vertices straddle chart
    # borders (bilinear look-ups there mix in gutter texels), centroids lie inside the charts; strict on
    # the front, on average everywhere.
    assert t["front"][0] > 1000 and t["front"][1] > 500, t
    assert t["err_v_mean"] < 0.01 and t["err_v_p99"] < 0.03, t
    assert t["err_col_mean"] < 0.01 and t["err_col_p99"] < 0.03, t
    assert t["err_c_mean"] < 0.01 and t["err_c_p99"] < 0.03 and t["err_c_max"] < 0.04, t
    assert t["err_all_mean"] < 0.01 and t["err_c_all_mean"] < 0.01, t
    assert s["reopen"] == dict(size=[EDGE, EDGE], same=True)
    p = s["plain"]
    assert p == dict(uv_layers=[], slots=1, src="ATTRIBUTE", has_col=True), p
    b = s["bad_size"]
    assert b["new"] == [["FINISHED"], ""] and b["default"] == P.MeshRequest.texture == 1024, b
    state, message = b["result"]
    assert state == ["CANCELLED"] and message.startswith("Error: ") and "\n" not in message, b
    assert "texture size must be in 64..8192 or 0 for none" in message and not b["has"], b
