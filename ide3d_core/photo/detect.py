# SPDX-License-Identifier: GPL-3.0-or-later
"""Face detection and 468 face-mesh landmarks.

Primary: MediaPipe's face mesh (``mediapipe==0.10.21``, legacy ``solutions`` API, models bundled in the
wheel, nothing downloaded). It finds faces with its short-range detector, which misses faces that are
small in the frame; so when it finds none, OpenCV's bundled Haar cascade (``cv2.data.haarcascades``)
proposes boxes, and the face mesh runs again on a square crop around each box. A box on which the mesh
still finds no face is kept without landmarks (the pipeline then assumes a frontal pose and warns).
Without MediaPipe installed only the Haar cascade runs.

Output frame: pixels of the image given (continuous, pixel centres at ``i + 0.5``); faces sorted by box
area, largest first. Every detector object is created and closed inside the call (no global state).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quiet import native_quiet

#: Longest side the Haar cascade sees (speed; faces smaller than ~24 px there are missed).
HAAR_MAX_SIDE = 1600
#: Side of the square crop the face mesh re-runs on around a Haar box.
CROP_SIDE = 384


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: (4,) float64 ``(x0, y0, x1, y1)`` in pixels.
        landmarks: (468, 3) float64 MediaPipe face-mesh points ``(x, y, z)`` in pixels (z: relative depth,
            same scale as x, smaller = nearer the camera) or None when only a box was found.
        score: detector confidence in [0, 1] (1.0 for the mesh, which reports none per face).
        source: ``"mediapipe"``, ``"haar+mediapipe"`` or ``"haar"``.
    """

    box: np.ndarray
    landmarks: np.ndarray | None
    score: float
    source: str

    @property
    def size(self) -> float:
        """Geometric mean of the box sides, pixels."""
        return float(np.sqrt(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)))


def mediapipe_available() -> bool:
    """True when the MediaPipe face mesh can be imported (the optional ``photo`` dependencies)."""
    try:
        with native_quiet():  # its import prints a protobuf AttributeError and log lines to fd 2
            from mediapipe.python.solutions import face_mesh  # noqa: F401
    except Exception:  # ImportError, or a broken install (protobuf mismatch): fall back to OpenCV
        return False
    return True


def detect_faces(rgb: np.ndarray, max_faces: int = 8, use_mediapipe: bool = True) -> list[Face]:
    """All faces in an (H, W, 3) uint8 RGB image, largest first (possibly empty)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect_faces needs an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    use_mp = use_mediapipe and mediapipe_available()
    faces: list[Face] = []
    if use_mp:
        faces = [Face(_box(lm), lm, 1.0, "mediapipe") for lm in _mesh(rgb, max_faces)]
    if not faces:
        for box, score in _haar(rgb)[:max_faces]:
            lm = _mesh_in_box(rgb, box) if use_mp else None
            faces.append(Face(_box(lm) if lm is not None else box, lm, score,
                              "haar+mediapipe" if lm is not None else "haar"))
    faces.sort(key=lambda f: -f.size)
    return faces


def _box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])


def _mesh(rgb: np.ndarray, max_faces: int) -> list[np.ndarray]:
    """MediaPipe face mesh on the whole image -> list of (468, 3) pixel landmarks."""
    from mediapipe.python.solutions import face_mesh

    h, w = rgb.shape[:2]
    with native_quiet(), face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                            refine_landmarks=False, min_detection_confidence=0.5) as mesh:
        result = mesh.process(np.ascontiguousarray(rgb))
    out = []
    for face in result.multi_face_landmarks or []:
        arr = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
        out.append(arr * np.array([w, h, w]))
    return out


def _mesh_in_box(rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Run the face mesh on a square crop of 2.2x the box around it; landmarks back in image pixels."""
    import cv2

    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    half = 1.1 * max(box[2] - box[0], box[3] - box[1])
    s = CROP_SIDE / (2.0 * half)
    m = np.array([[s, 0.0, CROP_SIDE / 2 - s * cx], [0.0, s, CROP_SIDE / 2 - s * cy]])
    m_cv = m.copy()
    m_cv[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(rgb, m_cv, (CROP_SIDE, CROP_SIDE), flags=interp, borderMode=cv2.BORDER_REFLECT101)
    found = _mesh(crop, 1)
    if not found:
        return None
    lm = found[0]
    out = lm.copy()
    out[:, 0] = (lm[:, 0] - m[0, 2]) / s
    out[:, 1] = (lm[:, 1] - m[1, 2]) / s
    out[:, 2] = lm[:, 2] / s
    return out


def _haar(rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """OpenCV's bundled frontal-face Haar cascade -> [(box (4,), score)], boxes in image pixels."""
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError(f"cannot load the Haar cascade {path}")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    f = min(1.0, HAAR_MAX_SIDE / max(h, w))
    if f < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    rects, neighbours = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    out = []
    for (x, y, bw, bh), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(neighbours).reshape(-1)):
        box = np.array([x, y, x + bw, y + bh], dtype=np.float64) / f
        out.append((box, float(1.0 - 1.0 / (1.0 + float(n)))))  # more merged neighbours, more confidence
    out.sort(key=lambda bs: -(bs[0][2] - bs[0][0]))
    return out
