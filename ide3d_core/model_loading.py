# SPDX-License-Identifier: GPL-3.0-or-later
"""Model specs, devices and loading: the one place every command and the backend service resolve them.

A *model spec* is a string:

* ``""``: the bundled model, :data:`BUNDLED_MODEL_DIR` (``ide3d_core/models/default``);
* ``"config:NAME"``: an untrained generator of ``ide3d_core.networks.CONFIGS[NAME]`` whose weights are
  seeded with 0 (tests, demos; loading it warns, since its pictures are noise);
* anything else: a model folder written by ``save_generator`` (``config.json`` + ``generator.safetensors``);
  a file inside the folder stands for the folder.

A model folder may also hold ``encoders/standard`` and ``encoders/canonical`` (written by
``ide3d train-encoders``), ``segnet/`` (the face parser) and ``mesh_level.json`` (the calibrated mesh
surface level, :mod:`ide3d_core.mesh.level`).

Model folders are untrusted (a portrait document names its model folder): the config is typed,
bounded and its memory estimate checked before the generator is built, and the weights' header before
the weights are read (:mod:`ide3d_core.networks.io`). Failures raise :class:`ModelError` (a ``ValueError``) with one line; the command line turns it into a
``UserError``, the service into a ``model_error`` value. torch and the networks are imported when a
model is loaded, not at import time; the networks module is looked up by name at call time, so a
stand-in installed in ``sys.modules`` (tests) is honoured.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

#: The model used when no spec is given.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"
#: Prefix of the specs that name an untrained generator config.
CONFIG_PREFIX = "config:"


class ModelError(ValueError):
    """The model (or its device) could not be found or loaded; the message is one line."""


class NoModel(ModelError):
    """There is no model at the folder a spec names (``folder``); the message is one line."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        super().__init__(f"no model at {folder} (expected config.json and generator.safetensors)")


def config_name(spec: str) -> str | None:
    """``NAME`` of a ``"config:NAME"`` spec, else None."""
    return spec[len(CONFIG_PREFIX):] if spec.startswith(CONFIG_PREFIX) else None


def model_folder(spec: str) -> Path | None:
    """The folder of a model spec (None for ``config:NAME``); ``""`` is the bundled model's folder."""
    if config_name(spec) is not None:
        return None
    folder = Path(spec).expanduser() if spec else BUNDLED_MODEL_DIR
    return folder.parent if folder.is_file() else folder


def surface_level(spec: str) -> float:
    """The mesh surface density level of a model: its calibrated ``mesh_level.json`` when it has one
    (see :mod:`ide3d_core.mesh.level`), else ``DEFAULT_LEVEL``. A malformed file raises :class:`ModelError`."""
    from ide3d_core.mesh.level import read_level

    try:
        return read_level(model_folder(spec))
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def describe(spec: str) -> str:
    """A human-readable name of the spec (the bundled model's folder for ``""``)."""
    return spec or f"bundled ({BUNDLED_MODEL_DIR})"


def resolve_device(name: str) -> Any:
    """``"auto"`` (CUDA when torch sees a device, else the CPU) or a torch device string -> ``torch.device``.

    Raises :class:`ModelError` for a name torch does not know and for CUDA without a CUDA device.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModelError(f"unknown device {name!r} (use cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} was asked for but torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {name!r} was asked for but torch sees no Apple GPU (MPS)")
    return device


def load_base_generator(spec: str, device: Any, warn: Callable[[str], None] | None = None) -> Any:
    """The frozen generator of a model spec on ``device`` (eval mode, ``requires_grad`` off, float32).

    Args:
        spec: ``""`` | ``"config:NAME"`` | a model folder (see the module docstring).
        device: a ``torch.device`` (or its string).
        warn: called with a one-line warning when the generator is untrained (``config:NAME``).
    """
    networks = importlib.import_module("ide3d_core.networks")
    name = config_name(spec)
    if name is not None:
        if name not in networks.CONFIGS:
            raise ModelError(f"unknown generator config {name!r}; known: {', '.join(networks.CONFIGS)}")
        if warn is not None:
            warn(f"using an UNTRAINED '{name}' generator (random weights, seed 0) - the pictures are noise")
        g = networks.Generator(networks.CONFIGS[name])  # the constructor's default seed is 0
    else:
        folder = model_folder(spec)
        if not (folder / "config.json").is_file():
            raise NoModel(folder)
        try:
            g = networks.load_generator(folder, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad model file for the user
            raise ModelError(f"could not load the model from {folder}: {one_line(exc)}") from None
    return g.to(device).eval().requires_grad_(False)


def load_model_encoder(spec: str, which: str, device: Any, encoders: Path | None = None) -> Any:
    """The ``which`` (``"standard"`` | ``"canonical"``) encoder of a model, or None when there is none.

    ``encoders`` is a folder with ``standard/`` and ``canonical/`` sub-folders; by default
    ``<model folder>/encoders`` (none for ``config:NAME`` specs).
    """
    if which not in ("standard", "canonical"):
        raise ValueError(f"which must be standard or canonical, got {which!r}")
    if encoders is None:
        folder = model_folder(spec)
        if folder is None:
            return None
        encoders = folder / "encoders"
    sub = Path(encoders).expanduser() / which
    if not (sub / "config.json").is_file():
        return None
    from ide3d_core.encoders import load_encoder

    try:
        return load_encoder(sub, device=device)
    except Exception as exc:  # noqa: BLE001 - also unreadable weights (SafetensorError is no ValueError)
        raise ModelError(f"could not load the {which} encoder: {one_line(exc)}") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` chars."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_model_segnet(spec: str, device: Any, folder: Path | None = None) -> Any:
    """The face parser (:class:`ide3d_core.segnet.SegNet`) in ``folder``, else in ``<model folder>/segnet``;
    None when the model has none (``folder`` given but missing raises :class:`ModelError`)."""
    if folder is None:
        model_dir = model_folder(spec)
        if model_dir is None or not (model_dir / "segnet" / "config.json").is_file():
            return None
        folder = model_dir / "segnet"
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelError(f"no face parser at {folder} (expected config.json and segnet.safetensors)")
    from ide3d_core.segnet import load_segnet

    try:
        return load_segnet(folder, device=device)
    except Exception as exc:  # noqa: BLE001 - also unreadable weights
        raise ModelError(f"could not load the face parser from {folder}: {exc}") from None
