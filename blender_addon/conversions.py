# SPDX-License-Identifier: GPL-3.0-or-later
"""numpy <-> Blender data: images, cameras and meshes. No other module touches pixels or vertices.

* Images: numpy arrays are (H, W, C) uint8 with the **top row first** (PIL/PNG order); Blender image
  buffers are float RGBA with the **bottom row first**, so rows are flipped here and nowhere else.
* Cameras: the numbers of a Blender camera object + the scene's render settings are read into
  :class:`cameras.BlenderCamera` and converted by the project's camera module (the only place with
  the Blender <-> OpenCV flip and the model <-> Blender world mapping).
* Meshes: model-world vertices are mapped to Blender world with ``cameras.model_points_to_blender``,
  so an imported head lines up with neural renders from any Blender camera.
"""
import os

import bpy
import mathutils
import numpy as np

from ._shared import atomic_file, cameras, labels


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def image_from_array(name: str, pixels: np.ndarray, pack: bool = True, non_color: bool = False):
    """Create (or overwrite) byte image ``name`` from (H, W, 3|4) uint8 top-first pixels.

    The colour space is set before the pixels are written (changing it afterwards regenerates a
    generated image and loses them); the image is packed and gets a fake user so it survives saving
    the .blend even when nothing displays it."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise ValueError(f"image pixels must be (H, W, 3|4) uint8, got {arr.shape} {arr.dtype}")
    h, w = arr.shape[:2]
    img = bpy.data.images.get(name)
    if img is not None and (tuple(img.size) != (w, h) or img.is_float):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=True, float_buffer=False)
    img.colorspace_settings.name = "Non-Color" if non_color else "sRGB"
    rgba = np.full((h, w, 4), 255, np.uint8)
    rgba[..., :arr.shape[2]] = arr
    img.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
    img.update()
    if pack:
        img.pack()
        img.use_fake_user = True
    return img


def image_from_png(name: str, path: str):
    """Load the sRGB PNG ``path`` as image ``name``, packed into the .blend (the file may be a temporary
    one). An image of that name already there is replaced: its users (material nodes) get the new one."""
    img = bpy.data.images.load(path, check_existing=False)
    try:
        img.colorspace_settings.name = "sRGB"
        img.pack()
    except Exception:
        bpy.data.images.remove(img)
        raise
    old = bpy.data.images.get(name)
    if old is not None and old != img:
        old.user_remap(img)
        bpy.data.images.remove(old)
    img.name = name
    return img


def array_from_image(img) -> np.ndarray:
    """(H, W, 4) uint8 top-first pixels of a Blender image (byte values as stored)."""
    w, h = img.size
    buf = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(buf)
    return np.round(buf * 255.0).clip(0, 255).astype(np.uint8).reshape(h, w, 4)[::-1].copy()


def load_png(path: str) -> np.ndarray:
    """(H, W, 4) uint8 top-first pixels of a PNG file, read with Blender (no PIL in Blender)."""
    img = bpy.data.images.load(path, check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"
        return array_from_image(img)
    finally:
        bpy.data.images.remove(img)


def load_label_png(path: str) -> np.ndarray:
    """(H, W) uint8 class ids of a single-channel label PNG."""
    ids = load_png(path)[..., 0]
    if ids.max(initial=0) >= labels.NUM_CLASSES:
        raise ValueError(f"{os.path.basename(path)} holds ids >= {labels.NUM_CLASSES}: not a label image")
    return ids


def snap_mask_image(img) -> np.ndarray:
    """Read a painted mask back, snap every pixel to the label palette (labels.decode_colors) and write
    the snapped colours back. Returns the (H, W) uint8 class ids."""
    ids = labels.decode_colors(array_from_image(img)[..., :3])
    rgba = np.full(ids.shape + (4,), 255, np.uint8)
    rgba[..., :3] = labels.colorize(ids)
    img.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
    img.update()
    if img.packed_file is not None or img.source == "GENERATED":
        img.pack()
    return ids


# ----------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------

def blender_camera(obj, scene) -> "cameras.BlenderCamera":
    """The projection-relevant numbers of camera object ``obj`` rendered with ``scene``'s settings."""
    if obj is None or obj.type != "CAMERA":
        raise ValueError("a camera object is needed")
    cam, r = obj.data, scene.render
    if cam.type != "PERSP":
        raise ValueError(f"camera {obj.name!r} is {cam.type.lower()}; only perspective cameras are supported")
    return cameras.BlenderCamera(
        matrix_world=np.array(obj.matrix_world, dtype=np.float64), lens=cam.lens,
        sensor_width=cam.sensor_width, sensor_height=cam.sensor_height, sensor_fit=cam.sensor_fit,
        shift_x=cam.shift_x, shift_y=cam.shift_y, resolution_x=r.resolution_x, resolution_y=r.resolution_y,
        resolution_percentage=r.resolution_percentage, pixel_aspect_x=r.pixel_aspect_x,
        pixel_aspect_y=r.pixel_aspect_y)


