# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Set Up Backend installs, and which flavour it picks: pure functions of a :class:`Host`.

Nothing here touches ``bpy`` or the machine directly: the platform, the environment variables and the
probes for an NVIDIA driver are arguments, so Windows and macOS paths are unit-tested on Linux
(``tests/test_backend_setup_paths.py``). :func:`this_host` and :func:`system_probes` read the real
machine.

Layout under the root (short and user-writable; never Program Files, never the add-on folder)::

    <root>/envs/cp311-win_amd64-cuda/   one target per Python tag, platform and flavour
    <root>/tmp/                          staging folders and pip's own temp folder (same drive)

A Blender upgrade to a new Python (3.11 -> 3.13 with Blender 5.1) needs a new target; the old one is
kept for the older Blender.
"""
from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Mapping

FLAVOURS = ("cpu", "cuda", "mps")
FLAVOUR_NAMES = {"cpu": "CPU", "cuda": "NVIDIA GPU (CUDA)", "mps": "Apple GPU (MPS)"}
FLAVOUR_DEVICE = {"cpu": "cpu", "cuda": "cuda", "mps": "mps"}
# Windows' MAX_PATH (260 with the terminating NUL) unless long paths are enabled.
WINDOWS_MAX_PATH = 259
# The longest path inside an installed target, relative to it (mediapipe's protobuf modules and their
# __pycache__ files, measured on the installed lock; torch's headers are shorter), with a margin.
LONGEST_RELATIVE = 125
# pip --target unpacks into "<TMP>/pip-target-XXXXXXXX/lib/python/" before moving: its TMP is <root>/tmp.
PIP_TARGET_PREFIX = len(os.sep.join(["tmp", "pip-target-xxxxxxxx", "lib", "python", ""]))
# CUDA 13 (torch 2.13's CUDA builds) needs an NVIDIA driver of this version or newer.
MIN_CUDA_DRIVER = (580, 0)


class SetupPathError(ValueError):
    """A root folder that Set Up Backend must not or cannot use (the message says why and what to do)."""


@dataclass(frozen=True)
class Host:
    """The machine as the set-up logic sees it.

    Attributes:
        system: ``"windows"`` | ``"macos"`` | ``"linux"``.
        machine: CPU architecture as ``platform.machine()`` reports it (``AMD64``, ``x86_64``, ``arm64``, ...).
        python: (major, minor) of Blender's Python.
        env: environment variables (``LOCALAPPDATA``, ``ProgramFiles``, ``XDG_DATA_HOME``, ``HOME``, ...).
        home: the user's home folder.
        long_paths: Windows' ``LongPathsEnabled`` registry value is set (no 260-character limit).
    """

    system: str
    machine: str
    python: tuple[int, int]
    env: Mapping[str, str] = field(default_factory=dict)
    home: str = ""
    long_paths: bool = False

    @property
    def sep(self) -> str:
        return "\\" if self.system == "windows" else "/"

    def join(self, *parts: str) -> str:
        """Join path parts with this host's separator (ntpath/posixpath rules are not needed here)."""
        out = parts[0].rstrip("\\/") if len(parts[0]) > 1 else parts[0]
        for p in parts[1:]:
            out = out + ("" if out.endswith(("\\", "/")) else self.sep) + p.strip("\\/")
        return out


def system_name(sys_platform: str) -> str:
    """``sys.platform`` -> ``windows`` | ``macos`` | ``linux``."""
    if sys_platform.startswith("win"):
        return "windows"
    if sys_platform == "darwin":
        return "macos"
    return "linux"


def platform_key(host: Host) -> str:
    """The lock's platform name: ``win_amd64``, ``macosx_arm64``, ``macosx_x86_64``, ``linux_x86_64``
    (or e.g. ``linux_aarch64``/``win_arm64``, which the lock does not list: unsupported)."""
    m = host.machine.lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(m, m)
    if host.system == "windows":
        return "win_amd64" if arch == "x86_64" else f"win_{arch}"
    if host.system == "macos":
        return f"macosx_{arch}"
    return f"linux_{'aarch64' if arch == 'arm64' else arch}"


def python_tag(python: tuple[int, int]) -> str:
    return f"cp{python[0]}{python[1]}"


