# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the "IDE-3D" sidebar tab. Backend work goes through :class:`jobs.BackendOperator`
(modal with Esc to cancel in the UI, synchronous in scripts); the rest is local Blender work."""
import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import apply, conversions, documents, jobs, runtime
from ._shared import atomic_file, labels, protocol as P
from .errors import UserError
from .jobs import BackendOperator
from .properties import IMAGE_NAMES

PALETTE_NAME = "IDE-3D Labels"


# ----------------------------------------------------------------------------------------------
# Backend
# ----------------------------------------------------------------------------------------------

class IDE3D_OT_check_backend(BackendOperator, bpy.types.Operator):
    """Start the backend and show its Python, torch version, device and model status"""
    bl_idname = "ide3d.check_backend"
    bl_label = "Check Backend"

    def plan(self, context, client):
        def show(scene, r):
            text = (f"torch {r.torch_version} on {r.device} (CUDA available: {'yes' if r.cuda_available else 'no'})\n"
                    f"Python {r.python}\nModel: {r.model}: {r.model_status}")
            prefs = runtime.preferences(bpy.context)
            if prefs is not None:
                prefs.backend_status = text
            return text.split("\n")[0] + f"; model: {r.model_status}"
        return [(P.PingRequest(), show)]


# ----------------------------------------------------------------------------------------------
# Portrait
# ----------------------------------------------------------------------------------------------

class IDE3D_OT_new_portrait(BackendOperator, bpy.types.Operator):
    """Generate a new portrait from the seed and truncation"""
    bl_idname = "ide3d.new_portrait"
    bl_label = "New Portrait"
    bl_options = {"REGISTER", "UNDO"}

    def plan(self, context, client):
        state = context.scene.ide3d
        return [(P.NewPortraitRequest(seed=state.seed, truncation=state.truncation), apply.portrait)]


class IDE3D_OT_open_portrait(ImportHelper, BackendOperator, bpy.types.Operator):
    """Open a portrait document (.ide3d)"""
    bl_idname = "ide3d.open_portrait"
    bl_label = "Open Portrait"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".ide3d"
    filter_glob: StringProperty(default="*.ide3d", options={"HIDDEN"})

    def plan(self, context, client):
        path = bpy.path.abspath(self.filepath)
        if not os.path.isfile(path):
            raise UserError(f"no such file: {self.filepath}")
        return [(P.OpenDocumentRequest(path=path), apply.portrait)]


class IDE3D_OT_save_portrait(bpy.types.Operator, ExportHelper):
    """Save the portrait as a document (.ide3d): codes, edit history, restyle and tuned weights"""
    bl_idname = "ide3d.save_portrait"
    bl_label = "Save Portrait"
    filename_ext = ".ide3d"
    filter_glob: StringProperty(default="*.ide3d", options={"HIDDEN"})

    def execute(self, context):
        # The scene already holds the document's bytes, exactly as the backend wrote them.
        data = documents.get_document(context.scene)
        if data is None:
            self.report({"ERROR"}, "no portrait yet: make one with New Portrait first")
            return {"CANCELLED"}
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".ide3d")
        try:
            atomic_file.write_atomic(path, data)
        except OSError as exc:
            self.report({"ERROR"}, f"cannot write {path}: {exc.strerror or exc}")
            return {"CANCELLED"}
        context.scene.ide3d.status = f"saved {path}"
        self.report({"INFO"}, context.scene.ide3d.status)
        return {"FINISHED"}


class IDE3D_OT_import_photo(ImportHelper, BackendOperator, bpy.types.Operator):
    """Make a portrait from one or more photos of one head (select several: front, three-quarter, profile):
    face detection, alignment, pose, mask, then one inversion of all of them (Esc cancels)"""
    bl_idname = "ide3d.import_photo"
    bl_label = "Import Photos"
    bl_options = {"REGISTER", "UNDO"}
    filter_glob: StringProperty(default="*.png;*.jpg;*.jpeg;*.webp;*.bmp;*.tif;*.tiff", options={"HIDDEN"})
    # the file browser fills these when several files are selected
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        # Called after the file browser: inversion is long, so run modally with a progress bar.
        if context.window is not None and not bpy.app.background:
            return BackendOperator.invoke(self, context, None)
        return BackendOperator.execute(self, context)

    def plan(self, context, client):
        names = [f.name for f in self.files if f.name] if self.directory else []
        paths = ([bpy.path.abspath(os.path.join(self.directory, n)) for n in names] if names
                 else [bpy.path.abspath(self.filepath)])
        for path in paths:
            if not os.path.isfile(path):
                raise UserError(f"no such file: {path}")
        state = context.scene.ide3d
        return [(P.InvertRequest(photo_file=paths[0], steps=state.photo_steps, tune_steps=state.photo_tune_steps,
                                 more_photo_files=tuple(paths[1:]), refine_camera=state.photo_refine_camera),
                 apply.portrait)]


class IDE3D_OT_history(BackendOperator, bpy.types.Operator):
    """Step back (undo) or forward (redo) one portrait edit"""
    bl_idname = "ide3d.history"
    bl_label = "Portrait Undo/Redo"
    bl_options = {"REGISTER", "UNDO"}

    step: IntProperty(name="Step", default=-1, min=-1, max=1, description="-1 undo, +1 redo")

    @classmethod
    def description(cls, context, props):
        return "Undo the last portrait edit" if props.step < 0 else "Redo the next portrait edit"

    def plan(self, context, client):
        if self.step not in (-1, 1):
            raise UserError("step must be -1 (undo) or +1 (redo)")
        kinds, current = documents.history(context.scene)
        if self.step < 0 and current <= 0:
            raise UserError("nothing to undo")
        if self.step > 0 and current >= len(kinds) - 1:
            raise UserError("nothing to redo")
        return [(P.HistoryRequest(step=self.step, **documents.portrait_ref(context)), apply.portrait)]


# ----------------------------------------------------------------------------------------------
# Mask painting
# ----------------------------------------------------------------------------------------------

def label_palette():
    """The palette datablock of the 19 labels (sRGB display colours), created once."""
    pal = bpy.data.palettes.get(PALETTE_NAME)
    if pal is None or len(pal.colors) != labels.NUM_CLASSES:
        if pal is not None:
            bpy.data.palettes.remove(pal)
        pal = bpy.data.palettes.new(PALETTE_NAME)
        for rgb in labels.PALETTE:
            pal.colors.new().color = [c / 255.0 for c in rgb]
    return pal


def _set_if_present(obj, settings: dict) -> list[str]:
    done = []
    for name, value in settings.items():
        if obj is not None and hasattr(obj, name):
            try:
                setattr(obj, name, value)
                done.append(name)
            except (TypeError, AttributeError, ValueError):
                pass
    return done


def apply_label_brush(tool_settings) -> list[str]:
    """Settings that keep painted labels exact (no anti-aliasing, constant falloff, full strength, no
    dithering, nearest sampling), set defensively: property names differ between Blender 4.5 and 5.0
    and the active brush may be missing. Returns the names that were set."""
    ip = tool_settings.image_paint
    done = _set_if_present(ip, {"dither": 0.0, "interpolation": "CLOSEST", "use_normal_falloff": False})
    ip.palette = label_palette()
    done.append("palette")
    brush = getattr(ip, "brush", None)
    done += _set_if_present(brush, {"use_paint_antialiasing": False, "strength": 1.0, "blend": "MIX",
                                    "use_pressure_strength": False, "use_pressure_size": False,
                                    "curve_distance_falloff_preset": "CONSTANT", "curve_preset": "CONSTANT"})
    return done


class IDE3D_OT_paint_mask(bpy.types.Operator):
    """Open the canonical-view label mask for painting, with the label palette and a label brush"""
    bl_idname = "ide3d.paint_mask"
    bl_label = "Paint Canonical Mask"

    def execute(self, context):
        img = bpy.data.images.get(IMAGE_NAMES["mask"])
        if img is None:
            self.report({"ERROR"}, "no mask yet: make a portrait first")
            return {"CANCELLED"}
        applied = apply_label_brush(context.scene.tool_settings)
        opened = False
        if not bpy.app.background and context.window is not None:
            area = next((a for a in context.screen.areas if a.type == "IMAGE_EDITOR"), None)
            if area is None:
                bpy.ops.wm.window_new()
                area = bpy.context.window_manager.windows[-1].screen.areas[0]
                area.type = "IMAGE_EDITOR"
            space = area.spaces.active
            space.image = img
            space.ui_mode = "PAINT"
            opened = True
        self.report({"INFO"}, f"label brush: {len(applied)} settings; paint with the palette, then Apply Mask Edit"
                    + ("" if opened else " (no window: nothing opened)"))
        return {"FINISHED"}


class IDE3D_OT_apply_mask_edit(BackendOperator, bpy.types.Operator):
    """Snap the painted mask to the label colours and edit the portrait to follow it"""
    bl_idname = "ide3d.apply_mask_edit"
    bl_label = "Apply Mask Edit"
    bl_options = {"REGISTER", "UNDO"}
    coalesce_key = jobs.MASK_EDIT_KEY

    def plan(self, context, client):
        img = bpy.data.images.get(IMAGE_NAMES["mask"])
        if img is None:
            raise UserError("no mask yet: make a portrait first")
        ref = documents.portrait_ref(context)
        ids = conversions.snap_mask_image(img)
        req = P.MaskEditRequest(labels_file=jobs.write_labels(client, ids), mode=context.scene.ide3d.mask_mode.lower(),
                                refine=context.scene.ide3d.mask_refine, **ref)
        return [(req, apply.portrait)]


# ----------------------------------------------------------------------------------------------
# Regions
# ----------------------------------------------------------------------------------------------

class IDE3D_OT_apply_restyle(BackendOperator, bpy.types.Operator):
    """Give the selected regions the style of the style seed"""
    bl_idname = "ide3d.apply_restyle"
    bl_label = "Apply Restyle"
    bl_options = {"REGISTER", "UNDO"}

    def plan(self, context, client):
        state = context.scene.ide3d
        classes = tuple(i for i, on in enumerate(state.regions) if on)
        if not classes:
            raise UserError("select at least one region to restyle")
        files = {"style_document_file": "", "style_image_file": ""}
        if state.style_source in ("PORTRAIT", "IMAGE"):
            key, given = (("style_document_file", state.style_portrait) if state.style_source == "PORTRAIT"
                          else ("style_image_file", state.style_image))
            files[key] = bpy.path.abspath(given)
            if not given or not os.path.isfile(files[key]):
                raise UserError(f"no such style {state.style_source.lower()}: {given or '(none chosen)'}")
        req = P.RestyleRequest(classes=classes, style_seed=state.style_seed, truncation=state.truncation,
                               **files, **documents.portrait_ref(context))
        return [(req, apply.portrait)]


class IDE3D_OT_apply_style(BackendOperator, bpy.types.Operator):
    """Move the portrait's shape and texture codes toward those of the global style seed"""
    bl_idname = "ide3d.apply_style"
    bl_label = "Apply Style"
    bl_options = {"REGISTER", "UNDO"}

    def plan(self, context, client):
        state = context.scene.ide3d
        req = P.StyleRequest(style_seed=state.global_seed, shape_alpha=state.shape_mix,
                             texture_alpha=state.texture_mix, truncation=state.truncation,
                             **documents.portrait_ref(context))
        return [(req, apply.portrait)]


