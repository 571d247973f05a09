# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait's state, stored on the scene (``scene.ide3d``) so it is saved in the .blend.

The latent codes live as an ID property ``scene.ide3d["ws"]`` (flat float array; shape in ``ws_shape``);
images (canonical preview, mask) are packed image datablocks named in :data:`IMAGE_NAMES`.
"""
import bpy
import numpy as np
from bpy.props import BoolProperty, BoolVectorProperty, FloatProperty, IntProperty, IntVectorProperty, \
    PointerProperty, StringProperty

from ._shared import labels

#: Names of the image datablocks the add-on writes.
IMAGE_NAMES = {"canonical": "IDE-3D Canonical", "mask": "IDE-3D Mask"}
MESH_NAME = "IDE-3D Head"


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
    set_background: BoolProperty(name="Camera Background", default=True,
                                 description="Show the neural render as the camera's background image")
    mesh_resolution: IntProperty(name="Resolution", default=128, min=32, max=512,
                                 description="Voxels per side of the mesh extraction grid")
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
