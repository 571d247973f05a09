# SPDX-License-Identifier: GPL-3.0-or-later
"""IDE-3D Portrait Studio for Blender: 3D-aware semantic portraits in the 3D viewport's "IDE-3D" tab.

Metadata lives in ``blender_manifest.toml``. This module only registers the other modules; they are
imported inside :func:`register` so that ``import <package>.client`` works without ``bpy`` (tests of
the backend client run outside Blender). The add-on never imports torch: the neural backend runs in
a worker process (see ``client.py`` and ``ide3d_core/service``).
"""

_MODULE_NAMES = ("runtime", "properties", "setup_ui", "preferences", "operators", "panels", "live")


def _modules():
    import importlib

    return [importlib.import_module(f".{name}", __package__) for name in _MODULE_NAMES]


def register():
    for module in _modules():
        module.register()


def unregister():
    for module in reversed(_modules()):
        module.unregister()
