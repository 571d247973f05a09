# SPDX-License-Identifier: GPL-3.0-or-later
"""Set Up Backend's pure logic for every platform (no Blender, no network): default roots, forbidden
folders, Windows path length, NVIDIA/Apple detection from injected probes, lock selection, pip's
failure messages, the boot script's sys.path, the ensurepip fallback and the process-tree cancel."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from blender_addon import backend_boot
from blender_addon import backend_setup as BS
from blender_addon import setup_paths as SP

WIN_ENV = {"LOCALAPPDATA": "C:\\Users\\Ada\\AppData\\Local", "USERPROFILE": "C:\\Users\\Ada",
           "ProgramFiles": "C:\\Program Files", "ProgramFiles(x86)": "C:\\Program Files (x86)",
           "SystemRoot": "C:\\Windows"}
WIN = SP.Host("windows", "AMD64", (3, 11), WIN_ENV, "C:\\Users\\Ada")
MAC = SP.Host("macos", "arm64", (3, 13), {}, "/Users/ada")
MAC_INTEL = SP.Host("macos", "x86_64", (3, 11), {}, "/Users/ada")
LINUX = SP.Host("linux", "x86_64", (3, 11), {}, "/home/ada")


def probes(files=(), which=None, lib=None, smi_out=None):
    return SP.Probes(exists=lambda p: p in files, which=lambda n: which if n == "nvidia-smi" else None,
                     find_library=lambda n: lib, run=lambda cmd: smi_out)


def test_platform_keys_and_target_keys():
    assert [SP.platform_key(h) for h in (WIN, MAC, MAC_INTEL, LINUX)] == [
        "win_amd64", "macosx_arm64", "macosx_x86_64", "linux_x86_64"]
    assert SP.platform_key(SP.Host("linux", "aarch64", (3, 11))) == "linux_aarch64"
    assert SP.target_key((3, 13), "win_amd64", "cuda") == "cp313-win_amd64-cuda"
    assert SP.parse_target_key("cp311-macosx_arm64-mps") == ("cp311", "macosx_arm64", "mps")
    assert SP.parse_target_key("cp311-linux_x86_64-rocm") is None
    with pytest.raises(ValueError):
        SP.target_key((3, 11), "win_amd64", "rocm")


def test_default_roots_are_short_per_user_folders():
    assert SP.default_root(WIN) == "C:\\Users\\Ada\\AppData\\Local\\ide3d"
    assert SP.target_dir(WIN, SP.default_root(WIN), "cp311-win_amd64-cpu") == \
        "C:\\Users\\Ada\\AppData\\Local\\ide3d\\envs\\cp311-win_amd64-cpu"
    no_local = SP.Host("windows", "AMD64", (3, 11), {"USERPROFILE": "D:\\Home\\Bo"}, "D:\\Home\\Bo")
    assert SP.default_root(no_local) == "D:\\Home\\Bo\\AppData\\Local\\ide3d"
    assert SP.default_root(MAC) == "/Users/ada/Library/Application Support/ide3d"
    assert SP.default_root(LINUX) == "/home/ada/.local/share/ide3d"
    assert SP.default_root(SP.Host("linux", "x86_64", (3, 11), {"XDG_DATA_HOME": "/data/ada"}, "/home/ada")) == \
        "/data/ada/ide3d"
    for h in (WIN, MAC, LINUX):
        assert SP.check_root(h, SP.default_root(h)) == []


def test_forbidden_roots_are_refused_with_a_reason():
    assert "Program Files" in SP.check_root(WIN, "C:\\Program Files\\Blender Foundation\\x")[0]
    assert "Program Files" in SP.check_root(WIN, "c:/program files (x86)/ide3d")[0]
    store = "C:\\Program Files\\WindowsApps\\BlenderFoundation.Blender\\ide3d"
    assert any("WindowsApps" in p for p in SP.check_root(WIN, store))
    addon = "C:\\Users\\Ada\\AppData\\Roaming\\Blender Foundation\\Blender\\4.2\\extensions\\user_default\\ide3d"
    problems = SP.check_root(WIN, addon + "\\backend", {addon: "the add-on's own folder"})
    assert len(problems) == 1 and "add-on's own folder" in problems[0]
    assert "absolute" in SP.check_root(WIN, "ide3d")[0]
    assert SP.check_root(WIN, "C:\\Users\\Zoë\\ide3d")[0].startswith("warning: ")
    assert "add-on" in SP.check_root(MAC, "/Applications/Blender.app/x", {"/applications/blender.app": "the add-on"})[0]
    assert SP.check_root(LINUX, "/opt/x", {"/opt/x2": "y"}) == []  # a sibling prefix is not inside


def test_windows_path_length_budget():
    key = "cp311-win_amd64-cuda"
    assert SP.path_length_problem(WIN, SP.default_root(WIN), key) == ""
    long_root = "C:\\Users\\" + "A" * 60 + "\\OneDrive - Some Company Name\\Documents\\Blender Stuff\\ide3d"
    message = SP.path_length_problem(WIN, long_root, key)
    assert "too long" in message and "C:\\ide3d" in message
    limit = int(message.split("at most ")[1].split(" ")[0])
    assert SP.path_length_problem(WIN, "C:\\" + "x" * (limit - 3), key) == ""
    assert SP.path_length_problem(WIN, "C:\\" + "x" * (limit - 2), key) != ""
    assert SP.path_length_problem(SP.Host("windows", "AMD64", (3, 11), WIN_ENV, "C:\\", long_paths=True),
                                  long_root, key) == ""
    assert SP.path_length_problem(LINUX, "/" + "x" * 300, key) == ""


def test_gpu_detection_without_torch():
    smi = "C:\\Windows\\System32\\nvidia-smi.exe"
    found = SP.detect_gpu(WIN, probes(files={smi}, smi_out="NVIDIA GeForce RTX 4070, 591.44\n"))
    assert (found.flavour, found.name, found.driver) == ("cuda", "NVIDIA GeForce RTX 4070", "591.44")
    old = SP.detect_gpu(WIN, probes(which="nvidia-smi", smi_out="Quadro P2000, 472.12\n"))
    assert old.flavour == "cpu" and "update the driver" in old.summary
    dll_only = SP.detect_gpu(WIN, probes(files={"C:\\Windows\\System32\\nvcuda.dll"}))
    assert dll_only.flavour == "cuda"
    assert SP.detect_gpu(WIN, probes()).flavour == "cpu"
    assert SP.detect_gpu(LINUX, probes(files={"/proc/driver/nvidia/version"})).flavour == "cuda"
    assert SP.detect_gpu(LINUX, probes(lib="libcuda.so.1")).flavour == "cuda"
    assert SP.detect_gpu(LINUX, probes()).flavour == "cpu"
    assert SP.detect_gpu(MAC, probes()).flavour == "mps"
    assert SP.detect_gpu(MAC_INTEL, probes(which="nvidia-smi")).flavour == "cpu"


def test_lock_selection_per_python_platform_flavour():
    lock = BS.load_lock()
    names = lambda py, plat, fl: {p.project: p.version for p in lock.select(py, plat, fl)}  # noqa: E731
    win311, mac313 = names((3, 11), "win_amd64", "cpu"), names((3, 13), "macosx_arm64", "mps")
    assert win311["numpy"].startswith("1.") and mac313["numpy"].startswith("2.")
    assert "mediapipe" in win311 and "mediapipe" not in mac313
    assert "colorama" in win311 and "colorama" not in mac313
    linux_cuda = names((3, 11), "linux_x86_64", "cuda")
    assert "nvidia-cudnn-cu13" in linux_cuda and "nvidia-cudnn-cu13" not in names((3, 11), "linux_x86_64", "cpu")
    assert all(len(set(p.project for p in lock.select(py, plat, fl))) == len(lock.select(py, plat, fl))
               for py in ((3, 11), (3, 13)) for plat in lock.platforms for fl in lock.flavours)
    assert lock.torch_index["cpu.linux_x86_64"].endswith("/cpu")
    assert "Intel" in lock.unsupported_reason("macosx_x86_64", "cpu")
    assert "NVIDIA" in lock.unsupported_reason("macosx_arm64", "cuda")
    assert lock.unsupported_reason("win_amd64", "cuda") == ""
    assert "platform" in lock.unsupported_reason("linux_aarch64", "cpu")
    text = lock.requirements_text((3, 11), "linux_x86_64", "cpu")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text and "torch==2.13.0" in text


def _plan(tmp_path, **kw):
    return BS.Plan(python=sys.executable, root=str(tmp_path / "root"), flavour="cpu", code_dir="/x", **kw)


def test_preflight_answers_each_problem(tmp_path):
    lock = BS.load_lock()
    plenty = lambda p: 10**12  # noqa: E731
    assert BS.preflight(_plan(tmp_path), LINUX, lock, free_bytes=plenty) == "cp311-linux_x86_64-cpu"

    def kind(plan, host=LINUX, free=plenty):
        with pytest.raises(BS.SetupError) as info:
            BS.preflight(plan, host, lock, free_bytes=free)
        return info.value.kind, info.value.message

    assert kind(_plan(tmp_path, online=False))[0] == "offline"
    assert kind(_plan(tmp_path, folder=str(tmp_path / "nope")))[0] == "folder"
    (tmp_path / "empty").mkdir()
    assert "no .whl" in kind(_plan(tmp_path, folder=str(tmp_path / "empty")))[1]
    assert kind(_plan(tmp_path), free=lambda p: 10**9) == ("disk", kind(_plan(tmp_path), free=lambda p: 10**9)[1])
    assert "Intel" in kind(_plan(tmp_path), host=MAC_INTEL)[1]
    assert kind(BS.Plan(python="x", root="C:\\Program Files\\ide3d", flavour="cpu", code_dir="x"), host=WIN)[0] == "path"
    deep = "C:\\" + "d" * 120
    assert kind(BS.Plan(python="x", root=deep, flavour="cpu", code_dir="x"), host=WIN)[0] == "path_too_long"
    new_python = SP.Host("linux", "x86_64", (3, 14), {}, "/home/ada")
    assert "update the add-on" in kind(_plan(tmp_path), host=new_python)[1]


@pytest.mark.parametrize("output,kind", [
    ("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "certificate"),
    ("ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407 Proxy Authentication Required'))", "proxy"),
    ("NewConnectionError('<...>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')", "network"),
    ("ERROR: Could not install packages due to an OSError: [WinError 5] Access is denied: 'C:\\\\x\\\\torch_cpu.dll'", "access"),
    ("ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/x'", "access"),
    ("OSError: [WinError 206] The filename or extension is too long", "path_too_long"),
    ("OSError: [Errno 28] No space left on device", "disk"),
    ("ERROR: No matching distribution found for torch==2.13.0", "no_wheel"),
    ("something else entirely\nthe last line", "pip"),
])
def test_pip_failures_become_one_line_answers(output, kind):
    err = BS.classify_pip_output(output, 1)
    assert err.kind == kind and "\n" not in err.message and "Traceback" not in err.message
    if kind == "pip":
        assert "the last line" in err.message
    if kind == "no_wheel":
        assert "recipe" in BS.classify_pip_output(output, 1, offline_folder="/w").message


def test_progress_lines():
    assert BS.parse_progress("Collecting numpy==1.26.4") == ("collect", "numpy")
    assert BS.parse_progress("Processing /w/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl") == ("collect", "torch")
    assert BS.parse_progress("  Downloading torch-2.13.0-cp311-cp311-win_amd64.whl (190.2 MB)")[0] == "download"
    assert BS.parse_progress("Installing collected packages: torch, numpy") == ("install", "")
    assert BS.parse_progress("Successfully installed x") is None


def test_pip_environment_isolates_folder_installs():
    env = BS.pip_environment({"PIP_USER": "1", "PIP_FIND_LINKS": "/opt", "PIP_PROXY": "http://p", "PATH": "/bin",
                              "PYTHONPATH": "/leak"}, "/r/tmp/pip-x", folder="")
    assert "PIP_USER" not in env and "PYTHONPATH" not in env and env["PIP_PROXY"] == "http://p"
    assert env["TMP"] == env["TEMP"] == env["TMPDIR"] == "/r/tmp/pip-x"
    offline = BS.pip_environment({"PIP_FIND_LINKS": "/opt", "PATH": "/bin"}, "/t", folder="/w")
    assert offline["PIP_CONFIG_FILE"] == os.devnull and "PIP_FIND_LINKS" not in offline


def test_boot_keeps_only_the_target_and_the_standard_library():
    path = ["/usr/lib/python311.zip", "/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload",
            "/venv/lib/python3.11/site-packages", "C:\\Blender\\4.2\\python\\lib\\site-packages",
            "/usr/lib/python3/dist-packages"]
    assert backend_boot.backend_path(path, "/ext/backend", "/root/envs/k") == [
        "/ext/backend", "/root/envs/k", "/usr/lib/python311.zip", "/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload"]


def test_upgrade_note_and_installed_targets(tmp_path):
    root = str(tmp_path)
    (tmp_path / "envs" / "cp311-linux_x86_64-cpu").mkdir(parents=True)
    (tmp_path / "envs" / "cp311-linux_x86_64-cuda").mkdir(parents=True)  # unfinished: no report
    (tmp_path / "envs" / "cp311-linux_x86_64-cpu" / BS.REPORT_NAME).write_text('{"flavour": "cpu"}')
    found = BS.installed_targets(LINUX, root)
    assert list(found) == ["cp311-linux_x86_64-cpu"]
    assert BS.python_upgrade_note(LINUX, found) == ""
    note = BS.python_upgrade_note(SP.Host("linux", "x86_64", (3, 13), {}, "/h"), found)
    assert "Python 3.11" in note and "3.13" in note and "kept" in note
    assert BS.uninstall(LINUX, root, "cp311-linux_x86_64-cpu") and BS.installed_targets(LINUX, root) == {}


def test_ensurepip_wheel_runs_pip_when_pip_is_missing(tmp_path):
    """The fallback for a Python without pip: pip runs straight from ensurepip's bundled wheel."""
    job = BS.Installer(_plan(tmp_path, force_ensurepip=True), LINUX, BS.Log(tmp_path / "log.txt"))
    cmd, version = job._find_pip(str(tmp_path))
    assert cmd[-1].endswith(".whl" + os.sep + "pip") and version[0].isdigit()
    assert "ensurepip's wheel" in (tmp_path / "log.txt").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX process groups, /proc")
def test_kill_tree_ends_grandchildren():
    code = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print(p.pid, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **BS.popen_group_kwargs())
    grandchild = int(proc.stdout.readline())
    BS.kill_tree(proc)
    time.sleep(0.2)
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed with its group waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
