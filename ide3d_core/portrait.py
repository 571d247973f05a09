# SPDX-License-Identifier: GPL-3.0-or-later
"""Portrait documents (``.ide3d``): everything one inverted and edited portrait needs, in one file.

A :class:`Portrait` holds the source camera (25-float label), the source image (and mask, if given),
the base generator's config and fingerprint, the pivotal-tuned generator as a :class:`WeightDelta`
from the base model, and the edit history: a list of :class:`EditRecord` (kind, JSON parameters and
the full :class:`PortraitState` after the edit: codes ``ws`` and an optional region restyle) with a
cursor ``current`` for undo/redo. Record 0 is the inversion result itself.

This module is the public face of the document; its parts live in

* :mod:`ide3d_core.portrait_document` -- the values: :class:`Portrait`, :class:`EditRecord`,
  :class:`PortraitState`, :class:`Restyle`, :class:`SourceView`;
* :mod:`ide3d_core.weight_delta` -- :class:`WeightDelta`, :func:`generator_fingerprint`,
  :func:`generator_config`;
* :mod:`ide3d_core.portrait_file` -- the ``.ide3d`` zip layout (version 1), :func:`encode_portrait` /
  :func:`decode_portrait`, atomic :func:`save_portrait` and strict :func:`load_portrait`;
* :mod:`ide3d_core.portrait_checks` -- the decoder's limits and value checks, and :class:`PortraitError`,
  the one error of the document.
"""
from __future__ import annotations

import os  # noqa: F401 (tests patch os.fsync through this module)

from ide3d_core.portrait_checks import PortraitError
from ide3d_core.portrait_document import EditRecord, Portrait, PortraitState, Restyle, SourceView
from ide3d_core.portrait_file import (FORMAT, SUFFIX, VERSION, decode_portrait, encode_portrait, load_portrait,
                                      save_portrait)
from ide3d_core.weight_delta import WeightDelta, generator_config, generator_fingerprint

__all__ = ["EditRecord", "FORMAT", "Portrait", "PortraitError", "PortraitState", "Restyle", "SUFFIX",
           "SourceView", "VERSION", "WeightDelta", "decode_portrait", "encode_portrait", "generator_config",
           "generator_fingerprint", "load_portrait", "save_portrait"]
