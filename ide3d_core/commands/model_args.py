# SPDX-License-Identifier: GPL-3.0-or-later
"""``--model``, ``--encoders`` and ``--device`` of the sub-commands: :mod:`ide3d_core.model_loading`
with its errors turned into one-line ``UserError`` messages and its warnings printed to stderr."""
from __future__ import annotations

import sys
from pathlib import Path

from ide3d_core.cli import UserError
from ide3d_core.model_loading import ModelError, NoModel, load_base_generator, load_model_encoder, \
    load_model_segnet, resolve_device


def device_arg(name: str):
    """``torch.device`` of a ``--device`` value ("auto", "cpu", "cuda", "cuda:1", ...)."""
    try:
        return resolve_device(name)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def load_base(spec: str, device):
    """The frozen base generator of a ``--model`` spec ("" bundled, "config:NAME", or a folder)."""
    try:
        return load_base_generator(spec, device, warn=lambda msg: print(f"ide3d: warning: {msg}", file=sys.stderr))
    except NoModel as exc:
        raise UserError(f"{exc}; pass --model") from None
    except ModelError as exc:
        raise UserError(str(exc)) from None


def load_encoders(encoders: Path | None, model_spec: str, which: str, device):
    """The ``which`` ("standard" | "canonical") encoder (``--encoders`` or ``<model>/encoders``), or None."""
    try:
        return load_model_encoder(model_spec, which, device, encoders)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def load_parser(folder: Path | None, model_spec: str, device):
    """The face parser (``--parser DIR`` or ``<model>/segnet``), or None when the model has none."""
    try:
        return load_model_segnet(model_spec, device, folder)
    except ModelError as exc:
        raise UserError(str(exc)) from None