# ----------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------

def _active_camera(context):
    cam = context.scene.camera
    if cam is None:
        raise UserError("the scene has no active camera")
    return cam


class IDE3D_OT_render_view(BackendOperator, bpy.types.Operator):
    """Neural render (and semantic map) of the portrait from the scene's active camera"""
    bl_idname = "ide3d.render_view"
    bl_label = "Render From Active Camera"

    def plan(self, context, client):
        cam = _active_camera(context)
        req = jobs.view_request(cam, context.scene, documents.portrait_ref(context))
        name, bg = cam.name, context.scene.ide3d.set_background
        return [(req, lambda scene, r: apply.view(scene, name, bg, r))]


class IDE3D_OT_show_photos(bpy.types.Operator):
    """Lay an imported portrait's photos over its camera views where they saw the head, or show the model
    alone; the views already shown re-render"""
    bl_idname = "ide3d.show_photos"
    bl_label = "Show Photos"

    def execute(self, context):
        scene = context.scene
        scene.ide3d.show_photo = not scene.ide3d.show_photo
        views = apply.refresh_views(scene) if scene.ide3d.has_portrait else 0
        scene.ide3d.status = (f"photos {'shown' if scene.ide3d.show_photo else 'hidden'}"
                              + (f"; {views} view(s) re-rendering" if views else ""))
        return {"FINISHED"}


