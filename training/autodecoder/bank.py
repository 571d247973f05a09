# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto-decoder's head bank: a fixed set of procedural heads, cached once with exact 3D and 2D targets.

Why a bank: a regression from fresh random latents sees every head once and settles on the conditional
mean (the average head). A fixed bank seen for many epochs, one learnable code per head, lets the
generator fit each head sharply; a prior fitted to the learned codes then draws new heads
(:mod:`training.autodecoder.prior`).

Head ``i`` of a bank is ``heads_from_latent(z_i)`` with ``z = randn(size, z_dim)`` from
``torch.Generator().manual_seed(bank_seed)``: never a ``latents_from_seeds`` latent, so every seed-named
procedural head (the evaluations' held-out heads) is outside the bank.

Per head (all in the model world, units of the model; images in [-1, 1]):

* ``geo_pts (G, 3)``: ``uniform_points`` uniform in the plane box, then ``surface_points`` near the
  surface: pixel-centre hits of the head's views, **class-balanced** (every class present gets the same
  share, so eyes and lips are not a few percent of the points) and jittered along the ray by
  ``N(0, 0.02)`` (half) or ``N(0, 0.005)`` (half). ``geo_occ (G,)`` 1 inside the exact union field,
  ``geo_cls (G,)`` the class of the bounding primitive, ``geo_band (G,)`` 1 where a class target applies
  (inside or within ``SEMANTIC_BAND`` outside).
* ``col_pts (C, 3)``: points just behind visible surface pixels of the 128 px view (``U(0, 0.006)``
  behind, half class-balanced), ``col_rgb (C, 3)`` that pixel's antialiased colour, ``col_cls (C,)`` its
  label.
* ``cam64 (V, 25)``, ``img64 (V, 3, 64, 64)``, ``lab64 (V, 64, 64)``: ``V`` views at the neural
  resolution (yaw stratified over [-60, 60] degrees, pitch uniform in [-20, 20]).
* ``cam128 (25,)``, ``img128 (3, 128, 128)``, ``lab128 (128, 128)``: one view at twice that (the
  super-resolution target; the 256 px output is box-filtered to it).

Chunks of ``CHUNK`` heads are written atomically as ``bank-<k>.safetensors`` so a killed build resumes
where it stopped.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ide3d_core.cameras import orbit_labels, rays_from_labels
from ide3d_core.progress import CancelToken, ProgressFn, report
from ide3d_core.weights_io import save_safetensors

#: Heads per bank file.
CHUNK = 64
#: Points within this distance outside the surface still get a class target (model units).
SEMANTIC_BAND = 0.01
#: Colour points lie up to this far behind the visible surface (model units).
COLOUR_DEPTH = 0.006
#: Along-ray jitter of near-surface points: half of them each (model units).
JITTERS = (0.02, 0.005)


@dataclass(frozen=True)
class BankSpec:
    """What a bank holds. ``size`` heads from ``seed``; see the module docstring for the fields."""

    size: int = 512
    seed: int = 20261202
    z_dim: int = 128
    uniform_points: int = 4096
    surface_points: int = 8192
    colour_points: int = 4096
    views: int = 3
    low_resolution: int = 64
    high_resolution: int = 128


def bank_latents(spec: BankSpec) -> torch.Tensor:
    """(size, z_dim) latents of the bank's heads (CPU, float32)."""
    return torch.randn(spec.size, spec.z_dim, generator=torch.Generator().manual_seed(spec.seed))


def _view_angles(rng: np.random.Generator, views: int) -> np.ndarray:
    """(views, 2) yaw/pitch (radians): yaw stratified over [-60, 60] degrees, pitch in [-20, 20]."""
    edges = np.linspace(-60.0, 60.0, views + 1)
    yaw = rng.uniform(edges[:-1], edges[1:])
    pitch = rng.uniform(-20.0, 20.0, views)
    return np.radians(np.stack([yaw, pitch], 1))


