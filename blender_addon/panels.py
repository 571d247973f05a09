# SPDX-License-Identifier: GPL-3.0-or-later
"""The "IDE-3D" tab of the 3D viewport's sidebar: Portrait, Mask, Regions, Style, Views, Mesh."""
import bpy

from . import documents
from ._shared import labels
from .properties import IMAGE_NAMES


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "IDE-3D"


class IDE3D_PT_portrait(_Panel, bpy.types.Panel):
    bl_label = "Portrait"

    def draw(self, context):
        state, layout = context.scene.ide3d, self.layout
        col = layout.column(align=True)
        col.prop(state, "seed")
        col.prop(state, "truncation", slider=True)
        col.operator("ide3d.new_portrait", icon="USER")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(state, "photo_steps")
        row.prop(state, "photo_tune_steps")
        col.prop(state, "photo_refine_camera")
        col.operator("ide3d.import_photo", icon="IMAGE_DATA")
        row = layout.row(align=True)
        row.operator("ide3d.open_portrait", icon="FILE_FOLDER", text="Open")
        row.operator("ide3d.save_portrait", icon="FILE_TICK", text="Save")
        kinds, current = documents.history(context.scene)
        if state.has_portrait and kinds:
            row = layout.row(align=True)
            sub = row.row(align=True)
            sub.enabled = current > 0
            sub.operator("ide3d.history", icon="LOOP_BACK", text="Undo").step = -1
            sub = row.row(align=True)
            sub.enabled = current < len(kinds) - 1
            sub.operator("ide3d.history", icon="LOOP_FORWARDS", text="Redo").step = 1
            layout.label(text=f"Edit {current + 1} of {len(kinds)}: {kinds[current]}")
        img = bpy.data.images.get(IMAGE_NAMES["canonical"])
        if img is not None and state.has_portrait:
            img.preview_ensure()
            layout.template_icon(icon_value=img.preview.icon_id, scale=8.0)
        if state.status:
            layout.label(text=state.status, icon="INFO")


class IDE3D_PT_mask(_Panel, bpy.types.Panel):
    bl_label = "Mask"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.operator("ide3d.paint_mask", icon="BRUSH_DATA")
        row = layout.row(align=True)
        row.prop(context.scene.ide3d, "mask_mode")
        row.prop(context.scene.ide3d, "mask_refine")
        row = layout.row(align=True)
        row.operator("ide3d.apply_mask_edit", icon="CHECKMARK")
        row.operator("ide3d.live_edit", icon="REC", depress=context.scene.ide3d.live_edit)
        pal = context.scene.tool_settings.image_paint.palette
        if pal is not None:
            layout.template_palette(context.scene.tool_settings.image_paint, "palette", color=True)
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        for i, name in enumerate(labels.DISPLAY_NAMES):
            grid.label(text=f"{i + 1:2d}. {name}")


class IDE3D_PT_regions(_Panel, bpy.types.Panel):
    bl_label = "Regions"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        state, layout = context.scene.ide3d, self.layout
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        for i, name in enumerate(labels.DISPLAY_NAMES):
            grid.prop(state, "regions", index=i, text=name, toggle=True)
        layout.prop(state, "style_source", expand=True)
        layout.prop(state, {"SEED": "style_seed", "PORTRAIT": "style_portrait", "IMAGE": "style_image"}[
            state.style_source])
        layout.operator("ide3d.apply_restyle", icon="BRUSHES_ALL")


class IDE3D_PT_style(_Panel, bpy.types.Panel):
    bl_label = "Global Style"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        state, layout = context.scene.ide3d, self.layout
        layout.prop(state, "global_seed")
        col = layout.column(align=True)
        col.prop(state, "shape_mix", slider=True)
        col.prop(state, "texture_mix", slider=True)
        layout.operator("ide3d.apply_style", icon="SHADERFX")


class IDE3D_PT_views(_Panel, bpy.types.Panel):
    bl_label = "Views"

    def draw(self, context):
        state, layout = context.scene.ide3d, self.layout
        layout.prop(state, "set_background")
        layout.operator("ide3d.show_photos", icon="IMAGE_REFERENCE", depress=state.show_photo)
        layout.operator("ide3d.render_view", icon="CAMERA_DATA")
        layout.operator("ide3d.render_animation", icon="RENDER_ANIMATION")


class IDE3D_PT_mesh(_Panel, bpy.types.Panel):
    bl_label = "Mesh"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        state, layout = context.scene.ide3d, self.layout
        layout.prop(state, "mesh_resolution")
        layout.prop(state, "mesh_texture")
        layout.operator("ide3d.import_mesh", icon="MESH_MONKEY")
        layout.operator("ide3d.export_gltf", icon="EXPORT")


CLASSES = (IDE3D_PT_portrait, IDE3D_PT_mask, IDE3D_PT_regions, IDE3D_PT_style, IDE3D_PT_views, IDE3D_PT_mesh)

#: Registers CLASSES in order and unregisters them in reverse (Blender's own helper).
register, unregister = bpy.utils.register_classes_factory(CLASSES)
