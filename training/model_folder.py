# SPDX-License-Identifier: GPL-3.0-or-later
"""Write a trained stage into a new model folder: a copy of the source folder with the new generator.

Used by the commands that train one stage of an existing model (``ide3d train-background``, ``ide3d
train-detail``): the source folder is never changed, and the new one appears whole or not at all.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def write_model_copy(model: str | Path, out: str | Path, generator, fit_file: str, stats: dict) -> Path:
    """Copy the model folder ``model`` to ``out`` (which must not exist) with ``generator`` saved in float16
    and ``stats`` as JSON in ``fit_file``; built in ``out.partial`` and renamed when complete."""
    from ide3d_core.atomic_file import write_atomic
    from ide3d_core.networks.io import save_generator

    model, out = Path(model), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model, tmp)
    save_generator(generator, tmp, dtype=torch.float16)
    write_atomic(tmp / fit_file, (json.dumps(stats, indent=2) + "\n").encode())
    tmp.rename(out)
    return out
