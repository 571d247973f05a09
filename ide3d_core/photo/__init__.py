# SPDX-License-Identifier: GPL-3.0-or-later
"""Real photo import: load, detect, align, estimate the head pose and build a semantic mask.

``prepare(photo)`` runs the whole chain and returns a :class:`PreparedPhoto` (aligned image, camera in the
project convention, 19-class mask, warnings and per-step timings). See ``docs/photo_import.md``.
Sub-modules: :mod:`.load`, :mod:`.detect`, :mod:`.align`, :mod:`.pose`, :mod:`.mask`, :mod:`.pipeline`.
"""
from __future__ import annotations

from .errors import PhotoError
from .pipeline import PreparedPhoto, PrepareOptions, prepare

__all__ = ["PhotoError", "PrepareOptions", "PreparedPhoto", "prepare"]
