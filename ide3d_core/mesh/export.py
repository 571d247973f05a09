# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing :class:`HeadMesh` values as .glb, .obj (+ .mtl + texture) and .ply through trimesh.

Frames: glTF wants +Y up, the asset's front facing +Z, metres. The model world already has y up and
the face toward +z, so the only conversion is the scale ``ide3d_core.cameras.METRES_PER_UNIT``
(0.5 m per unit); no axis is flipped. OBJ and PLY files use the same frame and scale.

Per-vertex labels go to glTF as the application-specific attribute ``_LABEL`` (float, class id;
glTF allows custom attributes with a leading underscore) and to PLY as the vertex property ``label``.
With ``parts=True`` the glTF holds one mesh node per class present, mesh and material named after the
class (``ide3d_core.labels.NAMES``), all sharing one texture image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from ide3d_core.atomic_file import write_atomic, write_text_atomic
from ide3d_core.cameras import METRES_PER_UNIT
from ide3d_core.images import unit_to_uint8
from ide3d_core.labels import NAMES
from ide3d_core.mesh.attributes import split_by_label
from ide3d_core.mesh.types import HeadMesh

PathLike = Union[str, Path]


def _material(name: str, texture_image=None):
    from trimesh.visual.material import PBRMaterial

    return PBRMaterial(name=name, baseColorFactor=[255, 255, 255, 255], baseColorTexture=texture_image,
                       metallicFactor=0.0, roughnessFactor=0.8, doubleSided=False)


def to_trimesh(mesh: HeadMesh, name: str = "head", texture_image=None):
    """A ``trimesh.Trimesh`` in metres: textured (PBR material ``name``) when the mesh has UVs,
    otherwise vertex-coloured with a plain material ``name``; labels as vertex attribute ``_LABEL``."""
    import trimesh
    from PIL import Image

    verts = mesh.vertices.astype(np.float64) * METRES_PER_UNIT
    tm = trimesh.Trimesh(verts, mesh.faces, process=False)
    if mesh.uv is not None:
        img = texture_image if texture_image is not None else Image.fromarray(mesh.texture)
        tm.visual = trimesh.visual.TextureVisuals(uv=mesh.uv, material=_material(name, img))
    else:
        tm.visual = trimesh.visual.TextureVisuals(material=_material(name))
        if mesh.colors is not None:
            rgb = unit_to_uint8(mesh.colors)
            tm.visual.vertex_attributes["color"] = np.concatenate([rgb, np.full((mesh.num_vertices, 1), 255, np.uint8)], 1)
    if mesh.labels is not None:
        tm.vertex_attributes["_LABEL"] = mesh.labels.astype(np.float32)
    return tm


def to_scene(mesh: HeadMesh, parts: bool = False):
    """A ``trimesh.Scene``: one node ``head``, or with ``parts`` one node per class (needs labels)."""
    import trimesh
    from PIL import Image

    scene = trimesh.Scene()
    if not parts:
        scene.add_geometry(to_trimesh(mesh, "head"), geom_name="head", node_name="head")
        return scene
    if mesh.labels is None:
        raise ValueError("splitting into parts needs vertex labels")
    shared = Image.fromarray(mesh.texture) if mesh.texture is not None else None
    for name, part in split_by_label(mesh).items():
        scene.add_geometry(to_trimesh(part, name, shared), geom_name=name, node_name=name)
    return scene


def export_glb(mesh: HeadMesh, path: PathLike, parts: bool = False) -> Path:
    """Write a binary glTF (see the module docstring). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_scene(mesh, parts).export(file_type="glb")
    write_atomic(path, data)
    return path


def export_obj(mesh: HeadMesh, path: PathLike) -> list[Path]:
    """Write ``path`` (.obj) and, for a textured mesh, ``<stem>.mtl`` and ``<stem>.png`` beside it;
    an untextured mesh gets vertex colours (the common ``v x y z r g b`` extension). Returns the files."""
    from trimesh.exchange.obj import export_obj as _export

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tm = to_trimesh(mesh, path.stem)
    if mesh.uv is None:
        if mesh.colors is not None:
            import trimesh

            tm.visual = trimesh.visual.ColorVisuals(tm, vertex_colors=unit_to_uint8(mesh.colors))
        text = _export(tm, include_texture=False, include_normals=False)
        write_text_atomic(path, text)
        return [path]
    text, files = _export(tm, include_texture=True, include_normals=False, return_texture=True,
                          mtl_name=f"{path.stem}.mtl")
    written = []
    for fname, blob in files.items():  # material and texture first: a new .obj never names missing files
        target = path.parent / fname
        write_atomic(target, blob)
        written.append(target)
    write_text_atomic(path, text)
    return [path] + written


def export_ply(mesh: HeadMesh, path: PathLike) -> Path:
    """Write a binary PLY with vertex colours (uchar red/green/blue/alpha) and ``label`` (uchar)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = mesh.vertices.astype(np.float32) * METRES_PER_UNIT
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    cols = [v[:, 0], v[:, 1], v[:, 2]]
    if mesh.colors is not None:
        rgb = unit_to_uint8(mesh.colors)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        cols += [rgb[:, 0], rgb[:, 1], rgb[:, 2]]
    if mesh.labels is not None:
        fields.append(("label", "u1"))
        cols.append(mesh.labels)
    vert = np.empty(mesh.num_vertices, dtype=fields)
    for (name, _), c in zip(fields, cols):
        vert[name] = c
    face = np.empty(mesh.num_faces, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = mesh.faces
    ply_types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0",
              "comment IDE-3D Portrait Studio head mesh; metres, +y up, face toward +z",
              f"comment labels: {' '.join(f'{i}={n}' for i, n in enumerate(NAMES))}",
              f"element vertex {mesh.num_vertices}"]
    header += [f"property {ply_types[t]} {n}" for n, t in fields]
    header += [f"element face {mesh.num_faces}", "property list uchar int vertex_indices", "end_header"]
    write_atomic(path, ("\n".join(header) + "\n").encode("ascii") + vert.tobytes() + face.tobytes())
    return path


def export_mesh(mesh: HeadMesh, path: PathLike, parts: bool = False) -> list[Path]:
    """Write by suffix: .glb, .obj or .ply. Raises ``ValueError`` for any other suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if parts and suffix != ".glb":
        raise ValueError("label parts are written to .glb files only")
    if suffix == ".glb":
        return [export_glb(mesh, path, parts)]
    if suffix == ".obj":
        return export_obj(mesh, path)
    if suffix == ".ply":
        return [export_ply(mesh, path)]
    raise ValueError(f"unsupported mesh format {path.suffix!r}; use .glb, .obj or .ply")
