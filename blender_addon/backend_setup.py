# SPDX-License-Identifier: GPL-3.0-or-later
"""Set Up Backend: installs the backend's pinned packages with Blender's own Python. No ``bpy`` here.

One install (:class:`Installer`, run on a worker thread; the add-on's preferences only draw its
:class:`Progress` and call :meth:`Installer.cancel`):

1. **Pre-flight** (:func:`preflight`): supported platform and flavour, online access (or a wheel
   folder), the root folder (:func:`setup_paths.check_root`), Windows path length, free disk space.
2. **pip**: ``<python> <python_args> -I -m pip`` (isolated: no user site, no PYTHON* variables), or,
   when Blender's Python has no pip, pip run straight from ``ensurepip``'s bundled wheel.
3. ``pip install --only-binary :all: --no-deps --target <root>/tmp/<key>-XXXX`` with the lock's pins for
   this Python/platform/flavour (the lock is the whole dependency tree), then the pins marked
   ``deps`` with dependency resolution (Linux CUDA runtime), constrained by the lock.
4. **Verification** in a fresh process (``backend_boot.py verify``): every module the lock names
   imports, one tensor operation runs on the chosen device, the model loads.
5. The staging folder is renamed to ``<root>/envs/<key>`` only after verification, with
   ``ide3d-install.json`` (what was installed, on which device). A cancel or failure deletes it: a
   half-finished install never exists under ``envs``.

Cancel kills the whole process tree (pip and anything it started). Every failure ends in a
:class:`SetupError` whose ``kind`` and one-line ``message`` say what to do (:func:`classify_pip_output`).
Everything is appended to a log file that survives restarts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import setup_paths as SP
from .backend_lock import LOCK_PATH, Lock, Pin, load_lock, python_matches  # noqa: F401 (re-exported)
from .pip_runner import (PATTERNS, SetupError, classify_pip_output, kill_tree, parse_progress,  # noqa: F401
                         pip_environment, popen_group_kwargs)

BOOT_PATH = Path(__file__).with_name("backend_boot.py")
REPORT_NAME = "ide3d-install.json"
VERIFY_PREFIX = "IDE3D-VERIFY "
PIP_TIMEOUT_S = 60 * 60


# -- a plan -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Everything one install needs (built by the add-on from its preferences).

    Attributes:
        python: Blender's interpreter (``sys.executable``); ``python_args``: ``bpy.app.python_args``.
        root: the install root; ``flavour``: ``cpu`` | ``cuda`` | ``mps``.
        folder: a folder of wheels (Install from Folder: no network), or ``""`` to download.
        online: ``bpy.app.online_access``; downloads are refused when False.
        index_url: a package index instead of pip's configured one (a company mirror), or ``""``.
        code_dir: the folder holding ``ide3d_core`` (the extension's ``backend/``, or the repository).
        model: the model to load in verification (``""`` the bundled one, ``"none"`` skips it).
        lock_path: the lock file; ``pip_extra``: more pip arguments (``--cert``, ``--proxy``).
    """

    python: str
    root: str
    flavour: str
    code_dir: str
    python_args: tuple[str, ...] = ()
    folder: str = ""
    online: bool = True
    index_url: str = ""
    model: str = ""
    lock_path: str = str(LOCK_PATH)
    pip_extra: tuple[str, ...] = ()
    force_ensurepip: bool = False


def interpreter_args(python_args: Sequence[str]) -> list[str]:
    """Blender's arguments plus ``-I`` (isolated: no user site-packages, no PYTHON* variables)."""
    args = list(python_args)
    return args if "-I" in args else args + ["-I"]


