# SPDX-License-Identifier: GPL-3.0-or-later
"""The values of a portrait document: :class:`Portrait` and its edit history.

A :class:`Portrait` holds the source camera (25-float label), the source image (and mask, if given),
the base generator's config and fingerprint, the pivotal-tuned generator as a
:class:`~ide3d_core.weight_delta.WeightDelta` from the base model, and the edit history: a list of
:class:`EditRecord` (kind, JSON parameters and the full :class:`PortraitState` after the edit: codes ``ws``
and an optional :class:`Restyle`) with a cursor ``current`` for undo/redo. Record 0 is the inversion result
itself. A multi-view inversion also keeps every view as a :class:`SourceView`.

The file format of these values is :mod:`ide3d_core.portrait_file`; all of them are re-exported by
:mod:`ide3d_core.portrait`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ide3d_core.portrait_checks import PortraitError
from ide3d_core.weight_delta import WeightDelta, generator_fingerprint


@dataclass(frozen=True, eq=False)
class Restyle:
    """A region restyle: points whose semantic argmax is in ``classes`` take their texture from the
    tri-planes of ``style_ws`` ([1, num_ws, w_dim]) (the generator's ``texture_swap``)."""

    style_ws: torch.Tensor
    classes: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class PortraitState:
    """What a render needs besides the generator: codes ``ws`` [1, num_ws, w_dim] (float32), an
    optional region restyle and an optional shape residual ``[1, 3, Cs, r, r]`` (float32) on the semantic
    tri-planes (:mod:`ide3d_core.shape_residual`: a refined mask edit; edits after it keep it)."""

    ws: torch.Tensor
    restyle: Restyle | None = None
    shape_residual: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class EditRecord:
    """One step of the edit history: its kind ("invert", "mask", "restyle", "style", ...), JSON-able
    parameters, and the full state after it."""

    kind: str
    params: dict[str, Any]
    state: PortraitState


@dataclass(frozen=True, eq=False)
class SourceView:
    """One photo of a multi-view inversion: (H, W, 3) uint8 RGB ``image`` as inverted, its (25,) camera
    label, its (H, W) uint8 label ids ``mask`` (or None) and JSON-able ``params`` (name, weight, residual)."""

    image: np.ndarray
    camera: np.ndarray
    mask: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Portrait:
    """An inverted (and possibly edited) portrait. See the module docstring.

    Attributes:
        camera: (25,) float32 packed label of the source view.
        generator_config: the base generator's config as a JSON-able dict (for display and checks).
        base_fingerprint: :func:`generator_fingerprint` of the base model.
        history: edit records, record 0 = inversion; ``current`` indexes the visible one.
        delta: the pivotal-tuned weights, or None when the base model is used unchanged.
        source_image: (H, W, 3) uint8 RGB or None. source_mask: (H, W) uint8 label ids or None.
        model_hint: where the base model was loaded from (informative only).
        source_views: every view of a multi-view inversion (the primary one is also ``source_image``);
            empty for single-view portraits.
    """

    camera: np.ndarray
    generator_config: dict[str, Any]
    base_fingerprint: str
    history: tuple[EditRecord, ...]
    current: int = 0
    delta: WeightDelta | None = None
    source_image: np.ndarray | None = None
    source_mask: np.ndarray | None = None
    model_hint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source_views: tuple[SourceView, ...] = ()

    def __post_init__(self) -> None:
        cam = np.asarray(self.camera, dtype=np.float32).reshape(-1)
        if cam.shape != (25,):
            raise ValueError(f"camera must be a 25-float label, got shape {cam.shape}")
        object.__setattr__(self, "camera", cam)
        if not self.history:
            raise ValueError("a portrait needs at least one history record")
        if not 0 <= self.current < len(self.history):
            raise ValueError(f"history cursor {self.current} out of range 0..{len(self.history) - 1}")

    @property
    def state(self) -> PortraitState:
        return self.history[self.current].state

    @property
    def ws(self) -> torch.Tensor:
        return self.state.ws

    def with_record(self, record: EditRecord) -> "Portrait":
        """A new portrait with ``record`` appended after the cursor (any redo tail is dropped)."""
        return replace(self, history=self.history[: self.current + 1] + (record,), current=self.current + 1)

    def generator(self, base: nn.Module) -> nn.Module:
        """The generator this portrait renders with: ``base`` plus the tuned delta (if any)."""
        if self.delta is None:
            if generator_fingerprint(base) != self.base_fingerprint:
                raise PortraitError("the portrait was made with a different base model "
                                    f"(fingerprint {self.base_fingerprint})")
            return base
        return self.delta.apply(base)
