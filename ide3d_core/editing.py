# SPDX-License-Identifier: GPL-3.0-or-later
"""Editing a portrait: mask edits through the canonical editor, region restyles, global style, undo/redo.

Every edit is a pure function ``Portrait -> Portrait`` that appends an :class:`EditRecord` holding the
full new state (codes and restyle), so undo/redo only move the history cursor and restore the exact
codes. The generator passed in is the one the portrait renders with (``portrait.generator(base)``:
the base model plus its pivotal-tuned delta); it is never modified.

Mask edit (IDE-3D section 3.3): the portrait's semantic map is rendered from the canonical camera, the
user paints on it, and the canonical editor maps the painted map to new shape codes ``w_s``; the texture
codes ``w_t`` are kept bit for bit. Two modes:

* ``"residual"`` (default): ``w_s' = w_s + E(painted) - E(rendered canonical map)``. Where the painted
  map equals the rendered one the codes do not move at all, and the encoder's own reconstruction error
  on the unedited map cancels, so unedited regions are better kept.
* ``"direct"``: ``w_s' = E(painted)``, as the original Painter UI does.

Region restyle: points whose semantic argmax is in a class set take their texture from another code's
texture tri-plane (the generator's ``texture_swap``); all other points are untouched, so pixels whose
rays only meet such points are bit-identical. One restyle is active at a time: a new restyle replaces
the previous one (restyling a different region set with the same source extends the set).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ide3d_core.cameras import canonical_camera
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.portrait import EditRecord, Portrait, PortraitState, Restyle
from ide3d_core.progress import CancelToken, ProgressFn
from ide3d_core.shape_residual import RefineConfig, refine_residual, state_planes

MASK_MODES = ("residual", "direct")


def _label_tensor(camera_label: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    c = torch.as_tensor(np.asarray(camera_label, dtype=np.float32), device=device)
    return c.reshape(1, 25)


def _device(generator: nn.Module) -> torch.device:
    return next(generator.parameters()).device


# ------------------------------------------------------------------------------------------------
# Rendering a state
# ------------------------------------------------------------------------------------------------

def render_state(generator: nn.Module, state: PortraitState, camera_label: np.ndarray | torch.Tensor,
                 neural_resolution: int | None = None):
    """Render ``state`` from one camera (25-float label) -> the generator's RenderResult (batch 1)."""
    dev = _device(generator)
    ws = state.ws.to(dev)
    swap = None
    if state.restyle is not None:
        swap = (generator.planes(state.restyle.style_ws.to(dev)).texture, tuple(state.restyle.classes))
    c = _label_tensor(camera_label, dev) if not torch.is_tensor(camera_label) else camera_label.to(dev).reshape(-1, 25)
    return generator.render(state_planes(generator, state), c, ws, neural_resolution=neural_resolution,
                            texture_swap=swap)


@torch.no_grad()
def canonical_labels(generator: nn.Module, state: PortraitState, projection: Any = None) -> np.ndarray:
    """(H, W) uint8 label ids of the state's semantic render from the canonical camera (H = W =
    ``generator.img_resolution``): the map the user paints on. ``projection``: the portrait's
    :class:`~ide3d_core.photo_projection.PhotoProjection`, whose photo labels the painter's map shows."""
    c = _label_tensor(canonical_camera().label(), _device(generator))
    out = render_state(generator, state, c)
    semantic = out.semantic
    if projection is not None:
        semantic = projection.apply(generator, out, c, state)[1]
    return semantic[0].argmax(0).to(torch.uint8).cpu().numpy()


# ------------------------------------------------------------------------------------------------
# Mask edit
# ------------------------------------------------------------------------------------------------