def camera_label(obj, scene) -> tuple[np.ndarray, int, int]:
    """(25-float label, width, height) of a Blender camera object for ``scene``."""
    cam, w, h = cameras.camera_from_blender(blender_camera(obj, scene))
    return cam.label(), w, h


def apply_blender_camera(obj, scene, bc: "cameras.BlenderCamera") -> None:
    """Set camera object ``obj`` and ``scene``'s render settings from ``bc``."""
    obj.matrix_world = mathutils.Matrix(np.asarray(bc.matrix_world, dtype=np.float64).tolist())
    cam, r = obj.data, scene.render
    cam.type = "PERSP"
    cam.lens, cam.sensor_width, cam.sensor_height = bc.lens, bc.sensor_width, bc.sensor_height
    cam.sensor_fit, cam.shift_x, cam.shift_y = bc.sensor_fit, bc.shift_x, bc.shift_y
    r.resolution_x, r.resolution_y = bc.resolution_x, bc.resolution_y
    r.resolution_percentage = bc.resolution_percentage
    r.pixel_aspect_x, r.pixel_aspect_y = bc.pixel_aspect_x, bc.pixel_aspect_y


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------

CANONICAL_UV_NAME = "IDE-3D Canonical"
#: The UV map of the baked texture (the backend's unwrap) and the name of the texture image.
TEXTURE_UV_NAME = "IDE-3D Texture"
TEXTURE_IMAGE_NAME = "IDE-3D Head Texture"


def canonical_uv(vertices: np.ndarray) -> np.ndarray:
    """(V, 2) Blender UVs of model-world vertices: their projection into the canonical camera.

    ``u = x / W``, ``v = 1 - y / H`` (Blender's UV origin is the image's bottom-left), so a point lands on
    the pixel of the canonical-view mask image that the canonical camera sees it in."""
    uv, _ = cameras.canonical_camera().project(np.asarray(vertices, np.float64), 1, 1)
    return np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)


def mesh_object(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None,
                vertex_labels: np.ndarray | None = None, collection=None, parts_by_label: bool = True,
                mask_image=None, uv: np.ndarray | None = None, texture_image=None):
    """Create (or replace) mesh object ``name`` from model-world arrays.

    Args:
        vertices: (V, 3) model-world positions (converted to Blender metres, Z up).
        faces: (F, 3) vertex indices.
        colors: (V, 3) sRGB in [0, 1] -> POINT FLOAT_COLOR attribute "Col" (stored linear, as
            Blender's float colours are).
        vertex_labels: (V,) class ids -> INT attribute "ide3d_label" (POINT); with ``parts_by_label``
            each face gets the material slot of its first vertex's label.
        mask_image: the canonical-view mask image. When given, the mesh gets the UV map
            :data:`CANONICAL_UV_NAME` (:func:`canonical_uv`) and every material an active, unlinked
            image node holding the mask, so Texture Paint strokes on the head land in the mask.
        uv: (V, 2) per-vertex UVs of the baked texture (u right, v up, origin bottom-left: Blender's
            convention), with ``texture_image`` (a Blender image): the UV map :data:`TEXTURE_UV_NAME`
            (the render UV map) and materials whose Base Color is an image node of the texture (on the
            label materials' "Textured" twins); the vertex colours and labels are kept all the same.
    """
    v = cameras.model_points_to_blender(np.asarray(vertices, np.float64)).astype(np.float32)
    f = np.asarray(faces, np.int32)
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError("faces must be (F, 3) indices into the vertices")
    if (uv is None) != (texture_image is None):
        raise ValueError("uv and texture_image come together")
    if uv is not None:
        uv = np.asarray(uv, np.float32)
        if uv.shape != (len(v), 2):
            raise ValueError(f"uv must be (V, 2) = ({len(v)}, 2), got {uv.shape}")
    old = bpy.data.objects.get(name)
    if old is not None:
        bpy.data.objects.remove(old)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(v))
    me.vertices.foreach_set("co", v.ravel())
    me.loops.add(f.size)
    me.loops.foreach_set("vertex_index", f.ravel())
    me.polygons.add(len(f))
    me.polygons.foreach_set("loop_start", np.arange(0, f.size, 3, dtype=np.int32))
    me.update(calc_edges=True)

    def material(base: str, display_rgb=None):
        if texture_image is None:
            return _vertex_color_material(base, display_rgb)
        return _texture_material(base + " Textured", texture_image, display_rgb)
    me.materials.append(material("IDE-3D Head"))
    if colors is not None:
        c = np.ones((len(v), 4), np.float32)
        c[:, :3] = srgb_to_linear(np.asarray(colors, np.float32))
        attr = me.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", c.ravel())
        me.color_attributes.active_color = attr
        me.color_attributes.render_color_index = me.color_attributes.active_color_index
    if vertex_labels is not None:
        lab = np.asarray(vertex_labels, np.int32)
        me.attributes.new("ide3d_label", "INT", "POINT").data.foreach_set("value", lab)
        if parts_by_label and len(f):
            present = sorted(set(lab[f[:, 0]].tolist()))
            slot = {cid: i for i, cid in enumerate(present)}
            me.materials.clear()
            for cid in present:
                me.materials.append(material(f"IDE-3D {labels.DISPLAY_NAMES[cid]}", labels.PALETTE[cid]))
            me.polygons.foreach_set("material_index", np.array([slot[c] for c in lab[f[:, 0]]], np.int32))
    if uv is not None:
        tex_layer = me.uv_layers.new(name=TEXTURE_UV_NAME)
        tex_layer.data.foreach_set("uv", uv[f.ravel()].ravel())
        tex_layer.active_render = True
    if mask_image is not None:
        uv_layer = me.uv_layers.new(name=CANONICAL_UV_NAME)
        uv_layer.data.foreach_set("uv", canonical_uv(vertices)[f.ravel()].ravel())
        me.uv_layers.active = uv_layer  # the one Texture Paint and the UV editor show, as without a texture
        for mat in me.materials:
            _add_paint_slot(mat, mask_image)
    me.validate()
    obj = bpy.data.objects.new(name, me)
    (collection or bpy.context.scene.collection).objects.link(obj)
    return obj


