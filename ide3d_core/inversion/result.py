# SPDX-License-Identifier: GPL-3.0-or-later
"""What an inversion returns (:class:`InversionResult`) and the portrait document made from it.

Returned by :func:`~ide3d_core.inversion.procedure.invert_views`; re-exported by
:mod:`ide3d_core.inversion.procedure` and :mod:`ide3d_core.inversion`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ide3d_core.inversion.views import ViewReport
from ide3d_core.portrait import (EditRecord, Portrait, PortraitState, SourceView, WeightDelta,
                                 generator_fingerprint)


@dataclass(eq=False)
class InversionResult:
    """What :func:`~ide3d_core.inversion.procedure.invert_views` found.

    Attributes:
        ws: [1, num_ws, w_dim] pivot codes (after optimisation), shared by every view.
        ws_init: [1, num_ws, w_dim] codes after the encoder stage (or the average codes).
        camera: (25,) float32 label of the primary (most frontal) view.
        generator: the generator to render with: ``delta.apply(base)`` (bit-identical to what a saved
            document rebuilds), or the base model when there was no tuning.
        delta: the tuned weights as a difference from the base (None without tuning).
        mask: (H, W) uint8 label ids of the primary view (given, parsed or self-rendered); mask_source says
            which.
        stages: per stage name -> {"psnr": dB (mean over the used views), "loss": final combined loss,
            "seconds": time, "steps": steps run}.
        notes: human-readable remarks (fallbacks taken, skipped and odd views).
        views: one :class:`ViewReport` per input view, in input order.
        primary: index (into the input views) of the primary view.
    """

    ws: torch.Tensor
    ws_init: torch.Tensor
    camera: np.ndarray
    generator: nn.Module
    delta: Optional[WeightDelta]
    mask: np.ndarray
    mask_source: str
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    views: tuple[ViewReport, ...] = ()
    primary: int = 0

    def photo_projection(self, sources: Sequence[tuple[Any, np.ndarray | None] | None]):
        """:func:`ide3d_core.photo_projection.prepare_projection` of the used views' photos with the cameras
        they were fitted with: what a portrait made from this result lays over its renders. ``sources``:
        one (image: (H, W, 3) uint8 or [1, 3, H, W] image range, mask or None) per *input* view, or None."""
        from ide3d_core.photo_projection import prepare_projection

        if len(sources) != len(self.views):
            raise ValueError(f"sources has {len(sources)} entries for {len(self.views)} views")
        photos = [(sources[v.index][0], v.camera, sources[v.index][1]) for v in self.views
                  if v.used and v.camera is not None and sources[v.index] is not None]
        return prepare_projection(self.generator, self.ws, photos)

    def portrait(self, base: nn.Module, source_image: np.ndarray | None = None,
                 source_mask: np.ndarray | None = None, generator_config: dict[str, Any] | None = None,
                 model_hint: str | None = None, params: dict[str, Any] | None = None,
                 sources: Sequence[tuple[np.ndarray, np.ndarray | None] | None] | None = None) -> Portrait:
        """A portrait document (history = one "invert" record) for this result.

        ``source_image``/``source_mask`` are the primary view's picture (the document's source view).
        ``sources`` -- one (uint8 image, mask or None) per *input* view, or None -- records every used view
        of a multi-view inversion (:class:`~ide3d_core.portrait.SourceView`); with one used view nothing
        more is stored (the document is that of a single-view inversion)."""
        rec_params: dict[str, Any] = {"stages": self.stages, "mask_source": self.mask_source, **(params or {})}
        if len(self.views) > 1:
            rec_params["views"] = [v.summary() for v in self.views]
        rec = EditRecord("invert", rec_params, PortraitState(self.ws.detach().float().cpu().clone()))
        views: tuple[SourceView, ...] = ()
        used = [v for v in self.views if v.used]
        if sources is not None and len(used) > 1:
            if len(sources) != len(self.views):
                raise ValueError(f"sources has {len(sources)} entries for {len(self.views)} views")
            views = tuple(SourceView(image=sources[v.index][0], camera=v.camera, mask=sources[v.index][1],
                                     params=v.summary()) for v in used if sources[v.index] is not None)
        return Portrait(camera=self.camera, generator_config=generator_config or {},
                        base_fingerprint=generator_fingerprint(base), history=(rec,), delta=self.delta,
                        source_image=source_image, source_mask=source_mask, model_hint=model_hint,
                        source_views=views)
