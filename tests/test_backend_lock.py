# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend lock (blender_addon/backend_lock.toml): every pin has a binary wheel on the package index
for Python 3.11 and 3.13 on win_amd64, macOS arm64/x86_64 and manylinux x86_64, or the gap is declared
with what happens instead. Asks the index through pip; skips when it cannot be reached."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from blender_helpers import REPO

spec = importlib.util.spec_from_file_location("check_backend_lock", REPO / "scripts" / "check_backend_lock.py")
check_backend_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_backend_lock)

from blender_addon.backend_setup import load_lock  # noqa: E402


def test_wheel_tag_matching_without_network():
    files = ["torch-2.13.0-cp311-cp311-win_amd64.whl", "torch-2.13.0-cp313-cp313-macosx_14_0_arm64.whl",
             "torch-2.13.0-cp313-cp313-manylinux_2_28_x86_64.whl", "safetensors-0.6.2-cp38-abi3-win_amd64.whl",
             "trimesh-4.9.0-py3-none-any.whl", "numpy-1.26.4.tar.gz", "x-1.0-cp313-cp313-manylinux_2_34_x86_64.whl"]
    m = check_backend_lock.wheel_matches
    assert m(files, "2.13.0", "3.11", "win_amd64") and not m(files, "2.13.0", "3.13", "win_amd64")
    assert m(files, "2.13.0", "3.13", "macosx_arm64") and not m(files, "2.13.0", "3.13", "macosx_x86_64")
    assert m(files, "2.13.0", "3.13", "linux_x86_64")
    assert m(files, "0.6.2", "3.13", "win_amd64")  # abi3 wheels serve newer Pythons
    assert m(files, "4.9.0", "3.11", "macosx_x86_64")
    assert not m(files, "1.26.4", "3.11", "linux_x86_64")  # an sdist is no wheel
    assert not m(files, "1.0", "3.13", "linux_x86_64")  # glibc 2.34 is newer than Blender's 2.28


def test_gaps_are_reported_and_declared_gaps_allowed():
    lock = load_lock()
    fake: dict[str, list[str]] = {}
    for p in lock.pins:
        fake.setdefault(p.project, []).append(f"{p.project.replace('-', '_')}-{p.version}-py3-none-any.whl")
    fake["torch"] = [f"torch-2.13.0-cp{v}-cp{v}-{t}.whl" for v in ("311", "313")
                     for t in ("win_amd64", "macosx_14_0_arm64", "manylinux_2_28_x86_64")]
    rows = check_backend_lock.check(lock, files_of=lambda name: fake[name])
    assert {r["status"] for r in rows} == {"found", "missing-declared"}
    fake["scipy"] = []
    rows = check_backend_lock.check(lock, files_of=lambda name: fake[name])
    assert {(r["python"], r["platform"]) for r in rows if r["status"] == "MISSING"} == {
        (py, pl) for py in ("3.11", "3.13") for pl in lock.platforms}


def test_every_pin_has_wheels_on_the_index():
    lock = load_lock()
    try:
        rows = check_backend_lock.check(lock)
    except check_backend_lock.IndexUnreachable as exc:
        pytest.skip(f"package index unreachable: {exc}")
    bad = [r for r in rows if r["status"] in ("MISSING", "DECLARED-BUT-FOUND")]
    assert not bad, "\n".join(f"{r['status']} {r['package']} {r['python']} {r['platform']}" for r in bad)
    # Each of the 8 (Python, platform) pairs is covered, torch everywhere but Intel Macs.
    torch_rows = {(r["python"], r["platform"]): r["status"] for r in rows if r["package"].startswith("torch==")}
    assert len(torch_rows) == 8
    assert all(s == "found" for (py, pl), s in torch_rows.items() if pl != "macosx_x86_64")