def _add_paint_slot(mat, image) -> None:
    """An image node (nearest sampling, canonical UVs) made the material's active node: Texture Paint
    paints into the active image node's image. It is not linked, so renders keep the vertex colours."""
    nodes = mat.node_tree.nodes
    tex = next((n for n in nodes if n.type == "TEX_IMAGE" and n.name == "IDE-3D Mask"), None)
    if tex is None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = "IDE-3D Mask"
        uv = nodes.new("ShaderNodeUVMap")
        uv.uv_map = CANONICAL_UV_NAME
        mat.node_tree.links.new(uv.outputs["UV"], tex.inputs["Vector"])
    tex.image, tex.interpolation = image, "Closest"
    nodes.active = tex


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), element-wise on [0, 1] values."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _vertex_color_material(name: str, display_rgb=None):
    mat = bpy.data.materials.get(name)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(name)
    if display_rgb is not None:
        mat.diffuse_color = (*[c / 255.0 for c in display_rgb], 1.0)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    attr = nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "Col"
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _texture_material(name: str, image, display_rgb=None):
    """Material ``name`` (made once, reused) whose Base Color is the image node "IDE-3D Texture" reading
    ``image`` through the UV map :data:`TEXTURE_UV_NAME`; the node's image is set on every call."""
    mat = bpy.data.materials.get(name)
    if mat is None:
        mat = bpy.data.materials.new(name)
        if display_rgb is not None:
            mat.diffuse_color = (*[c / 255.0 for c in display_rgb], 1.0)
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = next((n for n in nodes if n.type == "TEX_IMAGE" and n.name == "IDE-3D Texture"), None)
    if tex is None:
        bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = "IDE-3D Texture"
        uv = nodes.new("ShaderNodeUVMap")
        uv.uv_map = TEXTURE_UV_NAME
        links.new(uv.outputs["UV"], tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    tex.image = image
    return mat


def write_label_png(path: str, ids: np.ndarray) -> None:
    """Write (H, W) uint8 class ids as an 8-bit greyscale PNG (exact bytes; no colour management)."""
    import struct
    import zlib

    arr = np.ascontiguousarray(ids, dtype=np.uint8)
    if arr.ndim != 2:
        raise ValueError(f"label image must be (H, W), got {arr.shape}")
    h, w = arr.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), arr], axis=1).tobytes()  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    atomic_file.write_atomic(path, png)  # the backend reads this file: never a half-written one
