# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait's state, stored on the scene (``scene.ide3d``) so it is saved in the .blend.

The portrait itself is its ``.ide3d`` document (codes, edit history, restyle, tuned weights): its bytes
are the scene's ID property ``scene["ide3d_document"]`` (:data:`DOCUMENT_KEY`), so the .blend alone
restores it (bpy 4.5 cuts bytes at the first NUL when they *replace* an existing ID property's value,
so the property is deleted and created anew each time); ``portrait_id`` and
``revision`` name it in backend requests. A copy lives as a file in the extension's user folder
(``document_path``, :func:`document_file`), rewritten from the bytes whenever it is missing (a
reopened .blend, another machine), and the worker loads it when its session does not hold that
revision (a restarted worker). The visible codes are also kept as ``scene.ide3d["ws"]`` (flat float
array; shape in ``ws_shape``) for display and scripts; images (canonical preview, mask) are packed image
datablocks named in :data:`IMAGE_NAMES`.
"""
import os

import bpy
import numpy as np
from bpy.props import BoolProperty, BoolVectorProperty, EnumProperty, FloatProperty, IntProperty, \
    IntVectorProperty, PointerProperty, StringProperty

from ._shared import atomic_file, labels

#: Names of the image datablocks the add-on writes.
IMAGE_NAMES = {"canonical": "IDE-3D Canonical", "mask": "IDE-3D Mask"}
MESH_NAME = "IDE-3D Head"
#: The scene ID property holding the portrait document's bytes.
DOCUMENT_KEY = "ide3d_document"


class IDE3D_PG_portrait(bpy.types.PropertyGroup):
    has_portrait: BoolProperty(name="Has Portrait", default=False)
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed of a new portrait")
    truncation: FloatProperty(name="Truncation", default=0.7, min=0.0, max=1.0,
                              description="1 = full variety, 0 = the average face")
    ws_shape: IntVectorProperty(name="Code Shape", size=2, default=(0, 0))
    num_shape_ws: IntProperty(name="Shape Codes", default=0)
    regions: BoolVectorProperty(name="Regions", size=labels.NUM_CLASSES, default=(False,) * labels.NUM_CLASSES,
                                description="Classes that Apply Restyle changes")
    style_seed: IntProperty(name="Style Seed", default=1, min=0, description="Seed of the style source")
    style_source: EnumProperty(name="Style Source", default="SEED", items=(
        ("SEED", "Seed", "The texture of a random portrait (Style Seed)"),
        ("PORTRAIT", "Portrait", "The texture of another portrait document (.ide3d)"),
        ("IMAGE", "Image", "The texture of a face photo (needs the model's standard encoder)")))
    style_portrait: StringProperty(name="Style Portrait", subtype="FILE_PATH", default="",
                                   description="Portrait document (.ide3d) whose texture Apply Restyle uses")
    style_image: StringProperty(name="Style Image", subtype="FILE_PATH", default="",
                                description="Face photo whose texture Apply Restyle uses")
    global_seed: IntProperty(name="Global Style Seed", default=2, min=0,
                             description="Seed whose codes Apply Style moves the portrait toward")
    shape_mix: FloatProperty(name="Shape", default=0.0, min=0.0, max=1.0,
                             description="How far the shape codes move toward the style seed (0 keeps, 1 takes)")
    texture_mix: FloatProperty(name="Texture", default=1.0, min=0.0, max=1.0,
                               description="How far the texture codes move toward the style seed (0 keeps, 1 takes)")
    mask_mode: EnumProperty(name="Edit Mode", default="RESIDUAL", items=(
        ("RESIDUAL", "Residual", "Move the shape codes by what was painted (unedited regions stay)"),
        ("DIRECT", "Direct", "Shape codes from the painted mask alone")))
    live_edit: BoolProperty(name="Live Edit", default=False, update=lambda self, context: _live_toggled(self, context),
                            description="Send the mask to the canonical editor while you paint (latest stroke wins; "
                                        "one history record per painting session)")
    live_fingerprint: StringProperty(name="Live Mask Fingerprint", default="", options={"HIDDEN", "SKIP_SAVE"})
    photo_steps: IntProperty(name="Fit Steps", default=24, min=0, max=5000,
                             description="Code optimisation steps of a photo import")
    photo_tune_steps: IntProperty(name="Tune Steps", default=6, min=0, max=5000,
                                  description="Pivotal tuning steps of a photo import")
    portrait_id: StringProperty(name="Portrait Id", default="")
    revision: StringProperty(name="Revision", default="")
    document_path: StringProperty(name="Document File", default="", subtype="FILE_PATH")
    history: StringProperty(name="History", default="", description="Kinds of the edit records")
    history_current: IntProperty(name="History Cursor", default=0)
    set_background: BoolProperty(name="Camera Background", default=True,
                                 description="Show the neural render as the camera's background image")
    # The valid range is the backend's (ide3d_core.operations.limits.MESH_RESOLUTION), which reports a value
    # outside it; the slider only suggests the useful range.
    mesh_resolution: IntProperty(name="Resolution", default=128, min=1, soft_min=32, soft_max=512,
                                 description="Voxels per side of the mesh extraction grid")
    status: StringProperty(name="Status", default="")


def _live_toggled(state, context) -> None:
    if state.live_edit:
        from . import live

        live.start(state.id_data)


def get_ws(scene) -> np.ndarray | None:
    """(num_ws, w_dim) float32 codes of the scene's portrait, or None."""
    state = scene.ide3d
    if not state.has_portrait or "ws" not in state:
        return None
    return np.asarray(state["ws"], dtype=np.float32).reshape(tuple(state.ws_shape))


