# SPDX-License-Identifier: GPL-3.0-or-later
"""The hostile-input catalogue (tests/hostile_files.py: crafted model folders, documents and photos,
all generated here) through the real ``ide3d`` command line: exit code 2, one stderr line naming the
problem, no traceback; in a separate process, peak memory under 1.5 GB (docs/robustness.md)."""
from __future__ import annotations

import io
import re
from contextlib import redirect_stderr

import pytest

from hostile_files import CASES, run_measured

PEAK_LIMIT = int(1.5e9)
IDS = [c[0] for c in CASES]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("name,what,make,pattern", CASES, ids=IDS)
def test_hostile_input_exits_2_with_one_line(root, name, what, make, pattern):
    from ide3d_core.cli import main

    argv = make(root)
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert rc == 2, (name, err.getvalue())
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), (name, lines)
    assert lines[0].startswith(f"ide3d {argv[0]}: error: ") and re.search(pattern, lines[0]), (name, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("name,what,make,pattern", CASES, ids=IDS)
def test_hostile_input_in_its_own_process_stays_under_1_5_gb(root, name, what, make, pattern):
    rc, err, peak = run_measured(make(root))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (name, rc, err[-2000:])
    assert re.search(pattern, lines[0]), (name, lines[0])
    assert peak < PEAK_LIMIT, f"{name}: peak RSS {peak / 1e9:.2f} GB"
