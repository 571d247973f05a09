# SPDX-License-Identifier: GPL-3.0-or-later
"""Training checkpoints: one safetensors file per snapshot, written atomically, no pickles.

A checkpoint holds every tensor needed to continue a run bit-exactly (generator, EMA generator and
discriminator weights and buffers, both optimisers' moments, the loop's torch generator state) plus a
JSON document in the safetensors metadata (step counters, optimiser hyper-parameters, the numpy
generator state, the training config).

Atomicity: the file is written under a temporary name in the same folder, flushed and fsynced, then
renamed over its final name with ``os.replace`` (atomic on POSIX and Windows). A run killed at any
moment leaves either the previous checkpoints or a complete new one, plus at most a stray ``.tmp``
file that :func:`latest_checkpoint` ignores.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ide3d_core.weights_io import save_safetensors

FORMAT = "ide3d-training-checkpoint"
VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{8,})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the model it is loaded into."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.safetensors"


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` (any device; copied to CPU) and the JSON-able ``state``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(state)}
    save_safetensors(path, flat, meta)
    return path


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint -> (tensors on ``device``, state). Raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", -1)) != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is not {VERSION}")
    return tensors, json.loads(meta["state"])


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder`` that loads, or None (older ones are tried if the newest
    cannot be read, e.g. after disk corruption)."""
    for path in reversed(list_checkpoints(folder)):
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (and stray temporary files)."""
    paths = list_checkpoints(folder)
    for p in paths[:max(len(paths) - keep, 0)]:
        p.unlink(missing_ok=True)
    for p in Path(folder).glob(".checkpoint-*.tmp"):
        p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Modules and optimisers <-> flat tensors + JSON
# ----------------------------------------------------------------------------------------------

def module_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` as ``{prefix/name: tensor}``."""
    return {f"{prefix}/{k}": v for k, v in module.state_dict().items()}


def load_module(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Strictly load ``module`` from ``tensors`` (every weight present, shapes equal, nothing extra)."""
    head = f"{prefix}/"
    sub = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(sub)), sorted(set(sub) - set(own))
    if missing or extra:
        raise CheckpointError(f"{prefix}: checkpoint does not match the model "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in sub.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{prefix}/{k}: shape {tuple(v.shape)} in the checkpoint, "
                                  f"{tuple(own[k].shape)} in the model")
    module.load_state_dict(sub, strict=True)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into tensors (``prefix/state/<i>/<key>``) and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}/state/{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], doc: dict[str, Any],
                   prefix: str) -> None:
    """Inverse of :func:`optimizer_tensors` (tensors keep their saved dtype; devices follow params)."""
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}/state/"
    for k, v in tensors.items():
        if k.startswith(head):
            idx, key = k[len(head):].split("/", 1)
            state.setdefault(int(idx), {})[key] = v
    for idx, vals in doc["scalars"].items():
        state.setdefault(int(idx), {}).update(vals)
    groups = doc["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{prefix}: optimiser state does not match ({exc})") from None
