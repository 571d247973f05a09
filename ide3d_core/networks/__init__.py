# SPDX-License-Identifier: GPL-3.0-or-later
"""The IDE-3D generator networks (see docs/generator.md and :mod:`ide3d_core.networks.generator`)."""
from ide3d_core.networks.config import CONFIGS, GeneratorConfig
from ide3d_core.networks.generator import FieldSample, Generator, RenderResult, TriPlanes
from ide3d_core.networks.io import load_generator, save_generator

__all__ = ["CONFIGS", "GeneratorConfig", "Generator", "TriPlanes", "RenderResult", "FieldSample",
           "save_generator", "load_generator"]
