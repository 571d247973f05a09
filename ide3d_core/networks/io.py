# SPDX-License-Identifier: GPL-3.0-or-later
"""Save and load generators: ``folder/config.json`` + ``folder/generator.safetensors`` (no pickles).

Loading is strict: unknown or missing config keys, a format mismatch, and missing, unexpected or
mis-shaped weights raise ``ValueError`` naming them. Weights saved in float16 load into a float32
module; float32 round trips are bit exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ide3d_core.networks.config import GeneratorConfig
from ide3d_core.networks.generator import Generator

FORMAT = "ide3d-generator"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"


def save_generator(G: Generator, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the config and weights (floating tensors cast to ``dtype``) into ``folder``."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "dtype": str(dtype).removeprefix("torch."),
            "config": G.config.to_dict()}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in G.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
    return folder


def load_config(folder: str | Path) -> GeneratorConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"no generator at {folder}: {CONFIG_FILE} missing")
    meta = json.loads(path.read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} config")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported version {meta.get('version')} (expected {VERSION})")
    extra = sorted(set(meta) - {"format", "version", "dtype", "config"})
    if extra:
        raise ValueError(f"{path}: unknown keys {extra}")
    return GeneratorConfig.from_dict(meta["config"])


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Build the generator of ``folder`` (float32, eval mode) on ``device``; strict."""
    cfg = load_config(folder)
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(f"no generator weights at {path}")
    tensors = load_file(str(path))
    G = Generator(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    wrong = [k for k, v in tensors.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path}: mis-shaped weights {wrong[:5]}")
    G.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return G.to(device).eval()
