# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d addon build --out DIR``: builds the installable Blender extension zip.

The zip holds ``blender_addon/`` (manifest at the root), verbatim copies of the numpy-only convention
modules and the stdlib-only protocol and atomic file writes in ``_vendor/`` (the add-on imports them through ``_shared.py``;
it never re-derives a flip or a palette), and ``_build_info.json`` recording the repository and its
``.venv`` interpreter, the default backend Python of the add-on's preferences.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ADDON_DIR = REPO / "blender_addon"
VENDORED = {"cameras.py": REPO / "ide3d_core" / "cameras.py",
            "camera_blender.py": REPO / "ide3d_core" / "camera_blender.py",
            "labels.py": REPO / "ide3d_core" / "labels.py",
            "protocol.py": REPO / "ide3d_core" / "service" / "protocol.py",
            "protocol_requests.py": REPO / "ide3d_core" / "service" / "protocol_requests.py",
            "atomic_file.py": REPO / "ide3d_core" / "atomic_file.py"}


def backend_files(repo: Path = REPO) -> list[Path]:
    """Every file of ``ide3d_core`` the worker may need (the models included, whatever they are), without
    caches and compiled files."""
    root = repo / "ide3d_core"
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo") and not p.name.startswith("."))


def _venv_python(repo: Path) -> str:
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe"):
        if (repo / rel).is_file():
            return str(repo / rel)
    return ""


def build_zip(out_dir: Path, repo: Path = REPO) -> Path:
    """Write ``<id>-<version>.zip`` into ``out_dir`` (created) and return its path."""
    manifest = tomllib.loads((ADDON_DIR / "blender_manifest.toml").read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    files = sorted(p for p in ADDON_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".zip") and "_vendor" not in p.relative_to(ADDON_DIR).parts
                   and p.name != "_build_info.json")
    info = {"version": manifest["version"], "repo": str(repo), "python": _venv_python(repo), "backend": "backend"}
    tmp = path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(ADDON_DIR).as_posix())
        zf.writestr("_vendor/__init__.py", "# SPDX-License-Identifier: GPL-3.0-or-later\n"
                    '"""Verbatim copies of ide3d_core modules, written by `ide3d addon build`."""\n')
        for name, src in VENDORED.items():
            zf.write(src, f"_vendor/{name}")
        for p in backend_files(repo):
            zf.write(p, "backend/" + p.relative_to(repo).as_posix())
        zf.writestr("_build_info.json", json.dumps(info, indent=2) + "\n")
    shutil.move(tmp, path)
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("addon", help="Blender add-on tools", description=__doc__)
    asub = p.add_subparsers(dest="addon_command", metavar="ACTION", required=True)
    b = asub.add_parser("build", help="build the installable extension zip")
    b.add_argument("--out", type=Path, default=Path("dist"), help="output folder (default dist)")
    b.set_defaults(func=run_build)
    r = asub.add_parser("requirements", help="print the backend's pinned packages of one Python/platform/flavour "
                        "(the offline recipe's requirements.txt)")
    r.add_argument("--python", default="3.11", help="Blender's Python: 3.11 (Blender 4.2-5.0) or 3.13 (5.1+)")
    r.add_argument("--platform", default="win_amd64", help="win_amd64 | macosx_arm64 | linux_x86_64")
    r.add_argument("--flavour", default="cpu", help="cpu | cuda | mps")
    r.set_defaults(func=run_requirements)


def run_build(args: argparse.Namespace) -> int:
    path = build_zip(args.out)
    print(f"built {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print("install: Blender > Edit > Preferences > Get Extensions > (menu) Install from Disk...", file=sys.stderr)
    return 0


def run_requirements(args: argparse.Namespace) -> int:
    from blender_addon.backend_setup import load_lock

    lock = load_lock()
    python = tuple(int(x) for x in args.python.split("."))
    reason = lock.unsupported_reason(args.platform, args.flavour)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    print(lock.requirements_text(python, args.platform, args.flavour), end="")
    return 0
