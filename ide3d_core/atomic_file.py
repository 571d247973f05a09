# SPDX-License-Identifier: GPL-3.0-or-later
"""Atomic file writes, standard library only (the add-on carries a verbatim copy in ``_vendor/``).

Every file the project writes (portrait documents, meshes, generator and encoder exports, configs,
training checkpoints, images, the service's result files) goes through this module. A file is
written to a temporary name in its own folder, flushed to disk (``fsync``) and renamed over its
final name with ``os.replace`` (atomic on POSIX and Windows); the folder is then synced so the
rename itself survives a crash where the platform allows it.

Guarantees:

* A reader sees the old file or the complete new one, never a truncated one: a write that fails
  (full disk, exception in the writer) or is killed leaves the previous file untouched.
* A failed write removes its temporary file. A *killed* write cannot, so temporary names carry the
  writer's process id (``.NAME.<pid>.<random>.tmp``); the next write of the same file removes the
  temporaries of writers that no longer run (or, where that cannot be told, that are over an hour
  old). :func:`is_temporary` names them for code that lists folders.
* The new file gets the mode a plain ``open(path, "w")`` would give it: the old file's mode when
  one exists, else ``0o666`` minus the umask (``mkstemp`` alone would make it ``0o600``).
* Lost updates are caught when asked for: a writer that read or checked the target earlier passes
  ``expect=file_stamp(path)`` from then; if another program replaced the file in between, the write
  raises :class:`WriteConflict` instead of silently discarding the other program's result. The
  check and the rename happen under an exclusive lock on the folder (POSIX ``flock``).
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

class WriteConflict(OSError):
    """The target was changed by another program since the writer's ``expect`` stamp was taken; the
    new file was not written (the other program's file is kept)."""


#: :func:`file_stamp` of a path where no file exists.
ABSENT: tuple = ("absent",)


def file_stamp(path: str | os.PathLike) -> tuple:
    """What identifies one version of a file: (device, inode, size, mtime in ns), or :data:`ABSENT`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ABSENT
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: the stamp check alone
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
#: Temporaries of earlier releases (``tempfile.mkstemp`` names, no process id): removed by age.
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
#: Temporaries whose writer cannot be checked are removed after this many seconds.
STALE_SECONDS = 3600.0


def is_temporary(name: str) -> bool:
    """True for the file name of an (unfinished) temporary of this module."""
    return _TEMP.match(name) is not None or _LEGACY_TEMP.match(name) is not None


def _pid_alive(pid: int) -> bool | None:
    """True/False when it can be told, None otherwise (e.g. Windows)."""
    if os.name != "posix":
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed writers; returns the removed paths."""
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP.match(entry.name) or _LEGACY_TEMP.match(entry.name)
        if m is None or m.group("name") != path.name:
            continue
        alive = _pid_alive(int(m.group("pid"))) if "pid" in m.groupdict() else None
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        except OSError:
            continue
        if alive is False or (alive is None and old):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _plain_write_mode(path: Path) -> int:
    """The permission bits a plain ``open(path, "w")`` would leave ``path`` with."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    if os.name != "posix":
        return 0o666
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask; read from ``/proc`` where possible, since ``os.umask`` can only be read by
    setting it (a short window in which another thread's new files would get mode 0o666)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _sync_folder(folder: Path) -> None:
    try:  # make the rename itself durable (not possible on every platform)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, expect: tuple | None = None, durable: bool = True) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; when the block succeeds, the file written there
    is synced, given the mode a plain write would have, and renamed over ``path``; otherwise it is
    removed. The folder is created if needed. For writers that want a file name (safetensors,
    ``trimesh.export``, ``np.save`` with a name). ``expect``: see :class:`WriteConflict`. ``durable=False``
    skips the two ``fsync`` calls: the write is still atomic for readers and against a killed process, but
    not against a power cut (for bulk outputs such as generated data sets, thousands of files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    mode = _plain_write_mode(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        if expect is None:
            os.replace(tmp, path)
        else:
            with _folder_lock(path.parent):
                if file_stamp(path) != tuple(expect):
                    raise WriteConflict(f"{path} was changed by another program since it was read; "
                                        "not overwritten (save to another file)")
                os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        _sync_folder(path.parent)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                durable: bool = True) -> Iterator[IO]:
    """``open`` for writing, atomically: ``with atomic_open(p, "w") as f: f.write(text)``. ``mode`` is
    ``"wb"`` or ``"w"`` (text, ``encoding`` default UTF-8). For writers that take a file object
    (Pillow's ``save``, ``np.save``, ``json.dump``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got {mode!r}")
    with atomic_path(path, durable=durable) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as f:
                yield f
        else:
            with open(tmp, "w", encoding=encoding or "utf-8") as f:
                yield f


def write_atomic(path: str | os.PathLike, data: bytes, expect: tuple | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path.
    ``expect``: the :func:`file_stamp` the target must still have (see :class:`WriteConflict`)."""
    with atomic_path(path, expect) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return write_atomic(path, text.encode(encoding))
