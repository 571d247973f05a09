# SPDX-License-Identifier: GPL-3.0-or-later
"""pip as Set Up Backend runs it: the environment, the process tree, progress lines and what a failure
means (one line for the interface). Standard library only; no ``bpy``."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys


class SetupError(RuntimeError):
    """A failed set-up step. ``kind``: ``unsupported`` | ``offline`` | ``folder`` | ``path`` | ``disk`` |
    ``no_pip`` | ``network`` | ``certificate`` | ``proxy`` | ``access`` | ``path_too_long`` |
    ``no_wheel`` | ``verify`` | ``cancelled`` | ``pip``; ``message``: one line for the interface."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


PATTERNS = [
    ("certificate", r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLCertVerificationError",
     "a proxy or antivirus is intercepting HTTPS (certificate not trusted): set Certificate File to your "
     "company's CA bundle in the add-on preferences, or use Install from Folder"),
    ("proxy", r"ProxyError|407 Proxy Authentication|Cannot connect to proxy|Tunnel connection failed",
     "the proxy refused the connection: set Proxy in the add-on preferences (http://user:pass@host:port) "
     "or use Install from Folder"),
    ("path_too_long", r"WinError 206|filename or extension is too long|File name too long|Errno 36|"
                      r"No such file or directory: '[^']{230,}'",
     "a file path is too long for Windows: choose a shorter install folder (e.g. C:\\ide3d) or enable "
     "Windows long paths"),
    ("disk", r"No space left on device|Errno 28|WinError 112|not enough space on the disk",
     "the disk is full: free some space or choose another install folder"),
    ("access", r"Permission denied|Access is denied|WinError 5\b|WinError 32\b|Errno 13|PermissionError|"
               r"being used by another process|Operation not permitted",
     "access denied while writing files (antivirus or folder permissions): allow the install folder in "
     "your antivirus, or choose another folder, then try again"),
    ("network", r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
                r"getaddrinfo failed|Name or service not known|Network is unreachable|Max retries exceeded|"
                r"ConnectTimeoutError|Read timed out|Connection refused|nodename nor servname",
     "no connection to the package index: check the internet connection, or use Install from Folder"),
]


def classify_pip_output(output: str, returncode: int, offline_folder: str = "") -> SetupError:
    """The :class:`SetupError` a failed pip run means, from its output (pure; unit-tested per case)."""
    for kind, pattern, message in PATTERNS:
        if re.search(pattern, output, re.IGNORECASE):
            return SetupError(kind, message)
    m = re.search(r"No matching distribution found for ([^\s]+)", output)
    if m and m.group(1).startswith("torch=") and not offline_folder:
        return SetupError("no_wheel", f"no wheel of {m.group(1)} for this computer: PyTorch needs 64-bit "
                          "Windows 10+, macOS 14+ on Apple Silicon, or 64-bit Linux with glibc 2.28+")
    if m:
        if offline_folder:
            return SetupError("no_wheel", f"{offline_folder} has no wheel of {m.group(1)} for this Python and "
                              "platform: prepare the folder with the recipe for this Blender (user guide)")
        return SetupError("no_wheel", f"no wheel of {m.group(1)} is published for this Python and platform")
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    return SetupError("pip", f"pip failed (exit code {returncode}): {last[:200]}")


def parse_progress(line: str) -> tuple[str, str] | None:
    """A pip output line -> (event, detail): ``collect`` (a package), ``download`` (size), ``install``."""
    m = re.match(r"\s*(?:Collecting|Processing|Looking in links|Obtaining)\s+(\S+)", line)
    if m and line.lstrip().startswith(("Collecting", "Processing")):
        name = os.path.basename(m.group(1))
        return "collect", re.split(r"==|-\d", name, maxsplit=1)[0]
    m = re.match(r"\s*Downloading\s+(\S+)\s*\(([^)]+)\)", line)
    if m:
        return "download", f"{os.path.basename(m.group(1))} ({m.group(2)})"
    if line.lstrip().startswith("Installing collected packages"):
        return "install", ""
    return None


# -- processes -----------------------------------------------------------------------------------------
def popen_group_kwargs() -> dict:
    """Start a child in its own process group/session so that Cancel can end the whole tree."""
    if sys.platform.startswith("win"):
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def kill_tree(proc: subprocess.Popen) -> None:
    """End ``proc`` and everything it started (``taskkill /T`` on Windows, the process group elsewhere)."""
    if proc.poll() is not None:
        return
    if sys.platform.startswith("win"):
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def pip_environment(base: dict, tmp: str, folder: str) -> dict:
    """The environment for pip: its temp folder under the root (short paths, same drive); settings that
    break ``--target`` removed; a wheel-folder install ignores every pip configuration file."""
    env = {k: v for k, v in base.items() if k.upper() not in (
        "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV", "PIP_NO_DEPS",
        "PYTHONHOME", "PYTHONPATH")}
    env.update(TMPDIR=tmp, TMP=tmp, TEMP=tmp, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONIOENCODING="utf-8")
    if folder:
        env["PIP_CONFIG_FILE"] = os.devnull
        for k in [k for k in env if k.upper().startswith("PIP_") and k.upper() not in (
                "PIP_CONFIG_FILE", "PIP_NO_INPUT", "PIP_DISABLE_PIP_VERSION_CHECK")]:
            del env[k]
    return env