def set_ws(scene, ws: np.ndarray, num_shape_ws: int) -> None:
    ws = np.asarray(ws, dtype=np.float32)
    if ws.ndim != 2:
        raise ValueError(f"portrait codes must be (num_ws, w_dim), got {ws.shape}")
    state = scene.ide3d
    state["ws"] = ws.ravel().tolist()
    state.ws_shape = ws.shape
    state.num_shape_ws = int(num_shape_ws)
    state.has_portrait = True


def set_document(scene, document: bytes, portrait_id: str, revision: str, history, current: int) -> None:
    """Store a portrait document's bytes and identity on the scene."""
    state = scene.ide3d
    if DOCUMENT_KEY in scene:
        del scene[DOCUMENT_KEY]  # replacing the value in place would cut it at the first NUL byte
    scene[DOCUMENT_KEY] = bytes(document)
    state.portrait_id, state.revision = portrait_id, revision
    state.history, state.history_current = ",".join(history), int(current)


def get_document(scene) -> bytes | None:
    state = scene.ide3d
    if not state.has_portrait or DOCUMENT_KEY not in scene or not state.portrait_id:
        return None
    return bytes(scene[DOCUMENT_KEY])


def history(scene) -> tuple[list[str], int]:
    """(kinds of the edit records, cursor) of the scene's portrait."""
    state = scene.ide3d
    return [k for k in state.history.split(",") if k], int(state.history_current)


def document_file(scene, folder: str) -> str | None:
    """The path of the scene portrait's document in ``folder``, written there from the bytes in the
    .blend when it is missing; None without a portrait. Sets ``document_path``."""
    data = get_document(scene)
    if data is None:
        return None
    state = scene.ide3d
    path = os.path.join(folder, f"{state.portrait_id}-{state.revision}.ide3d")
    if not os.path.isfile(path) or os.path.getsize(path) != len(data):
        atomic_file.write_atomic(path, data)
    if state.document_path != path:
        state.document_path = path
    return path


def prune_documents(folder: str, portrait_id: str, keep: int = 8) -> list[str]:
    """Delete all but the ``keep`` newest document files of ``portrait_id`` in ``folder``; returns the
    deleted paths. Older revisions are kept a while because requests already queued may name them;
    any revision the .blend (or Blender's undo) brings back is rewritten from its bytes."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(portrait_id + "-") and n.endswith(".ide3d")]
    except OSError:
        return []
    paths = sorted((os.path.join(folder, n) for n in names), key=os.path.getmtime, reverse=True)
    removed = []
    for path in paths[keep:]:
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def register():
    bpy.utils.register_class(IDE3D_PG_portrait)
    bpy.types.Scene.ide3d = PointerProperty(type=IDE3D_PG_portrait)


def unregister():
    del bpy.types.Scene.ide3d
    bpy.utils.unregister_class(IDE3D_PG_portrait)
