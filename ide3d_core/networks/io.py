# SPDX-License-Identifier: GPL-3.0-or-later
"""Save and load generators: ``folder/config.json`` + ``folder/generator.safetensors`` in the format of
:mod:`ide3d_core.weights_io` (no pickles).

Loading is strict and bounded: unknown or missing config keys, a field of the wrong type or out of
range, a config whose memory estimate is above the limit, a format mismatch, and missing, unexpected
or mis-shaped weights raise ``ValueError`` naming them, before the generator is built (config) or
its weights are read (the safetensors header is checked first). Weights saved in float16 load into a float32
module; float32 round trips are bit exact.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ide3d_core.networks.config import GeneratorConfig
from ide3d_core.networks.generator import Generator
from ide3d_core.weights_io import load_weights, read_config, save_module

FORMAT = "ide3d-generator"
VERSION = 1
WEIGHTS_FILE = "generator.safetensors"


def save_generator(G: Generator, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the config and weights (floating tensors cast to ``dtype``) into ``folder``."""
    return save_module(G, folder, format=FORMAT, version=VERSION, config=G.config.to_dict(),
                       weights_file=WEIGHTS_FILE, dtype=dtype)


def load_config(folder: str | Path) -> GeneratorConfig:
    """The config of a generator folder, strictly checked: every field typed and in range, and the
    memory estimate under :data:`~ide3d_core.networks.config.MAX_MODEL_BYTES` (before anything is
    allocated). Raises ``ValueError`` (:class:`~ide3d_core.networks.config.ConfigError`) with one line."""
    cfg = GeneratorConfig.from_dict(read_config(folder, format=FORMAT, version=VERSION))
    cfg.check_memory()
    return cfg


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Build the generator of ``folder`` (float32, eval mode) on ``device``; strict."""
    G = Generator(load_config(folder))
    return load_weights(G, folder, WEIGHTS_FILE).to(device).eval()
