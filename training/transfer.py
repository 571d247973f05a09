# SPDX-License-Identifier: GPL-3.0-or-later
"""Transfer checkpoints: a training run's state, small enough to travel to and from a GPU lease.

A full checkpoint (:mod:`training.checkpoint`) holds float32 weights and Adam moments; for ``default``
that is ~290 MB, far above what a device sitting can carry in (64 MiB with the repository) or bring
back (8 files of at most 16 MiB). A transfer checkpoint is a folder::

    DIR/transfer.json            manifest: step, images seen, TrainConfig, optimiser documents,
                                 shard list with sizes and SHA-256, original dtype of every tensor
    DIR/t<gen>-<i>.safetensors   shards of at most ``shard_bytes`` (default 15 MiB), at most 6

Contents: G, G_ema and D weights and buffers in float16 (float tensors whose magnitude exceeds the
float16 range are stored in bfloat16), the loop's torch RNG state, and Adam's moments in bfloat16
when everything fits ``budget_bytes`` (default 50 MiB); otherwise the moments are left out and a run
resumed from it re-initialises Adam (:func:`import_transfer` says so). Every random draw of the loop
is seeded by ``(seed, step, rank)``, so a resumed run sees the same data and latent codes as an
uninterrupted one; it differs only by the float16 rounding of the weights (relative 2^-11, about one
Adam step at lr 0.0025) and, without moments, by Adam's restart.

Atomicity: shards of a new export get a new generation number, the manifest is replaced last with
``os.replace``, and only then are the previous generation's shards deleted, so a kill at any moment
leaves a complete transfer checkpoint (the old or the new one). Loading checks sizes and SHA-256
(a truncated carry is reported, not loaded).

Everything here works on flat tensors, not on modules: export reads a full checkpoint file, import
writes one into a run folder, and ``ide3d train --resume`` then loads it strictly into the networks.

    python -m training.transfer export RUN_DIR DEST [--budget-mib 50]
    python -m training.transfer import SRC RUN_DIR
    python -m training.transfer info DIR
    python -m training.transfer grid GENERATOR_DIR OUT.png [--device cuda]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ide3d_core.atomic_file import atomic_path
from ide3d_core.weights_io import save_safetensors
from ide3d_core.image_files import save_image
from training import checkpoint as ckpt

FORMAT = "ide3d-transfer-checkpoint"
VERSION = 1
MANIFEST = "transfer.json"
MIB = 1 << 20
SHARD_BYTES = 15 * MIB
MAX_SHARDS = 6
BUDGET_BYTES = 50 * MIB
_FP16_MAX = 65000.0
_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8,
                               torch.int64, torch.int32, torch.bool)}


class TransferError(ValueError):
    """A transfer checkpoint is missing, incomplete, corrupted or cannot hold the run."""


@dataclass(frozen=True)
class TransferInfo:
    """What a transfer checkpoint holds (from its manifest).

    Attributes:
        folder: the transfer folder. step, images_seen: the run's counters.
        config: the TrainConfig as a dict. has_moments: Adam moments included (bfloat16).
        shard_bytes: size of each shard file in bytes. generation: export counter of the folder.
    """

    folder: Path
    step: int
    images_seen: int
    config: dict[str, Any]
    has_moments: bool
    shard_bytes: tuple[int, ...]
    generation: int

    @property
    def total_bytes(self) -> int:
        return sum(self.shard_bytes)


# ----------------------------------------------------------------------------------------------
# Pure helpers: dtype policy, sizes, packing
# ----------------------------------------------------------------------------------------------

def is_moment(name: str) -> bool:
    """Adam state tensors (``opt_G/state/<i>/exp_avg`` etc.), the optional part."""
    return name.startswith(("opt_G/", "opt_D/"))


def transfer_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    """Storage dtype: float16 weights (bfloat16 beyond float16's range), bfloat16 moments (their
    second moments reach 1e-12 and below, under float16's range), Adam step counts and non-float
    tensors unchanged."""
    if not t.is_floating_point() or t.dim() == 0:
        return t.dtype
    if is_moment(name):
        return torch.bfloat16
    if t.numel() and not bool(t.detach().abs().max() <= _FP16_MAX):
        return torch.bfloat16
    return torch.float16


def stored_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def pack_shards(sizes: dict[str, int], shard_bytes: int = SHARD_BYTES) -> list[list[str]]:
    """Greedy first-fit packing of named tensors (bytes each) into shards of at most ``shard_bytes``
    (tensor data only; the safetensors header adds a few kB, which :func:`export_tensors` leaves room
    for). Deterministic: largest tensors first, ties by name."""
    shards: list[list[str]] = []
    room: list[int] = []
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        b = sizes[name]
        if b > shard_bytes:
            raise TransferError(f"tensor {name} is {b / MIB:.1f} MiB, above the {shard_bytes / MIB:.1f} MiB "
                                f"shard limit")
        for i, r in enumerate(room):
            if b <= r:
                shards[i].append(name)
                room[i] -= b
                break
        else:
            shards.append([name])
            room.append(shard_bytes - b)
    return shards


def plan_transfer(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], *, budget_bytes: int = BUDGET_BYTES,
                  shard_bytes: int = SHARD_BYTES, max_shards: int = MAX_SHARDS,
                  dtypes: Optional[dict[str, torch.dtype]] = None) -> tuple[bool, list[list[str]], int]:
    """Decide what travels: -> (moments included, shards as lists of names, data bytes).

    ``shapes``: ``{name: (shape, dtype)}`` of the full checkpoint (works on meta tensors: nothing is
    read). ``dtypes``: storage dtypes when known (else float16 weights / bfloat16 moments). Moments
    are kept only if the whole fits ``budget_bytes`` in ``max_shards`` shards."""
    def store(name: str, shape: tuple[int, ...], dt: torch.dtype) -> torch.dtype:
        if dtypes is not None:
            return dtypes[name]
        if not dt.is_floating_point or len(shape) == 0:
            return dt
        return torch.bfloat16 if is_moment(name) else torch.float16

    limit = shard_bytes - 64 * 1024  # header room
    sizes = {k: stored_bytes(s, store(k, s, d)) for k, (s, d) in shapes.items()}
    for with_moments in (True, False):
        chosen = {k: b for k, b in sizes.items() if with_moments or not is_moment(k)}
        total = sum(chosen.values())
        shards = pack_shards(chosen, limit)
        if total <= budget_bytes and len(shards) <= max_shards:
            return with_moments, shards, total
    raise TransferError(f"the run's weights alone take {total / MIB:.1f} MiB in {len(shards)} shards; a "
                        f"transfer checkpoint holds at most {budget_bytes / MIB:.0f} MiB in {max_shards} "
                        f"shards of {shard_bytes / MIB:.0f} MiB (use a smaller discriminator)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------------------------------

def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise TransferError(f"{folder}: no transfer checkpoint ({MANIFEST} missing)") from None
    except (OSError, ValueError) as exc:
        raise TransferError(f"{path}: unreadable manifest ({exc})") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise TransferError(f"{path}: not a version-{VERSION} transfer checkpoint")
    return doc


def transfer_info(folder: str | os.PathLike) -> TransferInfo:
    doc = read_manifest(folder)
    return TransferInfo(Path(folder), int(doc["step"]), int(doc["images_seen"]), doc["state"]["config"],
                        bool(doc["has_moments"]), tuple(int(s["bytes"]) for s in doc["shards"]),
                        int(doc["generation"]))


def export_tensors(folder: str | os.PathLike, tensors: dict[str, torch.Tensor], state: dict[str, Any], *,
                   budget_bytes: int = BUDGET_BYTES, shard_bytes: int = SHARD_BYTES,
                   max_shards: int = MAX_SHARDS) -> TransferInfo:
    """Write a full checkpoint's ``(tensors, state)`` as a transfer checkpoint into ``folder``.

    ``state`` is the checkpoint's JSON document (``step``, ``images_seen``, ``config``, ``opt_G``,
    ``opt_D``). Atomic (see the module docstring); an existing transfer checkpoint in ``folder`` is
    replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        old = read_manifest(folder)
    except TransferError:
        old = None
    generation = (int(old["generation"]) + 1) if old else 1
    dtypes = {k: transfer_dtype(k, v) for k, v in tensors.items()}
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    with_moments, shards, _ = plan_transfer(shapes, budget_bytes=budget_bytes, shard_bytes=shard_bytes,
                                            max_shards=max_shards, dtypes=dtypes)
    state = dict(state)
    if not with_moments:  # Adam restarts: keep its hyper-parameters, drop its per-parameter state
        for key in ("opt_G", "opt_D"):
            state[key] = {"param_groups": state[key]["param_groups"], "scalars": {}}
    entries = []
    for i, names in enumerate(shards):
        name = f"t{generation:04d}-{i + 1}-of-{len(shards)}.safetensors"
        flat = {k: tensors[k].detach().to("cpu", dtypes[k]).contiguous() for k in sorted(names)}
        save_safetensors(folder / name, flat, {"format": FORMAT})
        path = folder / name
        entries.append({"name": name, "bytes": path.stat().st_size, "sha256": _sha256(path)})
    kept = [k for names in shards for k in names]
    doc = {"format": FORMAT, "version": VERSION, "generation": generation, "step": int(state["step"]),
           "images_seen": int(state["images_seen"]), "has_moments": with_moments, "shards": entries,
           "dtypes": {k: str(tensors[k].dtype) for k in sorted(kept)}, "state": state}
    with atomic_path(folder / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(doc) + "\n")
    keep = {e["name"] for e in entries} | {MANIFEST}
    for p in folder.glob("t*-*-of-*.safetensors"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
    return transfer_info(folder)


def load_transfer(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], TransferInfo]:
    """Read a transfer checkpoint -> (tensors in their original dtypes on the CPU, checkpoint state,
    info). Raises :class:`TransferError` on a missing, truncated or altered shard."""
    folder = Path(folder)
    doc = read_manifest(folder)
    tensors: dict[str, torch.Tensor] = {}
    for e in doc["shards"]:
        path = folder / e["name"]
        if not path.is_file():
            raise TransferError(f"{path}: shard missing")
        if path.stat().st_size != e["bytes"] or _sha256(path) != e["sha256"]:
            raise TransferError(f"{path}: shard is truncated or altered (size/SHA-256 differ from {MANIFEST})")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise TransferError(f"{path}: unreadable shard ({exc})") from None
    dtypes = doc["dtypes"]
    if set(dtypes) != set(tensors):
        raise TransferError(f"{folder}: shards do not hold the tensors the manifest lists")
    tensors = {k: v.to(_DTYPES[dtypes[k]]) for k, v in tensors.items()}
    return tensors, doc["state"], transfer_info(folder)


