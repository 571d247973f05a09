# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: the backend interpreter, the model, the device and the backend mode."""
import bpy
from bpy.props import EnumProperty, StringProperty

from . import runtime


class IDE3D_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter of the backend environment (with torch and ide3d_core); "
                    "empty: the environment the set-up script created")
    model_path: StringProperty(name="Model", subtype="DIR_PATH", default="",
                               description="Model folder (config.json + generator.safetensors); empty: bundled")
    device: EnumProperty(name="Device", default="AUTO", items=(
        ("AUTO", "Auto", "CUDA when available, else CPU"),
        ("CUDA", "CUDA", "An NVIDIA GPU"),
        ("CPU", "CPU", "The processor (slow but always there)")))
    backend_mode: EnumProperty(name="Backend", default="WORKER", items=(
        ("WORKER", "Worker Process", "Run the backend in its own process (recommended)"),
        ("IN_PROCESS", "In Blender", "Run the backend inside Blender's Python (scripts and tests; "
                                     "needs torch there)")))
    backend_status: StringProperty(name="Backend Status", default="")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "python_path")
        if not self.python_path:
            detected = runtime.detect_python()
            col.label(text=f"Detected: {detected}" if detected else "No backend environment detected",
                      icon="INFO" if detected else "ERROR")
        col.prop(self, "model_path")
        row = col.row()
        row.prop(self, "device", expand=True)
        col.prop(self, "backend_mode")
        col.operator("ide3d.check_backend", icon="CHECKMARK")
        for line in self.backend_status.split("\n"):
            if line:
                col.label(text=line)


def register():
    bpy.utils.register_class(IDE3D_AP_preferences)


def unregister():
    bpy.utils.unregister_class(IDE3D_AP_preferences)
