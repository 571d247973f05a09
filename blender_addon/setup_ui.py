# SPDX-License-Identifier: GPL-3.0-or-later
"""Set Up Backend in the add-on's preferences: a thin Blender layer over ``backend_setup``.

The install runs on a thread (:class:`backend_setup.Installer`), kept on the add-on's package object
like the backend owner (no module globals); a ``bpy.app.timers`` function redraws the preferences and
the status bar while it runs. Called from a script in background mode, the operators run synchronously
(``run_async=True`` keeps the thread, for tests that cancel). The worker uses an installed target
through :func:`installed_backend` (``runtime.settings``), with Blender's own Python and the
extension's copy of ``ide3d_core``; with none installed the developer path (``.venv``) still works.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time

import bpy
from bpy.props import BoolProperty, StringProperty

from . import backend_setup as BS
from . import setup_paths as SP

_INSTALLER_ATTR = "_ide3d_setup_installer"
_CACHE_ATTR = "_ide3d_setup_cache"
ADDON_DIR = os.path.dirname(os.path.abspath(__file__))


def _package():
    return sys.modules[__package__]


def _prefs(context):
    addon = context.preferences.addons.get(__package__)
    return None if addon is None else addon.preferences


def installer() -> BS.Installer | None:
    return getattr(_package(), _INSTALLER_ATTR, None)


def _cache() -> dict:
    found = getattr(_package(), _CACHE_ATTR, None)
    if found is None:
        found = {}
        setattr(_package(), _CACHE_ATTR, found)
    return found


def host() -> SP.Host:
    cache = _cache()
    if "host" not in cache:
        cache["host"] = SP.this_host()
    return cache["host"]


def gpu() -> SP.GpuInfo:
    cache = _cache()
    if "gpu" not in cache:
        cache["gpu"] = SP.detect_gpu(host(), SP.system_probes())
    return cache["gpu"]


def root(prefs) -> str:
    chosen = bpy.path.abspath(prefs.setup_root) if prefs is not None and prefs.setup_root else ""
    return os.path.normpath(chosen) if chosen else SP.default_root(host())


def flavour(prefs) -> str:
    chosen = prefs.setup_flavour if prefs is not None else "AUTO"
    return gpu().flavour if chosen == "AUTO" else chosen.lower()


def code_dir() -> str:
    """The folder holding ``ide3d_core``: the extension's own copy, else the repository (developers)."""
    bundled = os.path.join(ADDON_DIR, "backend")
    if os.path.isdir(os.path.join(bundled, "ide3d_core")):
        return bundled
    spec = importlib.util.find_spec("ide3d_core")
    return os.path.dirname(os.path.dirname(spec.origin)) if spec is not None and spec.origin else ""


def log() -> BS.Log:
    try:
        folder = bpy.utils.extension_path_user(__package__, path="setup", create=True)
    except (ValueError, RuntimeError):  # running from the repository, not as an extension
        folder = os.path.join(tempfile.gettempdir(), "ide3d-blender-setup")
    return BS.Log(os.path.join(folder, "setup.log"))


def forbidden() -> dict:
    found = {ADDON_DIR: "the add-on's own folder"}
    if bpy.app.binary_path:
        found[os.path.dirname(bpy.app.binary_path)] = "Blender's installation"
    return found


def installed(prefs, max_age: float = 2.0) -> dict[str, dict]:
    """Installed targets under the root (key -> report), cached for a moment (panels redraw often)."""
    cache, r = _cache(), root(prefs)
    hit = cache.get("installed")
    if hit is None or hit[0] != r or time.monotonic() - hit[1] > max_age:
        hit = (r, time.monotonic(), BS.installed_targets(host(), r))
        cache["installed"] = hit
    return hit[2]


