# SPDX-License-Identifier: GPL-3.0-or-later
"""Truncation has one name on every user-facing surface: ``--truncation`` on the command line (core and
training commands), ``truncation`` in the worker protocol and in the add-on's properties.

(The networks' Python keyword stays StyleGAN's ``truncation_psi``, beside ``truncation_cutoff``, and a
document's seed record keeps its stored key ``truncation_psi``: neither is typed by a user.)"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

from ide3d_core.cli import build_parser
from ide3d_core.service import protocol as P

REPO = Path(__file__).resolve().parent.parent


def _options(parser: argparse.ArgumentParser, path: str = "ide3d"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        else:
            for opt in action.option_strings:
                yield path, opt, action.dest


def test_every_command_line_truncation_option_is_called_truncation():
    found = [(path, opt, dest) for path, opt, dest in _options(build_parser()) if "trunc" in opt or "psi" in opt]
    assert found, "no command takes a truncation: the parser walk found nothing"
    assert {"ide3d generate", "ide3d mesh"} <= {path for path, _, _ in found}
    assert all(opt == "--truncation" and dest == "truncation" for _, opt, dest in found), found


def test_protocol_and_addon_fields_are_called_truncation():
    fields = {f.name for cls in P.REQUEST_TYPES.values() for f in dataclasses.fields(cls)}
    assert {f for f in fields if "trunc" in f or "psi" in f} == {"truncation"}
    tree = ast.parse((REPO / "blender_addon" / "properties.py").read_text())
    names = {t.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) for t in [n.target]
             if isinstance(t, ast.Name)}
    assert {n for n in names if "trunc" in n or "psi" in n} == {"truncation"}