class IDE3D_OT_render_animation(BackendOperator, bpy.types.Operator):
    """Neural renders of every frame of the active camera's animation to the output folder"""
    bl_idname = "ide3d.render_animation"
    bl_label = "Render Animation"

    def plan(self, context, client):
        scene = context.scene
        cam = _active_camera(context)
        ref = documents.portrait_ref(context)
        os.makedirs(os.path.dirname(jobs.frame_path(scene, scene.frame_start)) or ".", exist_ok=True)
        plan, current = [], scene.frame_current
        try:
            for frame in range(scene.frame_start, scene.frame_end + 1, scene.frame_step):
                scene.frame_set(frame)
                path = jobs.frame_path(scene, frame)
                plan.append((jobs.view_request(cam, scene, ref), lambda s, r, path=path: apply.frame_file(path, r)))
        finally:
            scene.frame_set(current)
        return plan


# ----------------------------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------------------------

class IDE3D_OT_import_mesh(BackendOperator, bpy.types.Operator):
    """Extract the portrait's head mesh with colours, labels and a baked texture (Texture Size), aligned
    with the neural renders"""
    bl_idname = "ide3d.import_mesh"
    bl_label = "Import Head Mesh"
    bl_options = {"REGISTER", "UNDO"}

    parts_by_label: BoolProperty(name="Parts by Label", default=True,
                                 description="One material slot per semantic label")

    def plan(self, context, client):
        state = context.scene.ide3d
        req = P.MeshRequest(resolution=state.mesh_resolution, texture=state.mesh_texture,
                            **documents.portrait_ref(context))
        parts = self.parts_by_label
        return [(req, lambda scene, r: apply.mesh(scene, parts, r))]


