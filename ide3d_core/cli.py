# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``ide3d`` command line: a thin dispatcher over sub-command modules.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Modules are imported lazily by name so ``ide3d --help`` stays fast and a broken optional feature
cannot take the whole tool down.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module path) in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "ide3d_core.commands.demo",
    "ide3d_core.commands.generate",
    "ide3d_core.commands.prepare",
    "ide3d_core.commands.addon",
    "ide3d_core.commands.mesh",
    "ide3d_core.commands.portrait_cli",
    "ide3d_core.commands.encoders_cli",
    "training.commands.dataset",
    "training.commands.train",
)


class UserError(Exception):
    """An error caused by user input; printed as one line without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ide3d",
        description="IDE-3D Portrait Studio: generate, invert, edit and mesh 3D-aware semantic portraits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # one broken feature must not take the whole tool down
            _register_unavailable(sub, name, exc)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, module: str, exc: ImportError) -> None:
    command = module.rsplit(".", 1)[-1].replace("_", "-")
    reason = f"{type(exc).__name__}: {exc}"

    def fail(_args: argparse.Namespace) -> int:
        raise UserError(f"this command is unavailable in this installation ({reason})")

    p = sub.add_parser(command, help=f"(unavailable: {reason})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"ide3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ide3d {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
