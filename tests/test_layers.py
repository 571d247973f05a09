# SPDX-License-Identifier: GPL-3.0-or-later
"""The layer rules of docs/design.md, checked by a real tool: import-linter's contracts in pyproject.toml
(add-on never imports torch, ops or the heavy core; the core never imports the add-on or training; ops
never import the core; the core's procedures never reach up to the operations, commands or service).

import-linter builds the import graph from every ``import`` statement, including those inside
functions (the lazy imports this project uses everywhere), which the second test confirms."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
importlinter = pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e .[test])")

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    report = proc.stdout[proc.stdout.find("Contracts"):]
    assert proc.returncode == 0, report[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in report and report.count("KEPT") >= 6, report


def test_the_graph_sees_imports_inside_functions():
    import grimp

    graph = grimp.build_graph("ide3d_core", include_external_packages=True)
    # ide3d mesh -> the operations layer, and the service's torch, are both function-level imports.
    assert graph.direct_import_exists(importer="ide3d_core.commands.mesh", imported="ide3d_core.operations.mesh")
    assert graph.direct_import_exists(importer="ide3d_core.service.handlers", imported="torch")
