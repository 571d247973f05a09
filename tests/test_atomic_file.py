# SPDX-License-Identifier: GPL-3.0-or-later
"""Atomic writes: the new bytes or the old file, never a torn file or a stray temporary."""
from __future__ import annotations

import os

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


def test_new_file_gets_the_mode_of_a_plain_write_and_an_old_file_keeps_its_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        plain, atomic = tmp_path / "plain.bin", tmp_path / "atomic.bin"
        plain.write_bytes(b"x")
        write_atomic(atomic, b"x")
        assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
        os.chmod(atomic, 0o640)
        write_atomic(atomic, b"y")
        assert stat.S_IMODE(atomic.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from ide3d_core.atomic_file import is_temporary

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    path = tmp_path / "doc.bin"
    stale = tmp_path / f".doc.bin.{dead_pid}.0123abcd.tmp"
    live = tmp_path / f".doc.bin.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / f".other.bin.{dead_pid}.0123abcd.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    assert is_temporary(stale.name) and not is_temporary("doc.bin")
    write_atomic(path, b"new")
    assert not stale.exists() and live.exists() and other.exists()
    assert path.read_bytes() == b"new"


def test_atomic_open_text_and_binary(tmp_path):
    from ide3d_core.atomic_file import atomic_open, write_text_atomic

    with atomic_open(tmp_path / "a.txt", "w") as f:
        f.write("héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    write_text_atomic(tmp_path / "b.txt", "x\n")
    assert (tmp_path / "b.txt").read_text() == "x\n"
    with pytest.raises(ValueError, match="writes only"):
        with atomic_open(tmp_path / "c.txt", "a"):
            pass


def test_a_write_expecting_an_old_version_refuses_to_overwrite_a_newer_one(tmp_path):
    from ide3d_core.atomic_file import ABSENT, WriteConflict, file_stamp

    path = tmp_path / "doc.bin"
    assert file_stamp(path) == ABSENT
    write_atomic(path, b"mine", expect=ABSENT)  # nobody wrote it in between
    stamp = file_stamp(path)
    write_atomic(path, b"theirs")  # another program saves meanwhile
    with pytest.raises(WriteConflict, match="changed by another program"):
        write_atomic(path, b"mine again", expect=stamp)
    assert path.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.bin"]
    write_atomic(path, b"mine again", expect=file_stamp(path))
    assert path.read_bytes() == b"mine again"


def test_a_bulk_write_skips_fsync_but_stays_atomic(tmp_path, monkeypatch):
    from ide3d_core.atomic_file import atomic_path

    def no_fsync(fd):
        raise AssertionError("fsync called")

    monkeypatch.setattr(os, "fsync", no_fsync)
    path = tmp_path / "img.bin"
    with atomic_path(path, durable=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert path.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == ["img.bin"]
