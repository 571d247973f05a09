# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d demo``: runs every capability that works today end to end and writes pictures to --out."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

DemoStep = Callable[[Path, argparse.Namespace], list[Path]]


def _steps() -> list[tuple[str, DemoStep]]:
    return []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled model and write pictures",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the demo portraits")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for name, step in _steps():
        t0 = time.perf_counter()
        files = step(args.out, args)
        print(f"[demo] {name}: {len(files)} file(s) in {time.perf_counter() - t0:.1f} s")
        for f in files:
            print(f"         {f}")
    print(f"[demo] done; pictures in {args.out}/")
    return 0
