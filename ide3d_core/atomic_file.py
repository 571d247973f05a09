# SPDX-License-Identifier: GPL-3.0-or-later
"""Atomic file writes, standard library only (the add-on carries a verbatim copy in ``_vendor/``).

A file is written to a temporary name in its own folder, flushed to disk (``fsync``) and renamed over
its final name with ``os.replace`` (atomic on POSIX and Windows); the folder is then synced so the
rename itself survives a crash where the platform allows it. A write that fails or is interrupted
leaves the previous file untouched and no temporary file behind. Used for portrait documents, training
checkpoints and the add-on's copies of documents.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; when the block succeeds, the file written there
    is synced and renamed over ``path``, otherwise it is removed. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)