def check_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Validate a painted label map: (size, size) integer ids in 0..18 -> uint8. ``ValueError`` otherwise."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape != (size, size):
        raise ValueError(f"the mask must be {size}x{size} label ids (the canonical render's size), got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() >= NUM_CLASSES):
        raise ValueError(f"mask label ids must be in 0..{NUM_CLASSES - 1}")
    if not (m > 0).any():
        raise ValueError("the mask holds no face labels (all background)")
    return m.astype(np.uint8)


@torch.no_grad()
def mask_edit(portrait: Portrait, generator: nn.Module, editor: nn.Module, mask: np.ndarray,
              mode: str = "residual", current: np.ndarray | None = None, projection: Any = None,
              refine: RefineConfig | None = None, progress: ProgressFn | None = None,
              cancel: CancelToken | None = None) -> Portrait:
    """Apply a painted canonical-view label map (see the module docstring). ``editor`` is the canonical
    editor (:class:`ide3d_core.encoders.HybridEncoder` with ``config.canonical``); keeps ``w_t`` exactly.
    ``current`` is the portrait's :func:`canonical_labels` if the caller already has them (a live
    session shows them to the painter), saving one render; direct mode renders nothing but the
    result (``pixels_changed`` is then recorded only when ``current`` is given). ``projection``: the
    portrait's photo projection, as the map the painter saw was rendered (:func:`canonical_labels`).

    ``refine``: after the editor's codes, fit the state's shape residual to the painted map
    (:func:`ide3d_core.shape_residual.refine_residual`, seconds; ``progress``/``cancel`` report and stop it).
    None (the live painting path, real time) keeps the previous state's residual as it is."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask edit mode must be one of {MASK_MODES}, got {mode!r}")
    if not getattr(editor.config, "canonical", False):
        raise ValueError("mask edits need the canonical editor (an encoder trained on front views)")
    state = portrait.state
    painted = check_mask(mask, int(generator.img_resolution))
    if current is None and (mode == "residual" or refine is not None):  # direct mode does not need it
        current = canonical_labels(generator, state, projection)
    dev = _device(editor)
    ns = int(generator.num_shape_ws)
    ws = state.ws.to(dev)
    w_s_new = editor.encode_shape(torch.as_tensor(painted, device=dev)[None].long())
    if mode == "residual":
        w_s_new = ws[:, :ns] + (w_s_new - editor.encode_shape(torch.as_tensor(current, device=dev)[None].long()))
    new_ws = torch.cat([w_s_new.to(ws.dtype), ws[:, ns:]], 1).cpu()
    params: dict[str, Any] = {"mode": mode, "pixels_changed": None, "classes_painted": None, "refine": None}
    if current is not None:
        changed = painted != np.asarray(current)
        params.update(pixels_changed=int(changed.sum()),
                      classes_painted=sorted(int(c) for c in np.unique(painted[changed])))
    residual = state.shape_residual
    if refine is not None and refine.steps > 0:
        residual = refine_residual(generator, new_ws, state, painted, current, refine, progress, cancel)
        params["refine"] = refine.to_dict()
    return portrait.with_record(EditRecord("mask", params, replace(state, ws=new_ws, shape_residual=residual)))


# ------------------------------------------------------------------------------------------------
# Region restyle and global style
# ------------------------------------------------------------------------------------------------

def codes_from_seed(generator: nn.Module, seed: int, truncation_psi: float | None = None) -> torch.Tensor:
    """[1, num_ws, w_dim] codes of a seed (canonical conditioning), on the CPU; ``truncation_psi`` None:
    the generator's ``default_truncation``."""
    if truncation_psi is None:
        truncation_psi = generator.default_truncation
    with torch.no_grad():
        return generator.codes_from_seeds([int(seed)], truncation_psi=truncation_psi).detach().cpu()


def restyle(portrait: Portrait, classes: Sequence[int], style_ws: torch.Tensor,
            source: dict[str, Any] | None = None) -> Portrait:
    """Give the regions ``classes`` the texture of ``style_ws`` [1, num_ws, w_dim] (3D style mask)."""
    ids = tuple(sorted({int(c) for c in classes}))
    if not ids or min(ids) < 0 or max(ids) >= NUM_CLASSES:
        raise ValueError(f"restyle classes must be ids in 0..{NUM_CLASSES - 1}, got {classes}")
    style_ws = style_ws.detach().float().cpu()
    if style_ws.shape != portrait.ws.shape:
        raise ValueError(f"style codes must have shape {tuple(portrait.ws.shape)}, got {tuple(style_ws.shape)}")
    prev = portrait.state.restyle
    if prev is not None and torch.equal(prev.style_ws, style_ws):
        ids = tuple(sorted(set(ids) | set(prev.classes)))
    params = {"classes": list(ids), "source": source or {"kind": "codes"}}
    return portrait.with_record(EditRecord("restyle", params, replace(portrait.state, restyle=Restyle(style_ws, ids))))


def clear_restyle(portrait: Portrait) -> Portrait:
    return portrait.with_record(EditRecord("clear_restyle", {}, replace(portrait.state, restyle=None)))


def mix_codes(ws: torch.Tensor, other: torch.Tensor, num_shape_ws: int, shape_alpha: float,
              texture_alpha: float) -> torch.Tensor:
    """Interpolate shape codes by ``shape_alpha`` and texture codes by ``texture_alpha`` toward ``other``
    (0 keeps ``ws``, 1 takes ``other``); [B, num_ws, w_dim] both. Alpha 0 and 1 are exact copies."""
    if ws.shape != other.shape:
        raise ValueError(f"codes differ in shape: {tuple(ws.shape)} vs {tuple(other.shape)}")

    def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
        if t == 0.0:
            return a.clone()
        if t == 1.0:
            return b.clone()
        return torch.lerp(a, b, float(t))

    return torch.cat([lerp(ws[:, :num_shape_ws], other[:, :num_shape_ws], shape_alpha),
                      lerp(ws[:, num_shape_ws:], other[:, num_shape_ws:], texture_alpha)], 1)


def global_style(portrait: Portrait, other_ws: torch.Tensor, num_shape_ws: int, shape_alpha: float = 0.0,
                 texture_alpha: float = 1.0, source: dict[str, Any] | None = None) -> Portrait:
    """Swap (alpha 1) or interpolate shape/texture codes toward ``other_ws`` (another portrait or seed)."""
    for name, a in (("shape_alpha", shape_alpha), ("texture_alpha", texture_alpha)):
        if not math.isfinite(a):
            raise ValueError(f"{name} must be finite")
    new_ws = mix_codes(portrait.ws, other_ws.detach().float().cpu(), num_shape_ws, shape_alpha, texture_alpha)
    params = {"shape_alpha": float(shape_alpha), "texture_alpha": float(texture_alpha),
              "source": source or {"kind": "codes"}}
    return portrait.with_record(EditRecord("style", params, replace(portrait.state, ws=new_ws)))


def truncate(portrait: Portrait, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> Portrait:
    """Truncation toward the average code: ``w_avg + psi * (w - w_avg)`` on codes ``[:cutoff]``."""
    ws = portrait.ws.clone()
    cut = ws.shape[1] if cutoff is None else int(cutoff)
    ws[:, :cut] = torch.lerp(w_avg.detach().float().cpu().reshape(1, 1, -1).expand_as(ws[:, :cut]),
                             ws[:, :cut], float(psi))
    return portrait.with_record(EditRecord("truncate", {"psi": float(psi), "cutoff": cutoff},
                                           replace(portrait.state, ws=ws)))


# ------------------------------------------------------------------------------------------------
# History
# ------------------------------------------------------------------------------------------------

def can_undo(portrait: Portrait) -> bool:
    return portrait.current > 0


def can_redo(portrait: Portrait) -> bool:
    return portrait.current < len(portrait.history) - 1


def undo(portrait: Portrait) -> Portrait:
    """Step the cursor back one edit (the inversion record cannot be undone)."""
    if not can_undo(portrait):
        raise ValueError("nothing to undo")
    return replace(portrait, current=portrait.current - 1)


def redo(portrait: Portrait) -> Portrait:
    if not can_redo(portrait):
        raise ValueError("nothing to redo")
    return replace(portrait, current=portrait.current + 1)
