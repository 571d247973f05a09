# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's runtime: the backend owner and the polling timer.

The :class:`~.client.BackendOwner` is created in :func:`register`, kept on the add-on's package object
(independent of window managers, which are replaced when a file is loaded) and shut down in
:func:`unregister`. Nothing is created at import.

Results reach Blender data only from :func:`poll` on the main thread: modal operators call it on
their timer events, a ``bpy.app.timers`` function calls it while jobs are pending in the UI, and tests
call it directly (timers never fire in the ``bpy`` module and a live timer hangs bpy 4.5 at exit, so
no timer is registered in background mode and the timer is removed in :func:`unregister`).
"""
import importlib.util
import json
import os
import sys
import tempfile

import bpy

from .client import BackendOwner, BackendSettings

_OWNER_ATTR = "_ide3d_backend_owner"
_MODES = {"WORKER": "worker", "IN_PROCESS": "in_process"}


def _package():
    return sys.modules[__package__]


def owner() -> BackendOwner:
    found = getattr(_package(), _OWNER_ATTR, None)
    if found is None:
        raise RuntimeError("the IDE-3D add-on is not registered")
    return found


def detect_python() -> str:
    """The backend interpreter to use when the preference is empty: the one recorded by
    ``ide3d addon build``, else ``<repo>/.venv`` next to an importable ``ide3d_core``; "" if none."""
    info = os.path.join(os.path.dirname(__file__), "_build_info.json")
    candidates = []
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as f:
            candidates.append(json.load(f).get("python", ""))
    spec = importlib.util.find_spec("ide3d_core")
    if spec is not None and spec.origin:
        repo = os.path.dirname(os.path.dirname(spec.origin))
        candidates += [os.path.join(repo, ".venv", "bin", "python"),
                       os.path.join(repo, ".venv", "Scripts", "python.exe")]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return ""


def preferences(context):
    addon = context.preferences.addons.get(__package__)
    return None if addon is None else addon.preferences


def work_root() -> str:
    try:
        return bpy.utils.extension_path_user(__package__, path="backend", create=True)
    except (ValueError, RuntimeError):  # not running as an extension (e.g. from the repository)
        return os.path.join(tempfile.gettempdir(), "ide3d-blender")


def documents_folder() -> str:
    """Where the add-on keeps the portrait documents it sends to the worker (the user folder)."""
    return os.path.join(work_root(), "portraits")


def settings(context) -> BackendSettings:
    prefs = preferences(context)
    if prefs is None:
        return BackendSettings(python=detect_python(), work_root=work_root())
    model = bpy.path.abspath(prefs.model_path) if prefs.model_path else ""
    if not prefs.python_path:  # Set Up Backend's install, when there is one, before the developer .venv
        from . import setup_ui

        installed = setup_ui.installed_backend(context)
        if installed is not None:
            return BackendSettings(python=installed.python, entry=installed.entry, model=model,
                                   device=installed.device(prefs.device), mode=_MODES[prefs.backend_mode],
                                   work_root=work_root())
    return BackendSettings(python=bpy.path.abspath(prefs.python_path) if prefs.python_path else detect_python(),
                           model=model, device=prefs.device.lower(), mode=_MODES[prefs.backend_mode],
                           work_root=work_root())


def client(context):
    """The backend client for the current preferences (replaced when they changed)."""
    return owner().client(settings(context))


def _tick():
    found = getattr(sys.modules.get(__package__), _OWNER_ATTR, None)
    if found is None:
        return None
    found.poll()
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                area.tag_redraw()
    return 0.1 if found.busy else None


def poll() -> list:
    """Process backend messages now (main thread); returns the jobs that finished."""
    return owner().poll()


def keep_polling() -> None:
    """Make sure pending jobs' results get applied while the UI runs (no-op in background mode)."""
    if not bpy.app.background and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=0.1)


def register():
    setattr(_package(), _OWNER_ATTR, BackendOwner())


def unregister():
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    found = getattr(_package(), _OWNER_ATTR, None)
    if found is not None:
        found.shutdown()
        delattr(_package(), _OWNER_ATTR)
