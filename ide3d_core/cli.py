# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``ide3d`` command line: a thin dispatcher over sub-command modules.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
The core's modules are listed in :data:`COMMAND_MODULES`; other packages (``training``) add theirs
through the ``ide3d.commands`` entry points, so the core never names them. Modules are imported by
name so a broken optional feature cannot take the whole tool down.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# The core's own commands (module paths), in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "ide3d_core.commands.generate",
    "ide3d_core.commands.prepare",
    "ide3d_core.commands.addon",
    "ide3d_core.commands.mesh",
    "ide3d_core.commands.portrait_cli",
)
#: Entry-point group through which other packages add commands (``training`` adds ``demo``,
#: ``dataset``, ``train``, ``train-encoders``...; see ``[project.entry-points."ide3d.commands"]`` in
#: pyproject.toml). The core never imports them by name: inference never imports training.
ENTRY_POINT_GROUP = "ide3d.commands"


def command_modules() -> tuple[tuple[str, str], ...]:
    """(command name, module path): the core's command modules, then those registered in
    :data:`ENTRY_POINT_GROUP` (sorted by name; the name is shown when the module fails to import)."""
    from importlib.metadata import distributions

    core = tuple((m.rsplit(".", 1)[-1].replace("_", "-"), m) for m in COMMAND_MODULES)
    # Every distribution's metadata, not ``entry_points()``: that keeps only the first metadata folder of
    # a name on sys.path, which in a source tree can be a stale ``*.egg-info`` beside the packages.
    extra: dict[str, str] = {}
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.value not in COMMAND_MODULES:
                extra.setdefault(ep.name, ep.value)
    return core + tuple(sorted(extra.items()))


class UserError(Exception):
    """An error caused by user input; printed as one line without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ide3d",
        description="IDE-3D Portrait Studio: generate, invert, edit and mesh 3D-aware semantic portraits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, name in command_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # one broken feature must not take the whole tool down
            _register_unavailable(sub, command, exc)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, command: str, exc: ImportError) -> None:
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
    # ``python -m ide3d_core.cli``: this file runs as ``__main__``, a second copy of the module whose
    # UserError the commands do not raise; run the imported module's main instead.
    from ide3d_core.cli import main as _main

    sys.exit(_main())
