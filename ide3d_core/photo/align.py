# SPDX-License-Identifier: GPL-3.0-or-later
"""Cropping and aligning a face to the framing a model was trained on.

Two framings, both from landmarks, both as one similarity transform (rotation, uniform scale,
translation) of the photo:

* ``"model"`` (default): the framing of the project's cameras. The head pose is fitted
  (:func:`.pose.solve_pose`), the 3D landmark template is projected through the fitted orbit camera, and
  the similarity that best maps the photo's landmarks onto those projections (least squares, Umeyama) is
  the crop. Pose and crop are refined alternately (three rounds converge to well under a pixel). The
  canonical camera frames the head like EG3D's re-crop of FFHQ, so this is also the framing for models
  trained on EG3D-style data and the procedural heads.
* ``"ffhq"``: the original FFHQ alignment (Karras et al. 2019): a square whose half-side is
  ``max(2 * |eye-to-eye|, 1.8 * |eye-to-mouth|)``, rotated so the eyes are level, centred
  ``0.1 * eye-to-mouth`` below the eye midpoint. Its faces are about 14 % larger than the model framing's.

Matrices are (2, 3) and map *continuous* photo pixel coordinates (pixel centres at ``i + 0.5``) to
continuous aligned coordinates; :func:`warp` converts to OpenCV's integer-centre convention.
Out-of-photo areas are filled by reflection (as FFHQ does), so no black wedges reach the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ide3d_core.cameras import canonical_camera

from .pose import DEFAULT_DOMAIN, PoseEstimate, pose_template, solve_pose, template_world

FRAMINGS = ("model", "ffhq")
#: Smallest side of an aligned crop.
MIN_ALIGNED_SIZE = 16
#: MediaPipe indices of the two eye contours (subject's right, subject's left) and the mouth corners.
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_RING = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MOUTH_CORNERS = (61, 291)


@dataclass(frozen=True, eq=False)
class Alignment:
    """A crop of the photo.

    Attributes:
        matrix: (2, 3) similarity, photo pixels -> aligned pixels (continuous coordinates).
        size: side of the aligned square image in pixels.
        framing: ``"model"`` or ``"ffhq"``.
        pose: head pose fitted in the aligned image.
    """

    matrix: np.ndarray
    size: int
    framing: str
    pose: PoseEstimate

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) photo pixels -> (N, 2) aligned pixels."""
        return apply_matrix(self.matrix, points)

    @property
    def scale(self) -> float:
        """Aligned pixels per photo pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def apply_matrix(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def similarity_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (no reflection) with ``dst ~ s R src + t``; returns (2, 3).

    Closed form of Umeyama (1991): SVD of the cross-covariance of the centred point sets; ``weights`` (N,)
    weight each point's squared error (default: equal)."""
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    ma, mb = w @ a, w @ b
    ac, bc = a - ma, b - mb
    var = float(w @ (ac ** 2).sum(1))
    if var < 1e-12:
        raise ValueError("degenerate landmarks (all points coincide)")
    u, s, vt = np.linalg.svd((bc * w[:, None]).T @ ac)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / var)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mb - scale * rot @ ma
    return m


def warp(image: np.ndarray, matrix: np.ndarray, size: int, nearest: bool = False,
         border: str = "reflect") -> np.ndarray:
    """Resample ``image`` (H, W[, C]) into a ``size`` x ``size`` aligned image.

    ``matrix`` uses continuous coordinates; OpenCV samples at integer pixel centres, so the translation
    is shifted by ``A @ (0.5, 0.5) - 0.5``. Downscaling by more than 2x pre-blurs with an area resize
    (anti-aliasing), as cv2.warpAffine itself does not filter."""
    import cv2

    m = np.asarray(matrix, dtype=np.float64).copy()
    src = image
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if not nearest and scale < 0.5:
        f = min(1.0, 2.0 * scale)
        h, w = image.shape[:2]
        src = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / w, src.shape[0] / h
        m[:, 0] /= fx
        m[:, 1] /= fy
    m_cv = m.copy()
    m_cv[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    mode = {"reflect": cv2.BORDER_REFLECT101, "constant": cv2.BORDER_CONSTANT,
            "replicate": cv2.BORDER_REPLICATE}[border]
    return cv2.warpAffine(src, m_cv, (size, size),
                          flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=mode)


def ffhq_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """FFHQ crop (module docstring) from (468, 2+) MediaPipe landmarks in photo pixels; returns (2, 3)."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eye_r, eye_l = lm[list(RIGHT_EYE_RING)].mean(0), lm[list(LEFT_EYE_RING)].mean(0)
    eye_avg = 0.5 * (eye_r + eye_l)
    eye_to_eye = eye_l - eye_r  # image left -> image right for a frontal face
    mouth_avg = lm[list(MOUTH_CORNERS)].mean(0)
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    corners = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # TL, BL, BR, TR
    target = np.array([[0.0, 0.0], [0.0, size], [size, size], [size, 0.0]])
    return similarity_fit(corners, target)


def align_face(landmarks: np.ndarray, size: int = 512, framing: str = "model", rounds: int = 3,
               domain: str = DEFAULT_DOMAIN) -> Alignment:
    """Crop matrix and head pose of a face from its (468, 2+) MediaPipe landmarks in photo pixels.

    ``domain`` picks the 3D landmark template (:func:`.pose.pose_template`: ``"human"`` for photos,
    ``"procedural"`` for images of the procedural heads). Raises ``ValueError`` on an unknown framing or
    domain, or degenerate landmarks."""
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    if size < MIN_ALIGNED_SIZE:
        raise ValueError(f"aligned size must be at least {MIN_ALIGNED_SIZE} pixels, got {size}")
    template = pose_template(domain)
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    pts = lm[template.indices]
    world = template.points
    if framing == "ffhq":
        m = ffhq_matrix(lm, size)
        return Alignment(m, size, framing, solve_pose(apply_matrix(m, pts), size, template=template))
    # Start from the frontal framing, then alternate pose fit and crop fit.
    target, _ = canonical_camera().project(world, size, size)
    m = similarity_fit(pts, target, template.weights)
    pose = solve_pose(apply_matrix(m, pts), size, template=template)
    for _ in range(rounds):
        target, _ = pose.camera.project(world, size, size)
        m = similarity_fit(pts, target, template.weights)
        pose = solve_pose(apply_matrix(m, pts), size, template=template)
    return Alignment(m, size, framing, pose)


def box_alignment(box: np.ndarray, size: int = 512) -> np.ndarray:
    """Crop matrix for a face known only by its detector box (x0, y0, x1, y1) in photo pixels: the box is
    assumed frontal and scaled to the width the canonical camera gives the template's face outline."""
    b = np.asarray(box, dtype=np.float64)
    target, _ = canonical_camera().project(template_world(), size, size)
    face_w = 1.35 * (target[:, 0].max() - target[:, 0].min())  # cheek to cheek vs eye corners
    face_c = np.array([0.5 * size, target[:, 1].mean()])
    s = face_w / max(b[2] - b[0], 1e-6)
    c = np.array([0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])])
    return np.array([[s, 0.0, face_c[0] - s * c[0]], [0.0, s, face_c[1] - s * c[1]]])
