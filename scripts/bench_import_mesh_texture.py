#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Import Head Mesh's backend request with and without the baked texture, in the same run.

    .venv/bin/python scripts/bench_import_mesh_texture.py [--model FOLDER] [--device cpu|cuda]
                                                          [--resolution 128] [--textures 0,1024]

One portrait (seed 3) of the model (default: the bundled one) in the in-process service, then one
``MeshRequest`` per texture size (0 = vertex colours only, as before the texture): CPU seconds of this
process, wall seconds, vertices (the textured mesh's are split along the UV seams), faces, and the
ratio of each row's CPU seconds to the first row's. CPU seconds are what to compare on a loaded
machine (wall seconds there include waiting for a core). Use OMP_NUM_THREADS=1 for one core.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ide3d_core.service import protocol as P
from ide3d_core.service.inprocess import InProcessService


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--textures", default="0,1024")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_mesh_texture_"))
    service = InProcessService(model=args.model, device=args.device)

    def call(req, i):
        return P.decode(service.call(P.encode(P.RequestMessage(i, req, str(tmp / str(i)))))[-1])

    new = call(P.NewPortraitRequest(seed=3), 0)
    if not new.ok:
        raise SystemExit(new.error.message)
    ref = dict(portrait_id=new.result.portrait_id, revision=new.result.revision,
               document_file=new.result.document_file)
    print("| resolution | texture | CPU s | wall s | vertices | faces | CPU x first |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for i, tex in enumerate(int(t) for t in args.textures.split(",")):
        c0, w0 = time.process_time(), time.perf_counter()
        reply = call(P.MeshRequest(resolution=args.resolution, texture=tex, **ref), i + 1)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if not reply.ok:
            print(f"| {args.resolution} | {tex} | {cpu:.1f} | {wall:.1f} | {reply.error.message} | | |")
            continue
        first = first or cpu
        print(f"| {args.resolution} | {tex} | {cpu:.1f} | {wall:.1f} | {reply.result.num_vertices} | "
              f"{reply.result.num_faces} | {cpu / first:.1f} |", flush=True)


if __name__ == "__main__":
    main()