def export_run(run_dir: str | os.PathLike, dest: str | os.PathLike, **limits: int) -> TransferInfo:
    """Export the newest full checkpoint of ``run_dir`` as a transfer checkpoint into ``dest``."""
    latest = ckpt.latest_checkpoint(Path(run_dir) / "checkpoints")
    if latest is None:
        raise TransferError(f"{run_dir}: no checkpoint to export")
    tensors, state = ckpt.load_checkpoint(latest)
    return export_tensors(dest, tensors, state, **limits)


def import_transfer(src: str | os.PathLike, run_dir: str | os.PathLike) -> tuple[TransferInfo, bool]:
    """Make ``run_dir`` resumable from the transfer checkpoint ``src``.

    Writes ``run_dir/checkpoints/checkpoint-<step>.safetensors`` (a full checkpoint; without moments
    the optimisers' state is empty, so Adam re-initialises on resume) and, when absent,
    ``run_dir/train_config.json``. Returns (info, imported): nothing is written when ``run_dir``
    already holds a checkpoint at the same or a later step. Raises :class:`TransferError` when the
    run folder belongs to another configuration."""
    from training.config import TrainConfig

    run_dir = Path(run_dir)
    info = transfer_info(src)
    cfg = TrainConfig.from_dict({**info.config, "betas": tuple(info.config["betas"])})
    cfg_path = run_dir / "train_config.json"
    if cfg_path.exists():
        old = TrainConfig.load(cfg_path)
        if old.replace(kimg=cfg.kimg) != cfg:
            raise TransferError(f"{src} holds a run with other settings than {cfg_path}")
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is not None and int(latest.name.split("-")[1].split(".")[0]) >= info.step:
        return info, False
    tensors, state, info = load_transfer(src)
    ckpt.save_checkpoint(run_dir / "checkpoints" / ckpt.checkpoint_name(info.step), tensors, state)
    if not cfg_path.exists():
        cfg.save(cfg_path)
    return info, True