def target_key(python: tuple[int, int], platform: str, flavour: str) -> str:
    """``cp311-win_amd64-cuda``: one installed target per Python tag, platform and flavour."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    return f"{python_tag(python)}-{platform}-{flavour}"


def parse_target_key(key: str) -> tuple[str, str, str] | None:
    """``cp311-win_amd64-cuda`` -> ``("cp311", "win_amd64", "cuda")``; None for other names."""
    m = re.fullmatch(r"(cp\d+)-([a-z0-9_]+)-(" + "|".join(FLAVOURS) + ")", key)
    return None if m is None else (m.group(1), m.group(2), m.group(3))


def default_root(host: Host) -> str:
    """The default install root: short, per user, writable without administrator rights.

    * Windows: ``%LOCALAPPDATA%\\ide3d`` (not Roaming: gigabytes must not roam with the profile).
    * macOS: ``~/Library/Application Support/ide3d``.
    * Linux: ``$XDG_DATA_HOME/ide3d``, else ``~/.local/share/ide3d``.
    """
    env = host.env
    if host.system == "windows":
        base = env.get("LOCALAPPDATA") or host.join(env.get("USERPROFILE") or host.home, "AppData", "Local")
        return host.join(base, "ide3d")
    if host.system == "macos":
        return host.join(host.home, "Library", "Application Support", "ide3d")
    base = env.get("XDG_DATA_HOME") or host.join(host.home, ".local", "share")
    return host.join(base, "ide3d")


def envs_dir(host: Host, root: str) -> str:
    return host.join(root, "envs")


def target_dir(host: Host, root: str, key: str) -> str:
    return host.join(root, "envs", key)


def tmp_dir(host: Host, root: str) -> str:
    """Staging folders and pip's TMP: under the root, so the final rename stays on one drive."""
    return host.join(root, "tmp")


def _norm(host: Host, path: str) -> str:
    p = path.replace("\\", "/").rstrip("/")
    return p.lower() if host.system in ("windows", "macos") else p


def _inside(host: Host, path: str, folder: str) -> bool:
    p, f = _norm(host, path), _norm(host, folder)
    return bool(f) and (p == f or p.startswith(f + "/"))


def _is_absolute(host: Host, path: str) -> bool:
    if host.system == "windows":
        return bool(re.match(r"^[A-Za-z]:[\\/]", path)) or path.startswith("\\\\")
    return path.startswith("/")


def check_root(host: Host, root: str, forbidden: Mapping[str, str] = ()) -> list[str]:
    """Problems with ``root`` as an install root (empty list: fine). Warnings start with ``"warning: "``.

    Args:
        forbidden: folder -> what it is (the add-on folder, Blender's installation): the root may not
            be inside one of them (an extension update deletes its folder; Blender's may be read-only).
    """
    problems = []
    if not root:
        return ["no install folder is set"]
    if not _is_absolute(host, root):
        return [f"the install folder must be an absolute path, got {root!r}"]
    env = host.env
    if host.system == "windows":
        protected = [env.get(k, "") for k in ("ProgramFiles", "ProgramFiles(x86)", "ProgramW6432", "SystemRoot")]
        protected += ["C:\\Program Files", "C:\\Program Files (x86)", "C:\\Windows"]
        if any(_inside(host, root, p) for p in protected if p):
            problems.append(f"{root} is under Program Files or Windows, which needs administrator rights "
                            "(and antivirus programs guard it): choose a folder in your user profile")
        if "\\windowsapps\\" in _norm(host, root).replace("/", "\\") + "\\":
            problems.append(f"{root} is inside the Microsoft Store's WindowsApps folder, which is read-only")
        if not root.isascii():
            problems.append(f"warning: {root} has non-ASCII characters; some native libraries fail to load "
                            "from such paths on Windows. If verification fails, choose e.g. C:\\ide3d")
    for folder, what in dict(forbidden).items():
        if folder and _inside(host, root, folder):
            problems.append(f"{root} is inside {what} ({folder}); it would be deleted or is read-only: "
                            "choose a folder outside it")
    return problems


def path_length_problem(host: Host, root: str, key: str) -> str:
    """A message when Windows' 260-character limit would break the install under ``root``, else ``""``."""
    if host.system != "windows" or host.long_paths:
        return ""
    longest = max(len(target_dir(host, root, key)) + 1, len(root) + 1 + PIP_TARGET_PREFIX) + LONGEST_RELATIVE
    if longest <= WINDOWS_MAX_PATH:
        return ""
    room = WINDOWS_MAX_PATH - LONGEST_RELATIVE - max(len("envs") + len(key) + 2, PIP_TARGET_PREFIX) - 1
    return (f"the install folder path is too long for Windows ({len(root)} characters; files inside would "
            f"reach {longest} of {WINDOWS_MAX_PATH + 1}): choose a folder of at most {room} characters, "
            "e.g. C:\\ide3d, or enable Windows long paths (LongPathsEnabled)")


