# SPDX-License-Identifier: GPL-3.0-or-later
"""Atomic writes: the new bytes or the old file, never a torn file or a stray temporary."""
from __future__ import annotations

import pytest

from ide3d_core.atomic_file import atomic_path, write_atomic


def test_write_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "doc.bin"
    assert write_atomic(path, b"first") == path and path.read_bytes() == b"first"
    write_atomic(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["doc.bin"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "doc.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.bin"]