class IDE3D_OT_export_gltf(ExportHelper, BackendOperator, bpy.types.Operator):
    """Export the portrait's head as glTF binary (.glb) for game engines, exactly as `ide3d mesh` writes it:
    vertex labels (_LABEL), one part and material per label, baked texture (Esc cancels)"""
    bl_idname = "ide3d.export_gltf"
    bl_label = "Export glTF"
    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={"HIDDEN"})

    parts_by_label: BoolProperty(name="Parts by Label", default=True,
                                 description="One mesh node and material per semantic label")
    texture_size: IntProperty(name="Texture Size", default=2048, min=0, soft_min=512, soft_max=4096,
                              description="Baked texture edge in texels (0 = vertex colours only)")
    faces: IntProperty(name="Triangles", default=50000, min=0, soft_min=5000, soft_max=200000,
                       description="Decimate to about this many triangles (0 = keep all)")

    def execute(self, context):
        # Called after the file browser: extraction and baking are long, so run modally with a progress bar.
        if context.window is not None and not bpy.app.background:
            return BackendOperator.invoke(self, context, None)
        return BackendOperator.execute(self, context)

    def plan(self, context, client):
        # The backend builds and writes the file (ide3d_core.operations.mesh), never Blender's exporter:
        # that one drops the labels and has no baked texture.
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".glb")
        req = P.ExportMeshRequest(path=path, resolution=context.scene.ide3d.mesh_resolution,
                                  texture=self.texture_size, faces=self.faces, parts=self.parts_by_label,
                                  **documents.portrait_ref(context))
        return [(req, apply.exported)]


CLASSES = (IDE3D_OT_check_backend, IDE3D_OT_new_portrait, IDE3D_OT_open_portrait, IDE3D_OT_save_portrait,
           IDE3D_OT_import_photo, IDE3D_OT_history, IDE3D_OT_paint_mask, IDE3D_OT_apply_mask_edit,
           IDE3D_OT_apply_restyle, IDE3D_OT_apply_style, IDE3D_OT_render_view, IDE3D_OT_show_photos,
           IDE3D_OT_render_animation,
           IDE3D_OT_import_mesh, IDE3D_OT_export_gltf)

#: Registers CLASSES in order and unregisters them in reverse (Blender's own helper).
register, unregister = bpy.utils.register_classes_factory(CLASSES)