def current_key(prefs) -> str | None:
    """The installed target the worker uses: the chosen flavour's, else another of this Python and platform."""
    found = installed(prefs)
    h = host()
    try:
        wanted = SP.target_key(h.python, SP.platform_key(h), flavour(prefs))
    except ValueError:
        return None
    if wanted in found:
        return wanted
    prefix = f"{SP.python_tag(h.python)}-{SP.platform_key(h)}-"
    return next((k for k in found if k.startswith(prefix)), None)


class InstalledBackend:
    """How the worker starts from an installed target (Blender's Python, ``backend_boot.py``)."""

    def __init__(self, key: str, target: str, report: dict) -> None:
        self.key, self.target, self.report = key, target, report
        self.python = sys.executable
        self.entry = tuple(BS.interpreter_args(bpy.app.python_args)) + (
            "-u", str(BS.BOOT_PATH), "--code", code_dir(), "--target", target, "worker")

    def device(self, preference: str) -> str:
        """The worker's device: the preference; Auto on an Apple GPU install means ``mps`` (the worker's
        own Auto is CUDA when available, else the CPU)."""
        if preference == "AUTO" and self.report.get("flavour") == "mps":
            return "mps"
        return preference.lower()


def installed_backend(context) -> InstalledBackend | None:
    prefs = _prefs(context)
    key = current_key(prefs) if prefs is not None else None
    if key is None or not code_dir():
        return None
    return InstalledBackend(key, SP.target_dir(host(), root(prefs), key), installed(prefs)[key])


# -- running an install --------------------------------------------------------------------------------
def _plan(context, folder: str = "") -> BS.Plan:
    prefs = _prefs(context)
    extra = []
    if prefs.setup_proxy:
        extra += ["--proxy", prefs.setup_proxy]
    if prefs.setup_cert:
        extra += ["--cert", bpy.path.abspath(prefs.setup_cert)]
    return BS.Plan(python=sys.executable, python_args=tuple(bpy.app.python_args), root=root(prefs),
                   flavour=flavour(prefs), code_dir=code_dir(), folder=folder, online=bool(bpy.app.online_access),
                   index_url=prefs.setup_index_url, model=bpy.path.abspath(prefs.model_path) if prefs.model_path else "",
                   lock_path=_lock_path(prefs), pip_extra=tuple(extra))


def _lock_path(prefs) -> str:
    return bpy.path.abspath(prefs.setup_lock) if prefs.setup_lock else str(BS.LOCK_PATH)


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            area.tag_redraw()


def _finished(job: BS.Installer) -> None:
    _cache().pop("installed", None)
    from . import runtime

    try:
        runtime.owner().shutdown()  # the next backend action starts a worker from the new target
    except RuntimeError:
        pass
    _redraw()


def _tick():
    job = installer()
    if job is None:
        return None
    _redraw()
    if job.progress.running:
        return 0.25
    _finished(job)
    return None


def start(context, folder: str = "", run_async: bool = False) -> BS.Installer:
    current = installer()
    if current is not None and current.progress.running:
        raise RuntimeError("a set-up is already running")
    from . import runtime

    runtime.owner().shutdown()  # a worker running from the target would lock its files (Windows)
    job = BS.Installer(_plan(context, folder), host(), log(), forbidden())
    setattr(_package(), _INSTALLER_ATTR, job)
    if bpy.app.background and not run_async:
        job.run()
        _finished(job)
        return job
    job.start()
    if not bpy.app.background and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=0.2)
    return job


def _report_result(op, job: BS.Installer) -> set:
    p = job.progress
    if p.phase == "done":
        op.report({"INFO"}, "Backend installed: " + p.message)
        return {"FINISHED"}
    if p.running:
        op.report({"INFO"}, "Setting up the backend: progress in the preferences and the status bar")
        return {"FINISHED"}
    op.report({"WARNING"} if p.phase == "cancelled" else {"ERROR"}, p.message)
    return {"CANCELLED"}


class IDE3D_OT_setup_backend(bpy.types.Operator):
    """Download and install the backend's packages (PyTorch and others) for this Blender, then verify them"""

    bl_idname = "ide3d.setup_backend"
    bl_label = "Set Up Backend"
    run_async: BoolProperty(default=False, options={"SKIP_SAVE", "HIDDEN"})

    def execute(self, context):
        try:
            job = start(context, run_async=self.run_async)
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return _report_result(self, job)


