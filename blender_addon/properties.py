# SPDX-License-Identifier: GPL-3.0-or-later
"""The scene's IDE-3D state (``scene.ide3d``), saved in the .blend: the user's settings, the visible codes
(``scene.ide3d["ws"]``, flat float array; shape in ``ws_shape``) for display and scripts, and the names
of the image datablocks (canonical preview, mask) in :data:`IMAGE_NAMES`.

The portrait document itself (its bytes, id and revision, its file) is :mod:`.documents`. Nothing here
imports behaviour: Live Edit is switched by an operator (:class:`.live.IDE3D_OT_live_edit`), not by an
update callback.
"""
import bpy
import numpy as np
from bpy.props import BoolProperty, BoolVectorProperty, EnumProperty, FloatProperty, IntProperty, \
    IntVectorProperty, PointerProperty, StringProperty

from ._shared import labels, protocol

#: Names of the image datablocks the add-on writes.
IMAGE_NAMES = {"canonical": "IDE-3D Canonical", "mask": "IDE-3D Mask"}
MESH_NAME = "IDE-3D Head"


class IDE3D_PG_portrait(bpy.types.PropertyGroup):
    has_portrait: BoolProperty(name="Has Portrait", default=False)
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed of a new portrait")
    truncation: FloatProperty(name="Truncation", default=1.0, min=0.0, max=1.0,
                              description="1 = full variety (the bundled model's default: its code prior is fitted "
                                          "to its training heads), 0 = the average face")
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
    mask_refine: BoolProperty(name="Refine", default=True,
                              description="After the editor, fit the head's shape to the painted mask (some "
                                          "seconds, with progress; painted hats and removed hair follow the paint "
                                          "closely). Live edits never refine")
    live_edit: BoolProperty(name="Live Edit", default=False,
                            description="Send the mask to the canonical editor while you paint (latest stroke wins; "
                                        "one history record per painting session)")
    live_fingerprint: StringProperty(name="Live Mask Fingerprint", default="", options={"HIDDEN", "SKIP_SAVE"})
    photo_steps: IntProperty(name="Fit Steps", default=24, min=0, max=5000,
                             description="Code optimisation steps of a photo import")
    photo_tune_steps: IntProperty(name="Tune Steps", default=6, min=0, max=5000,
                                  description="Pivotal tuning steps of a photo import")
    photo_refine_camera: BoolProperty(name="Refine Camera", default=True,
                                      description="Refine each photo's estimated camera (a few degrees) together "
                                                  "with the portrait's codes")
    portrait_id: StringProperty(name="Portrait Id", default="")
    revision: StringProperty(name="Revision", default="")
    document_path: StringProperty(name="Document File", default="", subtype="FILE_PATH")
    history: StringProperty(name="History", default="", description="Kinds of the edit records")
    history_current: IntProperty(name="History Cursor", default=0)
    set_background: BoolProperty(name="Camera Background", default=True,
                                 description="Show the neural render as the camera's background image")
    show_photo: BoolProperty(name="Show Photos", default=True,
                             description="Lay an imported portrait's photos over its camera views where they "
                                         "saw the head (off: the model alone); switched by the Show Photos "
                                         "button, which re-renders the views")
    # The valid ranges are the backend's (ide3d_core.operations.limits.MESH_RESOLUTION and TEXTURE_SIZE), which
    # reports a value outside them; the sliders only suggest the useful range.
    mesh_resolution: IntProperty(name="Resolution", default=128, min=1, soft_min=32, soft_max=512,
                                 description="Voxels per side of the mesh extraction grid")
    mesh_texture: IntProperty(name="Texture Size", default=protocol.MeshRequest.texture, min=0, soft_max=4096,
                              description="Edge in texels of the texture Import Head Mesh bakes onto the "
                                          "mesh's UVs (0 = vertex colours only)")
    status: StringProperty(name="Status", default="")


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


def register():
    bpy.utils.register_class(IDE3D_PG_portrait)
    bpy.types.Scene.ide3d = PointerProperty(type=IDE3D_PG_portrait)


def unregister():
    del bpy.types.Scene.ide3d
    bpy.utils.unregister_class(IDE3D_PG_portrait)
