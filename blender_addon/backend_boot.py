# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs the backend with Blender's own Python from an installed target (standard library only).

    <python> -I -u backend_boot.py --code DIR --target DIR worker [worker args]
    <python> -I -u backend_boot.py --code DIR --target DIR verify --device cpu --model "" --imports a,b

``--code`` holds ``ide3d_core`` (the extension's ``backend/`` folder, or the repository); ``--target``
is the folder Set Up Backend installed the packages into. Every other ``site-packages`` folder is
dropped from ``sys.path`` (Blender's bundled numpy, a virtual environment's packages), so the backend
runs from exactly what Set Up Backend installed and verified. ``-I`` already keeps the user's
site-packages and PYTHON* variables out. The add-on never imports this file; it runs it.
"""
import os
import runpy
import site
import sys

COMMANDS = {"worker": "ide3d_core.service.worker", "verify": "ide3d_core.service.verify"}


def _is_site_packages(path: str) -> bool:
    parts = path.replace("\\", "/").lower().rstrip("/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def backend_path(path: list, code: str, target: str) -> list:
    """``sys.path`` for the backend: the code, the target, then the standard library only."""
    return [code, target] + [p for p in path if p and not _is_site_packages(p) and p not in (code, target)]


def main(argv: list) -> None:
    args = list(argv)
    opts = {}
    while args and args[0] in ("--code", "--target"):
        opts[args[0][2:]] = os.path.abspath(args[1])
        del args[:2]
    if set(opts) != {"code", "target"} or not args or args[0] not in COMMANDS:
        sys.exit("usage: backend_boot.py --code DIR --target DIR (worker|verify) [args]")
    before = list(sys.path)
    site.addsitedir(opts["target"])  # runs the target's .pth files
    added = [p for p in sys.path if p not in before]
    sys.path[:] = backend_path(before, opts["code"], opts["target"]) + [p for p in added if p != opts["target"]]
    os.environ["IDE3D_BACKEND_TARGET"] = opts["target"]
    module = COMMANDS[args[0]]
    sys.argv = [module] + args[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
