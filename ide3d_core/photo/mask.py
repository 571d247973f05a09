# SPDX-License-Identifier: GPL-3.0-or-later
"""A 19-class semantic mask (:mod:`ide3d_core.labels`) for an aligned photo.

Sources, painted in this order (later wins):

1. **Silhouette**: MediaPipe's selfie segmentation (bundled general model, 256 x 256) gives the person /
   background split (probability > 0.5 is the person). Outside it: ``background``.
2. **Rules inside the silhouette** but outside the face outline, in the aligned (roll-free) frame, with
   ``fw`` the face width (outline extremes) and "skin-coloured" meaning within :data:`SKIN_DISTANCE` (CIE
   Lab, a/b weighted 2x) of the median colour of the cheeks and forehead:

   * above the mouth line, lateral to the outline, between brow and nose-bottom height, within
     ``0.22 fw`` of the outline and skin-coloured: ``l_ear`` / ``r_ear`` (the side of the face it is on);
   * below the chin line and within ``0.42 fw`` of the chin horizontally, down to ``0.6 x`` the
     face height below the chin: ``neck`` if skin-coloured, else ``cloth``;
   * elsewhere below the chin line: ``cloth``;
   * everything else (above the face, beside it): ``hair``, or ``skin`` if skin-coloured, above the
     brows, within the face's width and less than ``0.12 x`` the face height above the outline's top
     (high foreheads; blond hair further up stays hair).
3. **Landmark polygons** (MediaPipe face mesh): the face outline -> ``skin``; the nose -> ``nose``; each brow
   -> ``l_brow`` / ``r_brow``; each eye -> ``l_eye`` / ``r_eye``; the outer lip contour -> ``u_lip`` above
   the mouth line and ``l_lip`` below it; the inner lip contour -> ``mouth``. MediaPipe's "left" is the
   subject's left, as ``l_`` in :mod:`ide3d_core.labels`.

Without landmarks (a face found only by the Haar cascade) :func:`box_mask` paints an ellipse of skin and
the silhouette rules for hair and clothes. A user-supplied mask is decoded with
:func:`ide3d_core.labels.decode_mask` and warped with the photo (:func:`user_mask`).
Glasses, hats, earrings and necklaces are never produced by the rules (they need a parser).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ide3d_core.labels import ID, decode_mask

from .errors import PhotoError

#: Lab distance under which a pixel counts as skin-coloured (see the module docstring).
SKIN_DISTANCE = 22.0


# ---------------------------------------------------------------------------------------------------
# Topology of the MediaPipe face mesh (read from the installed package; constant)
# ---------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _topology() -> dict[str, tuple]:
    """Index groups of the face mesh parts, from ``mediapipe.python.solutions.face_mesh_connections``."""
    from mediapipe.python.solutions import face_mesh_connections as c

    def idx(edges) -> tuple[int, ...]:
        return tuple(sorted({i for e in edges for i in e}))

    # Two cycles: the inner one holds landmark 78 (inner mouth corner), the outer one 61 (outer corner).
    lips = sorted(_loops(c.FACEMESH_LIPS), key=lambda loop: 61 in loop)
    return {
        "oval": idx(c.FACEMESH_FACE_OVAL), "nose": idx(c.FACEMESH_NOSE),
        "l_brow": idx(c.FACEMESH_LEFT_EYEBROW), "r_brow": idx(c.FACEMESH_RIGHT_EYEBROW),
        "l_eye": idx(c.FACEMESH_LEFT_EYE), "r_eye": idx(c.FACEMESH_RIGHT_EYE),
        "lips": tuple(tuple(loop) for loop in lips),
    }


def _loops(edges) -> list[list[int]]:
    """Chain an undirected edge set made of disjoint cycles into ordered vertex loops."""
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(nbrs):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


# ---------------------------------------------------------------------------------------------------
# Drawing helpers (continuous pixel coordinates, pixel centres at +0.5)
# ---------------------------------------------------------------------------------------------------

_SHIFT = 4


def _fill(mask: np.ndarray, poly: np.ndarray, value: int, where: np.ndarray | None = None) -> None:
    import cv2

    layer = np.zeros(mask.shape, np.uint8)
    pts = np.round((np.asarray(poly, dtype=np.float64) - 0.5) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(layer, [pts.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    sel = layer.astype(bool) if where is None else layer.astype(bool) & where
    mask[sel] = value


def _hull(points: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.convexHull(np.asarray(points, dtype=np.float32)).reshape(-1, 2).astype(np.float64)


def person_probability(rgb: np.ndarray) -> np.ndarray | None:
    """(H, W) float32 person probability from MediaPipe selfie segmentation, or None without MediaPipe."""
    from .quiet import native_quiet

    try:
        with native_quiet():
            from mediapipe.python.solutions import selfie_segmentation
    except Exception:
        return None
    with native_quiet(), selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        result = seg.process(np.ascontiguousarray(rgb))
    if result.segmentation_mask is None:
        return None
    return np.asarray(result.segmentation_mask, dtype=np.float32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


def _skin_like(lab: np.ndarray, ref: np.ndarray) -> np.ndarray:
    d = lab - ref
    return np.sqrt(d[..., 0] ** 2 + 4.0 * d[..., 1] ** 2 + 4.0 * d[..., 2] ** 2) < SKIN_DISTANCE


# ---------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------

def landmark_mask(rgb: np.ndarray, landmarks: np.ndarray, person: np.ndarray | None) -> np.ndarray:
    """Mask of an aligned face from its landmarks and silhouette (module docstring).

    Args:
        rgb: (S, S, 3) uint8 aligned image.
        landmarks: (468, 2+) aligned pixel landmarks.
        person: (S, S) float person probability or None (then the silhouette is the face alone).
    Returns:
        (S, S) uint8 label ids.
    """
    topo = _topology()
    h, w = rgb.shape[:2]
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    out = np.zeros((h, w), np.uint8)
    oval = _hull(lm[list(topo["oval"])])
    face = np.zeros((h, w), np.uint8)
    _fill(face, oval, 1)
    face_b = face.astype(bool)
    lab = _lab(rgb)
    parts = np.zeros((h, w), np.uint8)
    for key in ("nose", "l_brow", "r_brow", "l_eye", "r_eye"):
        _fill(parts, _hull(lm[list(topo[key])]), 1)
    _fill(parts, lm[list(topo["lips"][-1])], 1)
    cheeks = face_b & ~parts.astype(bool)
    ref = np.median(lab[cheeks], axis=0) if cheeks.sum() > 20 else np.median(lab[face_b], axis=0)
    skin_like = _skin_like(lab, ref)

    if person is not None:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        fx0, fx1 = oval[:, 0].min(), oval[:, 0].max()
        fw = max(fx1 - fx0, 1.0)
        brow_y = lm[list(topo["l_brow"]) + list(topo["r_brow"])][:, 1].mean()
        nose_y = lm[2, 1]
        mouth_y = lm[list((61, 291))][:, 1].mean()
        chin = lm[152]
        face_h = max(chin[1] - oval[:, 1].min(), 1.0)
        body = person > 0.5
        out[body] = ID["hair"]
        top = oval[:, 1].min()
        forehead = body & skin_like & (yy < brow_y) & (yy > top - 0.12 * face_h) & (xx > fx0) & (xx < fx1)
        out[forehead] = ID["skin"]
        ear_band = body & skin_like & (yy > brow_y) & (yy < nose_y + 0.1 * face_h)
        out[ear_band & (xx < fx0) & (xx > fx0 - 0.22 * fw)] = ID["r_ear"]
        out[ear_band & (xx > fx1) & (xx < fx1 + 0.22 * fw)] = ID["l_ear"]
        below = body & (yy > chin[1]) & (yy > mouth_y)
        out[below] = ID["cloth"]
        neck = below & (np.abs(xx - chin[0]) < 0.42 * fw) & (yy < chin[1] + 0.6 * face_h)
        out[neck & skin_like] = ID["neck"]
    out[face_b] = ID["skin"]
    _fill(out, _hull(lm[list(topo["nose"])]), ID["nose"])
    for key in ("l_brow", "r_brow", "l_eye", "r_eye"):
        _fill(out, _hull(lm[list(topo[key])]), ID[key])
    _paint_lips(out, lm, topo)
    return out


def _paint_lips(out: np.ndarray, lm: np.ndarray, topo: dict) -> None:
    """Outer lip contour split at the mouth line into upper/lower lip; the inner contour is the mouth."""
    h, w = out.shape
    lips = np.zeros((h, w), np.uint8)
    _fill(lips, lm[list(topo["lips"][-1])], 1)
    inner = np.zeros((h, w), np.uint8)
    _fill(inner, lm[list(topo["lips"][0])], 1)
    # Mouth line: corner -> middle of the inner lips -> corner (piecewise linear in x).
    mid = 0.5 * (lm[13] + lm[14])
    line = np.stack([lm[61], mid, lm[291]])
    line = line[np.argsort(line[:, 0])]
    xs = np.arange(w) + 0.5
    y_line = np.interp(xs, line[:, 0], line[:, 1])
    yy = np.arange(h)[:, None] + 0.5
    upper = yy < y_line[None, :]
    lip_b = lips.astype(bool) & ~inner.astype(bool)
    out[lip_b & upper] = ID["u_lip"]
    out[lip_b & ~upper] = ID["l_lip"]
    out[inner.astype(bool)] = ID["mouth"]


def box_mask(rgb: np.ndarray, box: np.ndarray, person: np.ndarray | None) -> np.ndarray:
    """Rough mask of an aligned face known only by its (aligned) box: skin ellipse, hair above it and
    beside it, clothes below the chin line, background outside the silhouette (or everywhere else
    without one)."""
    import cv2

    h, w = rgb.shape[:2]
    out = np.zeros((h, w), np.uint8)
    b = np.asarray(box, dtype=np.float64)
    cx, cy = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
    ax, ay = 0.5 * (b[2] - b[0]), 0.62 * (b[3] - b[1])
    if person is not None:
        body = person > 0.5
        out[body] = ID["hair"]
        yy = np.arange(h)[:, None] + 0.5
        out[body & np.broadcast_to(yy > cy + ay, (h, w))] = ID["cloth"]
    ell = np.zeros((h, w), np.uint8)
    cv2.ellipse(ell, (int(round(cx)), int(round(cy + 0.05 * ay))), (int(round(ax)), int(round(ay))),
                0, 0, 360, 1, -1)
    out[ell.astype(bool)] = ID["skin"]
    return out


def user_mask(mask_image: np.ndarray, name: str, photo_size: tuple[int, int], loaded_size: tuple[int, int],
              warp_fn, size: int) -> np.ndarray:
    """Decode a user's mask and bring it into the aligned frame.

    Args:
        mask_image: (H, W) ids or (H, W, 3|4) palette colours (:func:`ide3d_core.labels.decode_mask`).
        name: file name for messages.
        photo_size: (width, height) of the original photo (EXIF-upright); a mask of this size (or of
            ``loaded_size``) is warped with the photo.
        loaded_size: (width, height) of the photo as loaded (after downscaling).
        warp_fn: ``warp_fn(ids_at_loaded_size) -> (size, size)`` nearest-neighbour warp of the photo crop.
        size: aligned side; a mask already ``size`` x ``size`` is taken as aligned.
    """
    import cv2

    try:
        ids = decode_mask(mask_image)
    except ValueError as exc:
        raise PhotoError(name, f"is not a label mask ({exc})",
                         "give single-channel ids 0..18 or a mask in the palette colours") from None
    hw = (ids.shape[1], ids.shape[0])
    if hw == (size, size) and hw != tuple(photo_size):
        return ids
    if hw in (tuple(photo_size), tuple(loaded_size)):
        if hw != tuple(loaded_size):
            ids = cv2.resize(ids, tuple(loaded_size), interpolation=cv2.INTER_NEAREST)
        return warp_fn(ids)
    raise PhotoError(name, f"the mask is {hw[0]}x{hw[1]} pixels but the photo is {photo_size[0]}x{photo_size[1]}",
                     f"give a mask of the photo's size or of the aligned size {size}x{size}")