def _balanced(labels: np.ndarray, valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``labels`` (flat) among ``valid``, every class present getting an equal share."""
    idx = np.flatnonzero(valid)
    classes = np.unique(labels[idx])
    quota = np.full(len(classes), n // len(classes))
    quota[: n - quota.sum()] += 1
    out = [rng.choice(idx[labels[idx] == c], size=q, replace=True) for c, q in zip(classes, quota)]
    return np.concatenate(out)


def _head_targets(head, spec: BankSpec, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Every cached target of one head (a one-head :class:`HeadBatch`)."""
    from training.procedural import render_heads
    from training.procedural.mesh import head_field

    v = spec.views
    cams = torch.from_numpy(orbit_labels(_view_angles(rng, v))).float()
    low = render_heads(head.index(torch.zeros(v, dtype=torch.long)), cams, spec.low_resolution)
    cam_hi = torch.from_numpy(orbit_labels(np.radians([[rng.uniform(-50, 50), rng.uniform(-15, 15)]])))
    hi = render_heads(head, cam_hi.float(), spec.high_resolution)

    # Surface hits of every view (pixel-centre rays; depth is along the unit ray).
    origins, dirs, depth, labels = [], [], [], []
    for view, c in ((low, cams), (hi, cam_hi.float())):
        r = view.labels.shape[-1]
        o, d = rays_from_labels(c, r, r)
        origins.append(o.reshape(-1, 3)), dirs.append(d.reshape(-1, 3))
        depth.append(view.depth.reshape(-1)), labels.append(view.labels.reshape(-1))
    o, d = torch.cat(origins), torch.cat(dirs)
    t, lab = torch.cat(depth), torch.cat(labels)
    hit = (t > 0).numpy()
    pick = torch.from_numpy(_balanced(lab.numpy(), hit, spec.surface_points, rng))
    sigma = torch.tensor(np.repeat(JITTERS, [spec.surface_points // 2, spec.surface_points - spec.surface_points // 2]),
                         dtype=torch.float32)
    t_s = t[pick] + torch.from_numpy(rng.standard_normal(spec.surface_points)).float() * sigma
    surface = o[pick] + t_s[:, None] * d[pick]
    uniform = torch.from_numpy(rng.uniform(-0.5, 0.5, (spec.uniform_points, 3))).float()
    geo = torch.cat([uniform, surface])
    value, prim = head_field(head, geo)
    geo_cls = head.label[0][prim] if head.label.ndim == 2 else head.label[prim]

    # Colour points behind visible pixels of the 128 px view: half class-balanced, half uniform.
    r = spec.high_resolution
    o_hi, d_hi = rays_from_labels(cam_hi.float(), r, r)
    o_hi, d_hi = o_hi.reshape(-1, 3), d_hi.reshape(-1, 3)
    t_hi, lab_hi = hi.depth.reshape(-1), hi.labels.reshape(-1)
    vis = (t_hi > 0).numpy()
    nb = spec.colour_points // 2
    cpick = np.concatenate([_balanced(lab_hi.numpy(), vis, nb, rng),
                            rng.choice(np.flatnonzero(vis), spec.colour_points - nb, replace=True)])
    cpick = torch.from_numpy(cpick)
    t_c = t_hi[cpick] + torch.from_numpy(rng.uniform(0, COLOUR_DEPTH, len(cpick))).float()
    col_pts = o_hi[cpick] + t_c[:, None] * d_hi[cpick]
    col_rgb = hi.image[0].reshape(3, -1).T[cpick]

    return {
        "geo_pts": geo, "geo_occ": (value > 0).to(torch.uint8), "geo_cls": geo_cls.to(torch.uint8),
        "geo_band": (value > -SEMANTIC_BAND).to(torch.uint8),
        "col_pts": col_pts, "col_rgb": col_rgb.half(), "col_cls": lab_hi[cpick].to(torch.uint8),
        "cam64": cams, "img64": low.image.half(), "lab64": low.labels.to(torch.uint8),
        "cam128": cam_hi[0].float(), "img128": hi.image[0].half(), "lab128": hi.labels[0].to(torch.uint8),
    }


def chunk_path(folder: Path, k: int) -> Path:
    return folder / f"bank-{k:04d}.safetensors"


def build_bank(folder: str | Path, spec: BankSpec, progress: ProgressFn | None = None,
               cancel: CancelToken | None = None, chunks: Iterable[int] | None = None) -> None:
    """Write the bank's chunks into ``folder`` (existing complete chunks are kept: resumable). ``chunks``:
    only these chunk numbers (``0 .. ceil(size / CHUNK) - 1``), so several processes can build one bank
    (:func:`build_bank_parallel`); a chunk's content depends only on the spec and its number."""
    from training.procedural import heads_from_latent, median_padded

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    z = bank_latents(spec)
    n_chunks = math.ceil(spec.size / CHUNK)
    for k in (range(n_chunks) if chunks is None else chunks):
        if not 0 <= k < n_chunks:
            raise ValueError(f"chunk {k} outside 0..{n_chunks - 1}")
        path = chunk_path(folder, k)
        if path.exists():
            continue
        lo, hi = k * CHUNK, min(spec.size, (k + 1) * CHUNK)
        heads = heads_from_latent(median_padded(z[lo:hi]))
        per_head = []
        for i in range(hi - lo):
            rng = np.random.default_rng([spec.seed, lo + i])
            per_head.append(_head_targets(heads.index(slice(i, i + 1)), spec, rng))
            report(progress, lo + i + 1, spec.size, "caching bank heads", cancel)
        tensors = {key: torch.stack([h[key] for h in per_head]).contiguous() for key in per_head[0]}
        tensors["z"] = z[lo:hi].contiguous()
        save_safetensors(path, tensors)


def _build_chunks(args: tuple[str, BankSpec, list[int]]) -> None:
    """One worker of :func:`build_bank_parallel` (one torch thread: the workers share the cores)."""
    torch.set_num_threads(1)
    folder, spec, chunks = args
    build_bank(folder, spec, chunks=chunks)


def build_bank_parallel(folder: str | Path, spec: BankSpec, workers: int) -> None:
    """:func:`build_bank` in ``workers`` processes (chunk ``k`` goes to worker ``k % workers``); the same
    files as one process writes. For a machine with many cores (a GPU sitting's 16 CPU cores build a
    2,048-head bank in about a minute, where one core needs about 0.55 s a head)."""
    import multiprocessing

    n_chunks = math.ceil(spec.size / CHUNK)
    workers = max(1, min(workers, n_chunks))
    jobs = [(str(folder), spec, list(range(w, n_chunks, workers))) for w in range(workers)]
    if workers == 1:  # here, in the caller's process and with its threads
        build_bank(folder, spec)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_build_chunks, jobs)


def load_bank(folder: str | Path, spec: BankSpec) -> dict[str, torch.Tensor]:
    """All chunks of a complete bank, concatenated (CPU). Raises ``FileNotFoundError`` if incomplete."""
    folder = Path(folder)
    chunks = math.ceil(spec.size / CHUNK)
    parts = []
    for k in range(chunks):
        path = chunk_path(folder, k)
        if not path.exists():
            raise FileNotFoundError(f"{path}: bank chunk missing (build the bank first)")
        parts.append(load_file(str(path)))
    bank = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if bank["z"].shape[0] != spec.size or not torch.equal(bank["z"], bank_latents(spec)):
        raise ValueError(f"{folder}: bank does not match its spec (size or seed differ)")
    return bank
