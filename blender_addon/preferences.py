# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: Set Up Backend (drawn by ``setup_ui``), the backend interpreter, the model, the
device and the backend mode."""
import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import runtime, setup_ui


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
    # Set Up Backend (setup_ui.py): where and what to install.
    setup_root: StringProperty(
        name="Install Folder", subtype="DIR_PATH", default="",
        description="Where Set Up Backend installs the packages (gigabytes); empty: a short folder in your "
                    "user profile. Never Program Files or the add-on's folder")
    setup_flavour: EnumProperty(name="Flavour", default="AUTO", items=(
        ("AUTO", "Auto", "What this computer has: an NVIDIA GPU, an Apple GPU, else the CPU"),
        ("CPU", "CPU", "Works everywhere; slower"),
        ("CUDA", "NVIDIA GPU", "PyTorch with CUDA (Windows and Linux, a recent NVIDIA driver)"),
        ("MPS", "Apple GPU", "PyTorch on the Apple GPU (Apple Silicon Macs)")))
    setup_show_advanced: BoolProperty(name="Advanced Set-Up Options", default=False)
    setup_index_url: StringProperty(name="Package Index", default="",
                                    description="A package index instead of PyPI (a company mirror); empty: pip's default")
    setup_proxy: StringProperty(name="Proxy", default="", description="http://user:password@host:port; empty: the system's")
    setup_cert: StringProperty(name="Certificate File", subtype="FILE_PATH", default="",
                               description="A CA bundle (.pem) for a proxy that inspects HTTPS")
    setup_lock: StringProperty(name="Package List", subtype="FILE_PATH", default="",
                               description="The pinned package list (tests); empty: the add-on's backend_lock.toml")

    def draw(self, context):
        layout = self.layout
        setup_ui.draw(self, context, layout)
        col = layout.column()
        col.prop(self, "python_path")
        if not self.python_path:
            detected = runtime.detect_python()
            installed = setup_ui.installed_backend(context)
            if installed is not None:
                detected = f"{installed.python} with the packages of {installed.key}"
            col.label(text=f"Detected: {detected}" if detected else "No backend: press Set Up Backend",
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