class IDE3D_OT_setup_from_folder(bpy.types.Operator):
    """Install the backend from a folder of wheel files prepared on another machine (no internet needed)"""

    bl_idname = "ide3d.setup_from_folder"
    bl_label = "Install from Folder"
    directory: StringProperty(subtype="DIR_PATH")
    run_async: BoolProperty(default=False, options={"SKIP_SAVE", "HIDDEN"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, "choose the folder that holds the wheel files")
            return {"CANCELLED"}
        try:
            job = start(context, folder=bpy.path.abspath(self.directory), run_async=self.run_async)
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return _report_result(self, job)


class IDE3D_OT_setup_cancel(bpy.types.Operator):
    """Stop the running set-up (ends pip and everything it started; nothing half-installed is kept)"""

    bl_idname = "ide3d.setup_cancel"
    bl_label = "Cancel Set-Up"

    def execute(self, context):
        job = installer()
        if job is None or not job.progress.running:
            return {"CANCELLED"}
        job.cancel()
        return {"FINISHED"}


class IDE3D_OT_setup_uninstall(bpy.types.Operator):
    """Delete the installed backend packages of this Blender (other Blenders' installs are kept)"""

    bl_idname = "ide3d.setup_uninstall"
    bl_label = "Uninstall Backend"
    key: StringProperty(default="", options={"SKIP_SAVE"})

    def execute(self, context):
        prefs = _prefs(context)
        key = self.key or current_key(prefs)
        if not key:
            self.report({"WARNING"}, "no backend is installed for this Blender")
            return {"CANCELLED"}
        from . import runtime

        runtime.owner().shutdown()  # the worker may run from the folder being deleted
        removed = BS.uninstall(host(), root(prefs), key)
        log().write(f"[setup] uninstalled {key}: {removed}")
        _cache().pop("installed", None)
        self.report({"INFO"}, f"Removed the backend {key}" if removed else f"{key} was not installed")
        return {"FINISHED"}


def diagnostics_text(context) -> str:
    prefs = _prefs(context)
    job = installer()
    extra = {"blender": bpy.app.version_string, "python": f"{sys.version.split()[0]} ({sys.executable})",
             "python_args": " ".join(bpy.app.python_args), "online_access": bpy.app.online_access,
             "backend code": code_dir(), "last set-up": f"{job.progress.phase}: {job.progress.message}" if job else "none"}
    return BS.diagnostics(host(), root(prefs), flavour(prefs), gpu(), extra, log())


class IDE3D_OT_setup_copy_diagnostics(bpy.types.Operator):
    """Copy the machine, the set-up choices, what is installed and the set-up log to the clipboard"""

    bl_idname = "ide3d.setup_copy_diagnostics"
    bl_label = "Copy Diagnostics"

    def execute(self, context):
        context.window_manager.clipboard = diagnostics_text(context)
        self.report({"INFO"}, f"Diagnostics copied (log: {log().path})")
        return {"FINISHED"}


class IDE3D_OT_setup_write_recipe(bpy.types.Operator):
    """Write the list of wheel files and the pip command that downloads them on another machine"""

    bl_idname = "ide3d.setup_write_recipe"
    bl_label = "Save Offline Recipe"

    def execute(self, context):
        prefs = _prefs(context)
        h = host()
        lock = BS.load_lock(_lock_path(prefs))
        key = SP.target_key(h.python, SP.platform_key(h), flavour(prefs))
        folder = root(prefs)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"offline-recipe-{key}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(recipe_text(lock, h.python, SP.platform_key(h), flavour(prefs)))
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


def recipe_text(lock: BS.Lock, python: tuple[int, int], platform: str, flav: str) -> str:
    reqs = lock.requirements_text(python, platform, flav)
    plat_args = {"win_amd64": "--platform win_amd64", "macosx_arm64": "--platform macosx_14_0_arm64",
                 "linux_x86_64": "--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64"}.get(platform, "")
    return (f"# On a machine with internet and Python 3 (any OS), save the lines below '---' as requirements.txt, then:\n"
            f"#   python -m pip download --only-binary :all: --no-deps {plat_args} --python-version "
            f"{python[0]}.{python[1]} --implementation cp -r requirements.txt -d ide3d-wheels\n"
            "# (drop --no-deps for the Linux CUDA flavour's NVIDIA packages). Copy ide3d-wheels to this machine\n"
            "# and choose it with Install from Folder.\n---\n" + reqs)


# -- drawing -------------------------------------------------------------------------------------------
def draw(prefs, context, layout) -> None:
    """The Set-Up box of the preferences."""
    box = layout.box()
    box.label(text="Backend Set-Up", icon="PREFERENCES")
    job = installer()
    h = host()
    col = box.column()
    col.prop(prefs, "setup_root", text="Install Folder")
    if not prefs.setup_root:
        col.label(text=f"Default: {SP.default_root(h)}")
    row = col.row()
    row.prop(prefs, "setup_flavour", expand=True)
    col.label(text=f"Detected: {gpu().summary}", icon="INFO")
    for problem in SP.check_root(h, root(prefs), forbidden()):
        col.label(text=problem, icon="ERROR" if not problem.startswith("warning") else "INFO")
    if job is not None and job.progress.running:
        col.progress(factor=job.progress.fraction, text=job.progress.message or job.progress.phase)
        col.operator("ide3d.setup_cancel", icon="CANCEL")
    else:
        row = col.row()
        sub = row.row()
        sub.enabled = bool(bpy.app.online_access)
        sub.operator("ide3d.setup_backend", icon="IMPORT")
        row.operator("ide3d.setup_from_folder", icon="FILE_FOLDER")
        if not bpy.app.online_access:
            col.label(text="Online access is off (Preferences > System > Network): use Install from Folder",
                      icon="INFO")
        if job is not None and job.progress.phase in ("failed", "cancelled"):
            col.label(text=job.progress.message, icon="ERROR" if job.progress.phase == "failed" else "INFO")
    found = installed(prefs)
    key = current_key(prefs)
    if key:
        col.label(text=f"Installed {key}: {BS.summary_line(found[key])}", icon="CHECKMARK")
    else:
        note = BS.python_upgrade_note(h, found)
        col.label(text=note or "Not set up yet: the worker uses a developer environment if there is one",
                  icon="ERROR" if note else "INFO")
    row = col.row()
    if key:
        row.operator("ide3d.setup_uninstall", icon="TRASH")
    row.operator("ide3d.setup_copy_diagnostics", icon="COPYDOWN")
    row.operator("ide3d.setup_write_recipe", icon="TEXT")
    col.prop(prefs, "setup_show_advanced")
    if prefs.setup_show_advanced:
        for name in ("setup_index_url", "setup_proxy", "setup_cert", "setup_lock"):
            col.prop(prefs, name)
        col.label(text=f"Log: {log().path}")


def draw_status(self, context) -> None:
    job = installer()
    if job is not None and job.progress.running:
        self.layout.progress(factor=job.progress.fraction, text=f"IDE-3D set-up: {job.progress.message}")


_CLASSES = (IDE3D_OT_setup_backend, IDE3D_OT_setup_from_folder, IDE3D_OT_setup_cancel, IDE3D_OT_setup_uninstall,
            IDE3D_OT_setup_copy_diagnostics, IDE3D_OT_setup_write_recipe)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.STATUSBAR_HT_header.append(draw_status)


def unregister():
    bpy.types.STATUSBAR_HT_header.remove(draw_status)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    job = installer()
    if job is not None:
        job.cancel()
        job.join(30)
    for attr in (_INSTALLER_ATTR, _CACHE_ATTR):
        if hasattr(_package(), attr):
            delattr(_package(), attr)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
