# SPDX-License-Identifier: GPL-3.0-or-later
"""The one on-disk format of every network the project saves: ``folder/config.json`` beside
``folder/<name>.safetensors`` (no pickles, nothing executed on load).

``config.json`` is ``{"format": F, "version": V, "dtype": D, "config": {...}}``: ``format`` names the
kind of network (``ide3d-generator``, ``ide3d-encoder``, ...), ``config`` holds the fields of its frozen
config dataclass. Loading is strict: a wrong format, a newer version, unknown or missing config keys,
and missing, unexpected or mis-shaped weights all raise ``ValueError`` with one line naming the file.
Weights saved in float16/bfloat16 load into the module's own (float32) parameters.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

CONFIG_FILE = "config.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
T = TypeVar("T")


def save_module(module: nn.Module, folder: str | Path, *, format: str, version: int, config: dict[str, Any],
                weights_file: str, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` and ``weights_file`` (floating tensors cast to ``dtype``) into ``folder``."""
    from safetensors.torch import save_file

    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": format, "version": version, "dtype": name, "config": config}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in module.state_dict().items()}
    save_file(tensors, str(folder / weights_file), metadata={"format": format, "version": str(version)})
    return folder


def read_config(folder: str | Path, *, format: str, version: int) -> dict[str, Any]:
    """The ``config`` entry of ``folder/config.json`` after checking its format and version."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        kind = format.removeprefix("ide3d-")
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ValueError(f"{folder} is not {article} {kind} folder ({CONFIG_FILE} missing)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise ValueError(f"{path} is not an {format} config")
    if not isinstance(meta.get("version"), int) or meta["version"] > version:
        raise ValueError(f"{path} has version {meta.get('version')}; this build reads up to {version}")
    extra = sorted(set(meta) - {"format", "version", "dtype", "config"})
    if extra or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: unknown keys {extra} or no config")
    return meta["config"]


def dataclass_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Strict construction of a config dataclass: unknown or missing keys raise; lists become tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        raise ValueError(f"{where}: unknown config keys {unknown}, missing config keys {missing}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def load_weights(module: nn.Module, folder: str | Path, weights_file: str) -> nn.Module:
    """Load ``folder/weights_file`` into ``module`` strictly (names and shapes must match exactly)."""
    from safetensors.torch import load_file

    path = Path(folder) / weights_file
    if not path.is_file():
        raise ValueError(f"no weights at {path}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    wrong = [k for k, v in tensors.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path}: mis-shaped weights {wrong[:5]}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return module