def preflight(plan: Plan, host: SP.Host, lock: Lock, forbidden: dict | None = None,
              free_bytes: Callable[[str], int] | None = None) -> str:
    """Checks before anything is written; returns the target key. Raises :class:`SetupError`."""
    platform = SP.platform_key(host)
    reason = lock.unsupported_reason(platform, plan.flavour)
    if reason:
        raise SetupError("unsupported", reason)
    key = SP.target_key(host.python, platform, plan.flavour)
    if f"{host.python[0]}.{host.python[1]}" not in lock.pythons:
        raise SetupError("unsupported", f"this Blender runs Python {host.python[0]}.{host.python[1]}, which this "
                         f"version of the add-on has no package list for ({', '.join(lock.pythons)}): update the add-on")
    if plan.folder:
        if not os.path.isdir(plan.folder):
            raise SetupError("folder", f"the wheel folder {plan.folder} does not exist")
        if not any(n.endswith(".whl") for n in os.listdir(plan.folder)):
            raise SetupError("folder", f"{plan.folder} holds no .whl files: prepare it with the recipe in the "
                             "user guide (pip download ...)")
    elif not plan.online:
        raise SetupError("offline", "Blender's online access is off: allow it in Preferences > System > "
                         "Network, or use Install from Folder with wheels prepared on another machine")
    problems = [p for p in SP.check_root(host, plan.root, forbidden or {}) if not p.startswith("warning: ")]
    if problems:
        raise SetupError("path", problems[0])
    too_long = SP.path_length_problem(host, plan.root, key)
    if too_long:
        raise SetupError("path_too_long", too_long)
    free = (free_bytes or (lambda p: shutil.disk_usage(p).free))(SP.existing_ancestor(plan.root))
    short = SP.free_space_problem(free, lock.needed_gb(platform, plan.flavour))
    if short:
        raise SetupError("disk", short)
    return key


# -- progress and the log ------------------------------------------------------------------------------
@dataclass
class Progress:
    """What the interface shows; the installer thread writes it, the UI reads a :meth:`snapshot`."""

    phase: str = "idle"  # idle | checking | pip | installing | verifying | done | failed | cancelled
    fraction: float = 0.0
    message: str = ""
    error_kind: str = ""
    report: dict = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.phase in ("checking", "pip", "installing", "verifying")


