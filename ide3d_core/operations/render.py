# SPDX-License-Identifier: GPL-3.0-or-later
"""Render a portrait state from a camera into 8-bit pictures: the one path of ``ide3d render``, the
service's ``render`` (Render From Active Camera) and the canonical view every portrait result carries.

    view = render_view(generator, portrait.state, label)                 # the generator's own size
    view = render_view(generator, portrait.state, label, 1920, 1080)     # any frame, any aspect
    files = write_view(view, "out/front.png")                            # + _labels.png (+ _seg.png)

A portrait with photos lays them over its renders (``projection``, :mod:`ide3d_core.photo_projection`).

Frames: ``label`` is the 25-float camera label of the *output* frame (:mod:`ide3d_core.cameras`). The
generator renders square images; a non-square frame is rendered as the square that covers it
(:func:`square_view`) and cropped, so pixels keep their rays.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ide3d_core import cameras
from ide3d_core.operations import limits
from ide3d_core.operations.errors import OperationError


@dataclass(frozen=True, eq=False)
class View:
    """One rendered view.

    Attributes:
        image: (H, W, 3) uint8 sRGB.
        ids: (H, W) uint8 label ids (argmax of the semantic render).
        alpha: (H, W) uint8 neural opacity (bilinearly upsampled from the neural resolution).
    """

    image: np.ndarray
    ids: np.ndarray
    alpha: np.ndarray

    @property
    def rgba(self) -> np.ndarray:
        """(H, W, 4) uint8: the image with the opacity as alpha (compositing over Blender renders)."""
        return np.concatenate([self.image, self.alpha[..., None]], -1)


def square_view(label: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int, int]:
    """A square camera covering a ``width`` x ``height`` view, for generators with square output.

    The square image has ``n = max(width, height)`` pixels per side in the same pixel units; the
    original frame is the crop ``[y0 : y0 + height, x0 : x0 + width]`` with integer offsets
    ``x0 = (n - width) // 2``, ``y0 = (n - height) // 2``. Non-square pixels (fx != fy) stay as they are.

    Returns:
        (label (25,) float32 of the square camera, n, x0, y0).
    """
    c2w, k = cameras.unpack_label(label)
    n = max(width, height)
    x0, y0 = (n - width) // 2, (n - height) // 2
    fx, fy = k[0, 0] * width, k[1, 1] * height
    cx, cy = k[0, 2] * width + x0, k[1, 2] * height + y0
    ks = cameras.intrinsics(fx / n, fy / n, cx / n, cy / n)
    return cameras.pack_label(c2w, ks), n, x0, y0


#: Semantic-plane tensors :func:`render_inputs` synthesised in reduced precision, by id (a "reference"
#: render of such inputs re-synthesises float32 planes: the reference is the generator's own render).
_REDUCED_PLANES: dict[int, weakref.ref] = {}


def _reduced(planes) -> bool:
    ref = _REDUCED_PLANES.get(id(planes.semantic))
    return ref is not None and ref() is planes.semantic


def render_inputs(generator, state, device, planes_dtype: str = "float32") -> tuple[Any, Any, Any]:
    """``(planes, ws [1, num_ws, w_dim], texture_swap)`` of a portrait state on ``device`` (cache them to
    render the same state again).

    ``planes_dtype``: the folded synthesis' convolution dtype, one of
    :data:`ide3d_core.fast_render.NETWORK_DTYPES` ("float32": the generator's planes to float rounding;
    "auto": bfloat16 on CPUs with native bf16, the live edit's choice: frames >= 40 dB and >= 99.5 %
    identical labels against the reference, tests/test_fast_networks.py)."""
    import torch

    from ide3d_core.fast_render import network_dtype, supports
    from ide3d_core.shape_residual import with_residual

    planes = generator.planes
    dtype = None
    if supports(generator):  # the folded synthesis: the generator's planes to float rounding (float32), faster
        from ide3d_core.fast_networks import planes as fast_planes

        dtype = network_dtype(planes_dtype, torch.device(device))
        planes = lambda w: fast_planes(generator, w, dtype)  # noqa: E731
    ws = state.ws.to(device)
    swap = None
    if state.restyle is not None:
        swap = (planes(state.restyle.style_ws.to(device)).texture, tuple(int(c) for c in state.restyle.classes))
    out = with_residual(planes(ws), state.shape_residual)
    if dtype is not None and dtype != torch.float32:
        key = id(out.semantic)
        _REDUCED_PLANES[key] = weakref.ref(out.semantic, lambda _r, k=key: _REDUCED_PLANES.pop(k, None))
    return out, ws, swap


def render_view(generator, state, label: np.ndarray, width: Optional[int] = None, height: Optional[int] = None,
                inputs: Optional[tuple[Any, Any, Any]] = None, quality: str = "full", grid: Any = None,
                projection: Any = None) -> View:
    """Render ``state`` (a :class:`ide3d_core.portrait.PortraitState`) through camera ``label`` into a
    ``width`` x ``height`` :class:`View` (default: the generator's square ``img_resolution``).

    ``inputs``: :func:`render_inputs` of the state, when the caller caches them. Sizes outside
    :data:`.limits.RENDER_SIDE` raise :class:`~.errors.OperationError`. ``quality``: one of
    :data:`ide3d_core.fast_render.QUALITIES` ("full": the fast renderer, the reference's image;
    "preview": cheaper rays while the user paints or orbits; "reference": the generator's own render);
    ``grid``: the cached :func:`ide3d_core.fast_render.occupancy_grid` of the inputs' planes.
    ``projection``: the portrait's :class:`~ide3d_core.photo_projection.PhotoProjection` (its photos laid
    over the square render, within the state's scope; previews skip its photo stereo), or None.
    """
    from ide3d_core.fast_render import QUALITIES, render_quality

    if quality not in QUALITIES:
        raise OperationError(f"render quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    import torch
    import torch.nn.functional as F

    from ide3d_core.images import to_uint8_hwc, unit_to_uint8

    native = int(generator.img_resolution)
    width, height = limits.check_render_size(native if width is None else width,
                                             native if height is None else height)
    device = next(generator.parameters()).device
    square, n, x0, y0 = square_view(np.asarray(label, np.float64), width, height)
    with torch.no_grad():
        if inputs is not None and quality == "reference" and _reduced(inputs[0]):
            inputs = None  # bf16-synthesised planes: the reference renders the generator's own
        planes, ws, swap = inputs if inputs is not None else render_inputs(generator, state, device)
        c = torch.from_numpy(np.asarray(square, np.float32))[None].to(device)
        out = render_quality(generator, planes, c, ws, quality, grid=grid, texture_swap=swap)
        img, sem = out.image[:1].float(), out.semantic[:1].float()
        if projection is not None:
            if quality == "preview":  # orbiting: the photos through the fitted surface, no stereo
                projection = projection.without_stereo()
            img, sem = projection.apply(generator, out, c, state)
            img, sem = img[:1].float().to(device), sem[:1].float().to(device)
        if tuple(img.shape[-2:]) != (n, n):
            aa = n < img.shape[-1]
            img = F.interpolate(img, size=(n, n), mode="bilinear", align_corners=False, antialias=aa)
            sem = F.interpolate(sem, size=(n, n), mode="bilinear", align_corners=False, antialias=aa)
        op = F.interpolate(out.opacity[:1].float(), size=(n, n), mode="bilinear", align_corners=False)
    crop = (slice(y0, y0 + height), slice(x0, x0 + width))
    image = to_uint8_hwc(img[0])[crop]
    ids = sem[0].argmax(0).to(torch.uint8).cpu().numpy()[crop]
    alpha = unit_to_uint8(op[0, 0])[crop]
    return View(np.ascontiguousarray(image), np.ascontiguousarray(ids), np.ascontiguousarray(alpha))


def write_view(view: View, path: Path, alpha: bool = False, seg: bool = True) -> list[Path]:
    """Write ``view`` as the triplet of :func:`ide3d_core.images.write_view_triplet` (``path``,
    ``NAME_labels.png``, with ``seg`` ``NAME_seg.png``); with ``alpha`` the image is RGBA."""
    from ide3d_core.images import write_view_triplet

    return write_view_triplet(Path(path), view.rgba if alpha else view.image, view.ids, seg=seg)