def free_space_problem(free_bytes: int, needed_gb: float) -> str:
    if free_bytes >= needed_gb * 1e9:
        return ""
    return (f"not enough free disk space: {free_bytes / 1e9:.1f} GB free, the backend needs about "
            f"{needed_gb:.1f} GB: free some space or choose a folder on another drive")


def existing_ancestor(path: str) -> str:
    """The nearest folder of ``path`` that exists (for the free-space check before it is created)."""
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


# -- the GPU ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probes:
    """How to look at the machine for an NVIDIA driver (injected in tests).

    Attributes:
        exists: ``os.path.exists``.
        which: ``shutil.which``.
        find_library: ``ctypes.util.find_library``.
        run: runs a command, returns its stdout or ``None`` when it fails.
    """

    exists: Callable[[str], bool]
    which: Callable[[str], str | None]
    find_library: Callable[[str], str | None]
    run: Callable[[list[str]], str | None]


@dataclass(frozen=True)
class GpuInfo:
    """What was found: ``flavour`` (the suggestion), a human-readable ``summary`` and NVIDIA details."""

    flavour: str
    summary: str
    nvidia: bool = False
    name: str = ""
    driver: str = ""


def _nvidia_smi(host: Host, probes: Probes) -> str | None:
    found = probes.which("nvidia-smi")
    if found:
        return found
    if host.system == "windows":
        for base in (host.env.get("SystemRoot", "C:\\Windows"),):
            path = host.join(base, "System32", "nvidia-smi.exe")
            if probes.exists(path):
                return path
        path = host.join(host.env.get("ProgramW6432", "C:\\Program Files"), "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe")
        if probes.exists(path):
            return path
    return None


def _driver_library(host: Host, probes: Probes) -> bool:
    if host.system == "windows":
        return probes.exists(host.join(host.env.get("SystemRoot", "C:\\Windows"), "System32", "nvcuda.dll"))
    if host.system == "linux":
        return probes.exists("/proc/driver/nvidia/version") or bool(probes.find_library("cuda"))
    return False


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def detect_gpu(host: Host, probes: Probes) -> GpuInfo:
    """The flavour to suggest, found without importing torch.

    Apple Silicon -> ``mps``. Windows/Linux: an NVIDIA driver (``nvidia-smi``, ``nvcuda.dll`` or
    ``libcuda``/``/proc/driver/nvidia``) -> ``cuda`` when the driver is new enough for CUDA 13, else
    ``cpu`` with the reason. Anything else -> ``cpu``.
    """
    plat = platform_key(host)
    if plat == "macosx_arm64":
        return GpuInfo("mps", "Apple Silicon: the Apple GPU (MPS)")
    if host.system == "macos":
        return GpuInfo("cpu", "Intel Mac: no supported GPU")
    smi = _nvidia_smi(host, probes)
    name = driver = ""
    if smi:
        out = probes.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"]) or ""
        first = out.strip().splitlines()[0] if out.strip() else ""
        if "," in first:
            name, driver = (s.strip() for s in first.split(",", 1))
    if not smi and not _driver_library(host, probes):
        return GpuInfo("cpu", "no NVIDIA driver found: the CPU")
    gpu_name = name if name.upper().startswith("NVIDIA") else f"NVIDIA {name}".strip()
    if driver and version_tuple(driver) < MIN_CUDA_DRIVER:
        return GpuInfo("cpu", f"{gpu_name} with driver {driver}, older than CUDA 13 needs "
                              f"({MIN_CUDA_DRIVER[0]}+): update the driver to use the GPU; the CPU for now",
                       nvidia=True, name=name, driver=driver)
    label = f"{gpu_name} (driver {driver})" if name else "an NVIDIA driver"
    return GpuInfo("cuda", f"{label}: CUDA", nvidia=True, name=name, driver=driver)


# -- the real machine ---------------------------------------------------------------------------------
def _run_quiet(cmd: list[str]) -> str | None:
    try:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, creationflags=flags)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def system_probes() -> Probes:
    return Probes(exists=os.path.exists, which=shutil.which, find_library=ctypes.util.find_library, run=_run_quiet)


def _windows_long_paths() -> bool:
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return bool(winreg.QueryValueEx(key, "LongPathsEnabled")[0])
    except (ImportError, OSError):
        return False


def this_host() -> Host:
    import platform

    system = system_name(sys.platform)
    return Host(system=system, machine=platform.machine(), python=tuple(sys.version_info[:2]),
                env=dict(os.environ), home=os.path.expanduser("~"),
                long_paths=_windows_long_paths() if system == "windows" else False)
