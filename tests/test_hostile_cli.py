# SPDX-License-Identifier: GPL-3.0-or-later
"""The hostile-input catalogue (tests/hostile_files.py: crafted model folders, documents and photos,
all generated here) through the real ``ide3d`` command line: exit code 2, one stderr line naming the
problem, no traceback; in a separate process, peak memory under 1.5 GB (docs/robustness.md)."""
from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from hostile_files import CASES

REPO = Path(__file__).resolve().parents[1]
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


def run_measured(argv: list[str], address_space: int = 8 << 30, timeout: float = 600) -> tuple[int, str, int]:
    """Run ``python -m ide3d_core.cli ARGV`` -> (exit code, stderr, peak RSS in bytes of that process).
    The address space is capped at ``address_space`` so a regression fails instead of exhausting memory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ide3d_core.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)
    try:
        err = proc.stderr.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.slow
@pytest.mark.parametrize("name,what,make,pattern", CASES, ids=IDS)
def test_hostile_input_in_its_own_process_stays_under_1_5_gb(root, name, what, make, pattern):
    rc, err, peak = run_measured(make(root))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (name, rc, err[-2000:])
    assert re.search(pattern, lines[0]), (name, lines[0])
    assert peak < PEAK_LIMIT, f"{name}: peak RSS {peak / 1e9:.2f} GB"