class Log:
    """Appends timestamped lines to a file that survives restarts (trimmed past ``max_bytes``)."""

    def __init__(self, path: str | Path, max_bytes: int = 2_000_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size > max_bytes:
            tail = self.path.read_bytes()[-max_bytes // 2:]
            self.path.write_bytes(b"[older lines trimmed]\n" + tail)
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock, open(self.path, "a", encoding="utf-8", errors="replace") as f:
            for line in text.rstrip("\n").splitlines() or [""]:
                f.write(f"{stamp} {line}\n")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- installed targets ---------------------------------------------------------------------------------
def read_report(target: str | Path) -> dict | None:
    """The ``ide3d-install.json`` of an installed target, or None (not installed / not finished)."""
    try:
        return json.loads((Path(target) / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def installed_targets(host: SP.Host, root: str) -> dict[str, dict]:
    """Every finished target under ``root``: key -> its report."""
    envs = SP.envs_dir(host, root)
    found = {}
    if os.path.isdir(envs):
        for name in sorted(os.listdir(envs)):
            if SP.parse_target_key(name):
                report = read_report(os.path.join(envs, name))
                if report is not None:
                    found[name] = report
    return found


def python_upgrade_note(host: SP.Host, installed: dict[str, dict]) -> str:
    """When only targets for another Python exist (a Blender upgrade): say that a new one is needed."""
    tag = SP.python_tag(host.python)
    others = sorted({k.split("-")[0] for k in installed if not k.startswith(tag + "-")})
    if not others or any(k.startswith(tag + "-") for k in installed):
        return ""
    olds = ", ".join(f"{t[2]}.{t[3:]}" for t in others)
    return (f"The backend was installed for Python {olds} (an older Blender); this Blender runs Python "
            f"{host.python[0]}.{host.python[1]} and needs its own: press Set Up Backend. The old one is kept "
            "for the older Blender.")


def uninstall(host: SP.Host, root: str, key: str) -> bool:
    """Delete one target (renamed away first, so a half-deleted folder never looks installed)."""
    target = SP.target_dir(host, root, key)
    if not os.path.isdir(target):
        return False
    tmp = SP.tmp_dir(host, root)
    os.makedirs(tmp, exist_ok=True)
    trash = tempfile.mkdtemp(prefix=f"trash-{key}-", dir=tmp)
    os.replace(target, os.path.join(trash, key))
    shutil.rmtree(trash, ignore_errors=True)
    return True


def clean_stale(host: SP.Host, root: str) -> None:
    """Remove staging and trash folders left by an install that Blender's exit or a crash interrupted."""
    tmp = SP.tmp_dir(host, root)
    if os.path.isdir(tmp):
        for name in os.listdir(tmp):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


# -- the installer -------------------------------------------------------------------------------------
class Installer:
    """One install on a background thread. ``progress`` is safe to read from the UI thread."""

    def __init__(self, plan: Plan, host: SP.Host, log: Log, forbidden: dict | None = None,
                 free_bytes: Callable[[str], int] | None = None) -> None:
        self.plan, self.host, self.log = plan, host, log
        self.forbidden, self.free_bytes = forbidden or {}, free_bytes
        self.progress = Progress()
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._proc_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._staging: str | None = None

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "Installer":
        self.progress = Progress(phase="checking", message="checking the install folder")
        self._thread = threading.Thread(target=self._run_safely, daemon=True, name="ide3d-setup")
        self._thread.start()
        return self

    def run(self) -> Progress:
        """Install synchronously (tests, scripts); returns the final progress."""
        self.progress = Progress(phase="checking")
        self._run_safely()
        return self.progress

    def cancel(self) -> None:
        self._cancel.set()
        with self._proc_lock:
            if self._proc is not None:
                kill_tree(self._proc)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def pid(self) -> int | None:
        with self._proc_lock:
            return None if self._proc is None else self._proc.pid

    # -- steps -----------------------------------------------------------------------------------
    def _set(self, phase: str, fraction: float, message: str) -> None:
        self.progress.phase, self.progress.fraction, self.progress.message = phase, fraction, message

    def _run_safely(self) -> None:
        self._staging = None
        try:
            self._run()
        except SetupError as exc:
            kind = "cancelled" if self._cancel.is_set() else exc.kind
            message = "cancelled: nothing was installed" if kind == "cancelled" else exc.message
            self.log.write(f"[setup] {kind}: {message}")
            self.progress.error_kind, self.progress.message = kind, message
            self.progress.phase = "cancelled" if kind == "cancelled" else "failed"
        except Exception as exc:  # noqa: BLE001 -- shown as one line, traceback in the log
            import traceback

            self.log.write(traceback.format_exc())
            self.progress.error_kind = "internal"
            self.progress.message = f"set-up failed: {type(exc).__name__}: {exc} (see the log)"
            self.progress.phase = "failed"
        finally:
            if self._staging is not None and self.progress.phase != "done":
                shutil.rmtree(self._staging, ignore_errors=True)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise SetupError("cancelled", "cancelled")

    def _run(self) -> None:
        plan, host = self.plan, self.host
        lock = load_lock(plan.lock_path)
        self.log.write(f"[setup] start: python {plan.python} {host.python}, {SP.platform_key(host)}, flavour "
                       f"{plan.flavour}, root {plan.root}, " + (f"folder {plan.folder}" if plan.folder else "online"))
        key = preflight(plan, host, lock, self.forbidden, self.free_bytes)
        pins = lock.select(host.python, SP.platform_key(host), plan.flavour)
        tmp = SP.tmp_dir(host, plan.root)
        clean_stale(host, plan.root)
        os.makedirs(tmp, exist_ok=True)
        self._staging = staging = tempfile.mkdtemp(prefix=f"{key}-", dir=tmp)
        pip_tmp = tempfile.mkdtemp(prefix="pip-", dir=tmp)
        try:
            self._install(lock, pins, key, staging, pip_tmp)
        finally:
            shutil.rmtree(pip_tmp, ignore_errors=True)

    def _install(self, lock: Lock, pins: list[Pin], key: str, staging: str, pip_tmp: str) -> None:
        plan, host = self.plan, self.host
        self._set("pip", 0.02, "looking for pip in Blender's Python")
        pip_cmd, pip_version = self._find_pip(pip_tmp)
        self._check_cancel()
        flat = [p for p in pins if not p.deps]
        resolved = [p for p in pins if p.deps]
        sources = self._source_args(lock, key)
        common = ["install", "--only-binary", ":all:", "--target", staging, "--no-input", "--progress-bar", "off",
                  *sources, *plan.pip_extra]
        total = len(pins)
        self._pip(pip_cmd + common + ["--no-deps"] + [p.requirement for p in flat], pip_tmp, 0, total)
        if resolved:
            constraints = os.path.join(pip_tmp, "lock-constraints.txt")
            Path(constraints).write_text("\n".join(p.requirement for p in pins if "[" not in p.name) + "\n")
            self._pip(pip_cmd + common + ["--upgrade", "-c", constraints] + [p.requirement for p in resolved],
                      pip_tmp, len(flat), total)
        self._check_cancel()
        device = SP.FLAVOUR_DEVICE[plan.flavour]
        self._set("verifying", 0.9, f"verifying: imports, a tensor operation on {device}, the model")
        verified = self._verify(lock, pins, staging, device, pip_tmp)
        self._check_cancel()
        report = {"key": key, "flavour": plan.flavour, "device": device, "python": plan.python,
                  "python_version": f"{host.python[0]}.{host.python[1]}", "platform": SP.platform_key(host),
                  "pip": pip_version, "source": plan.folder or (plan.index_url or "the package index"),
                  "installed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "packages": {p.project: p.version for p in pins}, "verification": verified}
        Path(staging, REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        self._set("installing", 0.97, "moving the verified backend into place")
        target = SP.target_dir(host, plan.root, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(target):  # a reinstall: the old one leaves only once the new one is verified
            uninstall(host, plan.root, key)
        os.replace(staging, target)
        self.log.write(f"[setup] installed {key} into {target}: {summary_line(report)}")
        self.progress.report = report
        self._set("done", 1.0, summary_line(report))

    def _source_args(self, lock: Lock, key: str) -> list[str]:
        plan = self.plan
        if plan.folder:
            return ["--isolated", "--no-index", "--find-links", plan.folder]
        args = ["--index-url", plan.index_url] if plan.index_url else []
        torch_index = lock.torch_index.get(f"{plan.flavour}.{SP.platform_key(self.host)}")
        return args + (["--extra-index-url", torch_index] if torch_index else [])

    def _find_pip(self, pip_tmp: str) -> tuple[list[str], str]:
        """``[python, args, -m, pip]``, or pip straight from ensurepip's bundled wheel when Blender's
        Python has no pip (nothing is installed into Blender's own folder, which may be read-only)."""
        plan = self.plan
        base = [plan.python, *interpreter_args(plan.python_args)]
        if not plan.force_ensurepip:
            out = self._capture(base + ["-c", "import pip; print(pip.__version__)"], pip_tmp)
            if out is not None:
                return base + ["-m", "pip"], out.strip()
        code = ("import ensurepip, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname("
                "ensurepip.__file__), '_bundled', 'pip-*.whl')))[-1])")
        wheel = (self._capture(base + ["-c", code], pip_tmp) or "").strip()
        if not wheel:
            raise SetupError("no_pip", "Blender's Python has neither pip nor ensurepip's bundled pip; "
                             "use a Blender build from blender.org")
        cmd = base + [os.path.join(wheel, "pip")]
        version = (self._capture(cmd + ["--version"], pip_tmp) or "").split(" ")
        if len(version) < 2:
            raise SetupError("no_pip", f"pip from ensurepip's wheel ({wheel}) does not run; see the log")
        self.log.write(f"[setup] no pip in Blender's Python: using ensurepip's wheel {wheel}")
        return cmd, version[1]

    def _capture(self, cmd: list[str], pip_tmp: str) -> str | None:
        env = pip_environment(dict(os.environ), pip_tmp, self.plan.folder)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                                 creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except (OSError, subprocess.SubprocessError) as exc:
            self.log.write(f"[setup] {cmd[:3]} failed: {exc}")
            return None
        if out.returncode != 0:
            self.log.write(f"[setup] {' '.join(cmd[-3:])}: exit {out.returncode}\n{out.stderr[-2000:]}")
            return None
        return out.stdout

    def _stream(self, cmd: list[str], env: dict, on_line: Callable[[str], None], timeout: float) -> tuple[int, str]:
        """Run ``cmd`` in its own process group; every output line to ``on_line`` and the log."""
        self._check_cancel()
        self.log.write("[setup] $ " + " ".join(cmd))
        with self._proc_lock:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, text=True, encoding="utf-8", errors="replace",
                                          **popen_group_kwargs())
            proc = self._proc
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        timer = threading.Timer(timeout, lambda: kill_tree(proc))
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                self.log.write(line)
                on_line(line)
            proc.wait()
        finally:
            timer.cancel()
            with self._proc_lock:
                self._proc = None
        self._check_cancel()
        if time.monotonic() > deadline:
            raise SetupError("pip", f"a step took longer than {timeout / 60:.0f} minutes and was stopped; see the log")
        return proc.returncode, "".join(lines)

    def _pip(self, cmd: list[str], pip_tmp: str, offset: int, total: int) -> None:
        env = pip_environment(dict(os.environ), pip_tmp, self.plan.folder)
        count = [offset]

        def on_line(line: str) -> None:
            event = parse_progress(line)
            if event is None:
                return
            kind, detail = event
            if kind == "collect":
                count[0] += 1
                self._set("pip", 0.05 + 0.75 * min(count[0], total) / max(total, 1),
                          f"fetching {detail} ({min(count[0], total)} of {total})")
            elif kind == "download":
                self.progress.message = f"downloading {detail} ({min(count[0], total)} of {total})"
            else:
                self._set("installing", 0.82, "unpacking the packages")

        code, output = self._stream(cmd, env, on_line, PIP_TIMEOUT_S)
        if code != 0:
            raise classify_pip_output(output, code, self.plan.folder)

    def _verify(self, lock: Lock, pins: list[Pin], staging: str, device: str, pip_tmp: str) -> dict:
        plan = self.plan
        modules = [p.module for p in pins if p.module] + list(lock.verify_imports)
        cmd = [plan.python, *interpreter_args(plan.python_args), "-u", str(BOOT_PATH), "--code", plan.code_dir,
               "--target", staging, "verify", "--device", device, "--model", plan.model or "",
               "--imports", ",".join(modules)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(TMPDIR=pip_tmp, TMP=pip_tmp, TEMP=pip_tmp, PYTHONIOENCODING="utf-8")
        code, output = self._stream(cmd, env, lambda line: None, 900)
        found = [ln[len(VERIFY_PREFIX):] for ln in output.splitlines() if ln.startswith(VERIFY_PREFIX)]
        result = json.loads(found[-1]) if found else {}
        if code != 0 or not result.get("ok"):
            problem = result.get("problem") or next(
                (ln for ln in reversed(output.splitlines()) if ln.strip()), f"exit code {code}")
            for kind, pattern, message in PATTERNS[:5]:
                if re.search(pattern, problem, re.IGNORECASE):
                    raise SetupError(kind, message)
            raise SetupError("verify", f"the installed backend failed its check: {problem[:300]}")
        return result


def summary_line(report: dict) -> str:
    v = report.get("verification", {})
    torch_v = v.get("versions", {}).get("torch", "?")
    gpu = f", {v['device_name']}" if v.get("device_name") else ""
    return (f"torch {torch_v} on {v.get('device', report.get('device'))}{gpu}; {len(report.get('packages', {}))} "
            f"packages; model {v.get('model', 'not checked')}")


def diagnostics(host: SP.Host, root: str, flavour: str, gpu: SP.GpuInfo, extra: dict, log: Log) -> str:
    """The text of Copy Diagnostics: the machine, the choices, the installed targets and the log's tail."""
    lines = ["IDE-3D Portrait Studio: backend diagnostics"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += [f"system: {host.system} {host.machine}, platform {SP.platform_key(host)}, Python "
              f"{host.python[0]}.{host.python[1]}, long paths {host.long_paths}",
              f"root: {root}", f"flavour: {flavour}; detected: {gpu.flavour} ({gpu.summary})"]
    for key, report in installed_targets(host, root).items():
        lines.append(f"installed {key}: {summary_line(report)}")
    lines += ["--- log (last lines) ---", log.tail(60)]
    return "\n".join(lines)

