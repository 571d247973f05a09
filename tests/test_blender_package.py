# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension zip: built by ``ide3d addon build``, validated by Blender's own extension tool,
installed as a user would, enabled, disabled and re-enabled in real Blender (a subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from blender_helpers import REPO, requires_bpy, run_blender
from ide3d_core.commands.addon import VENDORED, build_zip

pytestmark = pytest.mark.blender


def test_zip_holds_the_addon_and_verbatim_vendored_conventions(tmp_path):
    path = build_zip(tmp_path / "dist")
    assert path.name == "ide3d_portrait_studio-0.1.0.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"blender_manifest.toml", "__init__.py", "client.py", "_vendor/__init__.py"} <= names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        for name, src in VENDORED.items():
            assert zf.read(f"_vendor/{name}") == src.read_bytes()
        info = json.loads(zf.read("_build_info.json"))
        assert info["repo"] == str(REPO)
        # The add-on never imports torch (cameras.py only does inside its torch ray function); the
        # backend's copy under backend/ runs in the worker. It holds every file of ide3d_core's models.
        for n in names:
            if n.endswith(".py") and not n.startswith(("_vendor/", "backend/")):
                assert b"import torch" not in zf.read(n), n
        models = REPO / "ide3d_core" / "models"
        for p in models.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                assert zf.read("backend/" + p.relative_to(REPO).as_posix()) == p.read_bytes(), p
        assert "backend/ide3d_core/service/worker.py" in names and "backend_lock.toml" in names
        assert not any(n.startswith("backend/training") for n in names)


@requires_bpy
def test_blender_validates_the_manifest(tmp_path):
    import importlib.util

    bpy_dir = Path(importlib.util.find_spec("bpy").origin).parent
    tool = next(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    src = tmp_path / "src"
    with zipfile.ZipFile(build_zip(tmp_path / "dist")) as zf:
        zf.extractall(src)
    out = subprocess.run([sys.executable, str(tool), "validate", str(src)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@requires_bpy
def test_install_enable_disable_reenable_uninstall(tmp_path):
    zip_path = build_zip(tmp_path / "dist")
    results = run_blender(f"""
        import json, os, sys, time
        import bpy, addon_utils
        sys.path.remove({str(REPO)!r})  # the installed extension must work without the repository
        def say(**kw): print("RESULT " + json.dumps(kw), flush=True)
        def state(mod):
            m = sys.modules.get(mod)
            return dict(enabled=addon_utils.check(mod)[1], panel=hasattr(bpy.types, "IDE3D_PT_portrait"),
                        op=hasattr(bpy.types, "IDE3D_OT_new_portrait"), scene_prop=hasattr(bpy.types.Scene, "ide3d"),
                        owner=m is not None and hasattr(m, "_ide3d_backend_owner"))
        r = bpy.ops.extensions.package_install_files(filepath={str(zip_path)!r}, repo="user_default",
                                                     enable_on_install=True)
        mod = "bl_ext.user_default.ide3d_portrait_studio"
        say(step="installed", result=list(r), **state(mod))
        pkg = sys.modules[mod]
        vendored = pkg._shared.cameras.__name__
        prefs = bpy.context.preferences.addons[mod].preferences
        detected = pkg.runtime.detect_python()
        # Check Backend runs the worker with the backend interpreter (this venv's Python).
        prefs.python_path = sys.executable
        prefs.device = "CPU"
        r = bpy.ops.ide3d.check_backend()
        pid = pkg.runtime.owner().current.pid
        say(step="checked", result=list(r), status=prefs.backend_status, vendored=vendored, detected=detected,
            user_dir=pkg.runtime.work_root())
        # The worker dies mid-request: an error value, Blender goes on, the next operator restarts it.
        client = pkg.runtime.client(bpy.context)
        P = pkg._shared.protocol
        job = client.submit(P.SleepRequest(seconds=30, steps=300))
        while job.done < 1 and not job.finished:
            pkg.runtime.poll(); time.sleep(0.01)
        client.kill()
        client.wait(job, timeout=20)
        r = bpy.ops.ide3d.check_backend()
        say(step="recovered", error_kind=job.error.kind if job.error else None, message=job.error_text(),
            result=list(r), new_pid=pkg.runtime.owner().current.pid != pid)
        pid = pkg.runtime.owner().current.pid
        bpy.ops.preferences.addon_disable(module=mod)
        time.sleep(0.2)
        try:
            os.kill(pid, 0); worker_alive = True
        except OSError:
            worker_alive = False
        say(step="disabled", worker_alive=worker_alive, timers=bpy.app.timers.is_registered(pkg.runtime._tick),
            **state(mod))
        bpy.ops.preferences.addon_enable(module=mod)
        say(step="reenabled", **state(mod))
        bpy.ops.preferences.addon_disable(module=mod)
        repos = [r.module for r in bpy.context.preferences.extensions.repos]
        path = os.path.dirname(pkg.__file__)
        bpy.ops.extensions.package_uninstall(repo_index=repos.index("user_default"), pkg_id="ide3d_portrait_studio")
        say(step="uninstalled", exists=os.path.exists(path))
    """, tmp_path, timeout=180)
    steps = {r.pop("step"): r for r in results}
    full = dict(enabled=True, panel=True, op=True, scene_prop=True, owner=True)
    none = dict(enabled=False, panel=False, op=False, scene_prop=False, owner=False)
    assert steps["installed"] == dict(result=["FINISHED"], **full)
    checked = steps["checked"]
    assert checked["result"] == ["FINISHED"], checked
    assert "torch " in checked["status"] and " on cpu" in checked["status"], checked["status"]
    assert checked["vendored"].endswith("._vendor.cameras")
    assert checked["detected"] in (str(REPO / ".venv" / "bin" / "python"), "")
    assert "extensions" in checked["user_dir"]
    assert steps["recovered"]["error_kind"] == "worker_died" and steps["recovered"]["result"] == ["FINISHED"]
    assert steps["recovered"]["new_pid"] and "restarts" in steps["recovered"]["message"]
    assert steps["disabled"] == dict(worker_alive=False, timers=False, **none)
    assert steps["reenabled"] == full
    assert steps["uninstalled"] == dict(exists=False)


def test_cli_builds_the_zip(tmp_path, capsys):
    from ide3d_core import cli

    assert cli.main(["addon", "build", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ide3d_portrait_studio-0.1.0.zip").is_file()
    assert "built" in capsys.readouterr().out
