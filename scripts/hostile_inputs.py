# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure every case of the hostile-input catalogue (tests/hostile_files.py) through the real command
line, each in its own process: exit code, the one stderr line, wall time and peak RSS. Prints the
Markdown table of docs/robustness.md.

    python scripts/hostile_inputs.py [--only NAME,...] [--bomb-gib 3]

``--bomb-gib`` sets the inflated size of the deflate-bomb document (the test suite uses 1 GiB).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hostile_files as H  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--bomb-gib", type=int, default=1, help="inflated size of the deflate bomb (GiB)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if args.bomb_gib != 1:
        def bomb(root, gib=args.bomb_gib):
            import io
            import zipfile
            good = zipfile.ZipFile(io.BytesIO(H.portrait_bytes(root)))
            others = {n: good.read(n) for n in good.namelist() if n != "tensors.safetensors"}
            data = H.deflate_bomb_zip("tensors.safetensors", gib << 30, others)
            return H._render(H._doc(root, "deflate_bomb", data), root)
        H.CASES = [(n, w.replace("1 GiB", f"{args.bomb_gib} GiB"), bomb if n == "doc_deflate_bomb" else m, p)
                   for n, w, m, p in H.CASES]
    print("| case | input | exit | stderr (one line) | peak RSS | wall |")
    print("|---|---|---|---|---|---|")
    bad = 0
    with tempfile.TemporaryDirectory(prefix="ide3d-hostile-") as tmp:
        root = Path(tmp)
        for name, what, make, pattern in H.CASES:
            if only and name not in only:
                continue
            argv = make(root)
            t0 = time.perf_counter()
            rc, err, peak = H.run_measured(argv)
            wall = time.perf_counter() - t0
            lines = [ln for ln in err.splitlines() if ln.strip()]
            ok = rc == 2 and len(lines) == 1 and re.search(pattern, lines[0]) and peak < 1.5e9
            bad += not ok
            line = (lines[-1] if lines else "").replace(str(root), "…").replace("|", "\\\\|")
            print(f"| {name} | {what} | {rc} | `{line[:160]}` | {peak / 2**20:.0f} MiB | {wall:.1f} s |"
                  + ("" if ok else " **FAIL**"), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
