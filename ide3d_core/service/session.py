# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker's portrait session: the portrait documents it holds, keyed by portrait id.

Each :class:`SessionPortrait` holds one :class:`ide3d_core.portrait.Portrait` at one *revision* (the
content hash of its ``.ide3d`` document, :func:`revision_of`), plus what is expensive to rebuild: the
generator it renders with (the base model plus its pivotal-tuned delta), the tri-planes of its current
state and its canonical label map (the map a mask edit paints on).

The client owns the truth: every request on a portrait names (id, revision, document file). When the
session holds that id at that revision it is used as it is; otherwise (a restarted worker, a portrait
from a reopened .blend, Blender's own undo) the document is loaded and checked against the revision.
So a worker that dies loses nothing the client did not already have.

The session is bounded (least recently used portraits are dropped first); nothing here is global.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Portraits kept at once; older ones are reloaded from their documents when asked for again.
MAX_PORTRAITS = 4


def revision_of(document: bytes) -> str:
    """The revision of a document: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(document).hexdigest()[:16]


@dataclass(eq=False)
class SessionPortrait:
    """One portrait of the session at one revision (see the module docstring).

    Attributes:
        portrait: the document value.
        revision: :func:`revision_of` its encoded bytes.
        generator: the generator it renders with (``portrait.generator(base)``).
        canonical_labels: (R, R) uint8 label ids of its canonical view, once rendered.
        planes: cached ``(planes, ws, texture_swap)`` of its current state on the device, once built.
        live_base_labels: for a portrait whose visible record is a live mask edit, the canonical label
            ids of the state that live session started from (saves a render per stroke).
        occupancy: cached occupancy grid of those planes (the fast renderer's), once built.
        projection: its photos ready to lay over renders (:mod:`ide3d_core.photo_projection`), once built;
            False for a portrait without photos.
    """

    portrait: Any
    revision: str
    generator: Any
    canonical_labels: np.ndarray | None = None
    planes: Any = None
    live_base_labels: np.ndarray | None = None
    occupancy: Any = None
    projection: Any = None

    def photo_projection(self):
        """:func:`ide3d_core.photo_projection.portrait_projection` of the portrait (built once; None for a
        portrait without photos)."""
        if self.projection is None:
            from ide3d_core.photo_projection import portrait_projection

            self.projection = portrait_projection(self.generator, self.portrait) or False
        return self.projection or None

    def occupancy_grid(self, device):
        """:func:`ide3d_core.fast_render.occupancy_grid` of :meth:`render_inputs`' planes (built once;
        None for a generator the fast path does not support)."""
        if self.occupancy is None:
            from ide3d_core.fast_render import occupancy_grid, supports

            if not supports(self.generator):  # a stand-in generator: rendered by its own render()
                return None
            self.occupancy = occupancy_grid(self.generator, self.render_inputs(device)[0])
        return self.occupancy

    def render_inputs(self, device):
        """``(planes, ws [1, num_ws, w_dim], texture_swap)`` of the current state on ``device``
        (:func:`ide3d_core.operations.render.render_inputs`, built once)."""
        if self.planes is None:
            from ide3d_core.operations.render import render_inputs

            # bf16 synthesis where the CPU has native bf16 (the live edit's cost; within the fast
            # renderer's quality bounds); "reference" renders re-synthesise float32 planes
            self.planes = render_inputs(self.generator, self.portrait.state, device, planes_dtype="auto")
        return self.planes


class PortraitSession:
    """Portraits by id, least recently used first out beyond ``capacity``."""

    def __init__(self, capacity: int = MAX_PORTRAITS) -> None:
        self.capacity = int(capacity)
        self._items: OrderedDict[str, SessionPortrait] = OrderedDict()

    def get(self, portrait_id: str, revision: str) -> SessionPortrait | None:
        """The session entry of ``portrait_id`` if it is at ``revision``, else None."""
        entry = self._items.get(portrait_id)
        if entry is None or entry.revision != revision:
            return None
        self._items.move_to_end(portrait_id)
        return entry

    def latest(self, portrait_id: str) -> SessionPortrait | None:
        """The session entry of ``portrait_id`` at whatever revision it holds, or None (what an edit of it
        can carry over: the generator's photo projection)."""
        return self._items.get(portrait_id)

    def put(self, portrait_id: str, entry: SessionPortrait) -> None:
        self._items[portrait_id] = entry
        self._items.move_to_end(portrait_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, portrait_id: str) -> bool:
        return portrait_id in self._items

    def __len__(self) -> int:
        return len(self._items)


def write_document(document: bytes, path: Path) -> Path:
    """Write document bytes to ``path`` (a fresh file in a job folder) atomically."""
    from ide3d_core.atomic_file import write_atomic

    return write_atomic(path, document)
