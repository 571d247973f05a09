# SPDX-License-Identifier: GPL-3.0-or-later
"""Exact renders of the bank heads at the generator's output resolution, for the super-resolution polish.

Why: the bank's largest view is 128 px (``img128``), so in the joint step and in the first polish the
256 px super-resolved image was box-filtered to 128 px before its loss: nothing asked the
super-resolution for detail above 128 px, and samples came out about half as sharp as a bicubic
upsampling of a perfect 64 px render (``scripts/eval_model.py``'s sharpness ratio). These renders give
the polish a full-resolution target.

Per bank head ``i``: the procedural head rendered from the bank's own ``cam128[i]`` camera (the camera
the polish renders its neural features from) at ``resolution`` px, antialiased like every other exact
render: ``img (N, 3, R, R)`` float16 in [-1, 1] and ``lab (N, R, R)`` uint8. Written in chunks of
:data:`~training.autodecoder.bank.CHUNK` heads as ``RUN/bank/out<R>-<k>.safetensors`` (atomic,
resumable: complete chunks are kept).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from ide3d_core.progress import CancelToken, ProgressFn, report
from ide3d_core.weights_io import save_safetensors
from training.autodecoder.bank import CHUNK, BankSpec, bank_latents

#: Heads rendered together (bounds memory; the renderer splits rays in blocks as well).
BLOCK = 4


def output_chunk_path(folder: Path, resolution: int, k: int) -> Path:
    return folder / f"out{resolution}-{k:04d}.safetensors"


def build_output_views(folder: str | Path, spec: BankSpec, cameras: torch.Tensor, resolution: int,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> None:
    """Render every bank head from ``cameras [size, 25]`` (the bank's ``cam128``) at ``resolution`` into
    ``folder`` (the bank folder); existing chunks are kept."""
    from training.procedural import heads_from_latent, median_padded, render_heads

    folder = Path(folder)
    if cameras.shape != (spec.size, 25):
        raise ValueError(f"cameras must be ({spec.size}, 25), got {tuple(cameras.shape)}")
    z = bank_latents(spec)
    for k in range(math.ceil(spec.size / CHUNK)):
        path = output_chunk_path(folder, resolution, k)
        if path.exists():
            continue
        lo, hi = k * CHUNK, min(spec.size, (k + 1) * CHUNK)
        heads = heads_from_latent(median_padded(z[lo:hi]))
        imgs, labs = [], []
        for s in range(0, hi - lo, BLOCK):
            e = min(hi - lo, s + BLOCK)
            out = render_heads(heads.index(slice(s, e)), cameras[lo + s:lo + e].float(), resolution)
            imgs.append(out.image.half()), labs.append(out.labels.to(torch.uint8))
            report(progress, lo + e, spec.size, f"rendering the bank heads at {resolution} px", cancel)
        save_safetensors(path, {"img": torch.cat(imgs).contiguous(), "lab": torch.cat(labs).contiguous()})


def load_output_views(folder: str | Path, spec: BankSpec, resolution: int) -> dict[str, torch.Tensor] | None:
    """``{"img": [N, 3, R, R] float16, "lab": [N, R, R] uint8}`` when every chunk exists, else None."""
    folder = Path(folder)
    paths = [output_chunk_path(folder, resolution, k) for k in range(math.ceil(spec.size / CHUNK))]
    if not all(p.exists() for p in paths):
        return None
    parts = [load_file(str(p)) for p in paths]
    views = {key: torch.cat([p[key] for p in parts]) for key in ("img", "lab")}
    if views["img"].shape != (spec.size, 3, resolution, resolution):
        raise ValueError(f"{folder}: output views of the wrong shape {tuple(views['img'].shape)}")
    return views