def write_grid(generator_dir: str | os.PathLike, out_png: str | os.PathLike,
               device: torch.device | str = "cpu") -> Path:
    """EMA samples of an exported generator (rows = seeds 0..3; yaw -30/0/30, then semantic maps)."""
    from ide3d_core.networks import load_generator
    from training.loop import sample_grid

    G = load_generator(generator_dir, device=device)
    grid = sample_grid(G, list(range(4)), (-30.0, 0.0, 30.0), torch.device(device))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    return out


def describe(info: TransferInfo) -> str:
    moments = "with Adam moments (bfloat16)" if info.has_moments else "without Adam moments"
    return (f"transfer checkpoint {info.folder}: step {info.step}, {info.images_seen} images, "
            f"{len(info.shard_bytes)} shards, {info.total_bytes / MIB:.1f} MiB, {moments}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="training.transfer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="newest checkpoint of RUN_DIR -> transfer folder DEST")
    e.add_argument("run_dir", type=Path)
    e.add_argument("dest", type=Path)
    e.add_argument("--budget-mib", type=float, default=BUDGET_BYTES / MIB)
    i = sub.add_parser("import", help="transfer folder SRC -> a resumable RUN_DIR")
    i.add_argument("src", type=Path)
    i.add_argument("run_dir", type=Path)
    n = sub.add_parser("info", help="describe a transfer folder")
    n.add_argument("folder", type=Path)
    g = sub.add_parser("grid", help="sample grid PNG of an exported generator folder")
    g.add_argument("generator_dir", type=Path)
    g.add_argument("out", type=Path)
    g.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            print(describe(export_run(args.run_dir, args.dest, budget_bytes=int(args.budget_mib * MIB))))
        elif args.cmd == "import":
            info, done = import_transfer(args.src, args.run_dir)
            print(("imported " if done else "run folder is already at or past ") + describe(info))
        elif args.cmd == "info":
            print(describe(transfer_info(args.folder)))
        else:
            print(f"grid: {write_grid(args.generator_dir, args.out, args.device)}")
    except (TransferError, ckpt.CheckpointError, OSError) as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
