# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the add-on and service tests.

* :func:`run_blender` runs a Python script that imports ``bpy`` in a **subprocess** with a timeout and a
  throw-away HOME / XDG_CONFIG_HOME / XDG_CACHE_HOME / BLENDER_USER_RESOURCES (Blender can segfault or
  hang at exit, and it writes to the home directory). The script prints ``RESULT <json>`` lines;
  the parsed results are returned.
* :func:`make_tiny_model` writes a model folder with the untrained ``tiny`` generator and untrained
  encoders (``encoders/standard`` and the canonical editor ``encoders/canonical``): enough for the
  wiring of photo import and mask edits, not for their quality.
* :func:`install_sphere_networks` puts a stand-in ``ide3d_core.networks`` into ``sys.modules``: a
  "generator" following the generator API contract whose render is an analytic sphere, so tests can
  compare a neural render with Blender's own geometry without a trained model.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

requires_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")

#: The head of every add-on test script: say(**kw) prints a RESULT line; run(op) -> (sorted result set,
#: error text), since an ERROR report raises RuntimeError in background mode.
SCRIPT_HELPERS = """
import json
import numpy as np
import bpy, mathutils
def say(**kw): print("RESULT " + json.dumps(kw), flush=True)
def run(op, **kw):
    try:
        return sorted(op(**kw)), ""
    except RuntimeError as exc:   # an ERROR report raises in background mode
        return ["CANCELLED"], str(exc).strip()
"""


def isolated_env(home: Path) -> dict[str, str]:
    """Environment with every Blender user path inside ``home`` (created)."""
    env = dict(os.environ)
    for name in ("home", "config", "cache", "blender"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home / "home"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"), BLENDER_USER_RESOURCES=str(home / "blender"),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return env


def run_blender(script: str, tmp_path: Path, timeout: float = 120.0) -> list:
    """Run ``script`` (dedented) with this interpreter in an isolated subprocess.

    Returns the JSON payloads of its ``RESULT `` lines. Fails the test with the output on a non-zero
    exit, a crash or a timeout."""
    path = tmp_path / "blender_script.py"
    path.write_text(textwrap.dedent(script))
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=str(tmp_path), env=isolated_env(tmp_path / "iso"),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"Blender script timed out after {timeout} s\n--- stdout\n{exc.stdout}\n--- stderr\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"Blender script exited with {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


def make_tiny_model(folder: Path) -> Path:
    """``folder`` with ``config.json``/``generator.safetensors`` of ``Generator("tiny", seed=0)`` and
    untrained ``encoders/standard`` and ``encoders/canonical`` (weights from torch seed 0); returns it."""
    import torch

    from ide3d_core.encoders import HybridEncoder, config_for_generator, save_encoder
    from ide3d_core.networks import Generator, save_generator

    if (folder / "config.json").is_file():
        return folder
    g = Generator("tiny", seed=0)
    save_generator(g, folder)
    for which in ("standard", "canonical"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            enc = HybridEncoder(config_for_generator(g, "tiny", canonical=which == "canonical"), w_avg=g.mapping.w_avg)
        save_encoder(enc, folder / "encoders" / which)
    return folder


# ----------------------------------------------------------------------------------------------
# A stand-in generator: an analytic sphere, for tests that need the render path but not a model
# ----------------------------------------------------------------------------------------------

SPHERE_RADIUS = 0.3  # model units, centred at the model-world origin
SPHERE_HAIR_Y = 0.15  # points of the sphere above this height are "hair", the rest "skin"


def install_sphere_networks(resolution: int = 64):
    """Install a stand-in ``ide3d_core.networks`` module; returns it."""
    import torch

    from ide3d_core import cameras

    class SphereGenerator(torch.nn.Module):
        z_dim = w_dim = 8
        c_dim = 25
        num_ws, num_shape_ws, num_texture_ws = 4, 2, 2
        default_truncation = 0.7

        def __init__(self, cfg):
            super().__init__()
            self.config = cfg
            self.img_resolution = self.neural_resolution = cfg["resolution"]
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def codes_from_seeds(self, seeds, truncation_psi=1.0, c=None):
            zs = [torch.randn(self.num_ws, self.w_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
            return truncation_psi * torch.stack(zs)

        def planes(self, ws):
            return types.SimpleNamespace(semantic=ws, texture=ws)  # stands in for a TriPlanes value

        def render(self, planes, c, ws, neural_resolution=None, generator=None, texture_swap=None):
            res = self.img_resolution
            o, d = cameras.rays_from_labels(c.double(), res, res)
            b = (o * d).sum(-1)
            disc = b * b - ((o * o).sum(-1) - SPHERE_RADIUS ** 2)
            hit = disc > 0
            t = -b - torch.sqrt(disc.clamp(min=0))
            p = o + t[..., None] * d
            hair = hit & (p[..., 1] > SPHERE_HAIR_Y)
            sem = torch.full((c.shape[0], res * res, 19), -10.0, dtype=torch.float64)
            sem[..., 0] = torch.where(hit, -10.0, 10.0)
            sem[..., 1] = torch.where(hit & ~hair, 10.0, -10.0)
            sem[..., 13] = torch.where(hair, 10.0, -10.0)
            shade = torch.where(hit, (p / SPHERE_RADIUS)[..., 2].clamp(0, 1), torch.zeros_like(t))
            img = torch.stack([shade, shade * 0.5, 1 - shade], -1) * 2 - 1
            to_img = lambda x: x.reshape(c.shape[0], res, res, -1).permute(0, 3, 1, 2).float()  # noqa: E731
            return types.SimpleNamespace(image=to_img(img), semantic=to_img(sem), image_raw=to_img(img),
                                         semantic_raw=to_img(sem), depth=to_img(t[..., None]),
                                         opacity=to_img(hit[..., None].double()))

    mod = types.ModuleType("ide3d_core.networks")
    mod.CONFIGS = {"tiny": {"resolution": resolution}}
    mod.Generator = SphereGenerator
    mod.load_generator = lambda folder, device="cpu": SphereGenerator(
        json.loads((Path(folder) / "config.json").read_text()))
    sys.modules["ide3d_core.networks"] = mod
    return mod
