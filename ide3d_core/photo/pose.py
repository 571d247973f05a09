# SPDX-License-Identifier: GPL-3.0-or-later
"""Head pose from 2D landmarks, expressed as a camera of :mod:`ide3d_core.cameras`.

The canonical 3D landmark template
----------------------------------
:data:`TEMPLATE_CM` holds 15 MediaPipe face-mesh landmarks of an average adult face, written for this
project from anthropometric averages (inner/outer eye-corner widths 3.2/9.0 cm, eye-to-mouth 5.9 cm,
eye-to-chin 10.5 cm, nose tip 3.6 cm in front of the inner eye corners), with the heights and depths
of the MediaPipe-specific points (forehead point 10 sits mid-forehead, not at the hairline) checked
against MediaPipe's own relative-depth output on two near-frontal portraits; in centimetres, in the *model-world axes* (``+x`` the subject's left, ``+y`` up, ``+z`` out of the face), with
the origin between the eye centres. :func:`template_world` scales it to model units
(``METRES_PER_UNIT``: 0.02 unit per cm, the real size of a head in the model world) and places the
eye midpoint at :data:`TEMPLATE_EYE_MIDPOINT`: slightly above the canonical camera's optical axis and
0.19 unit in front of the world origin (the rotation centre of the orbit cameras, near the head's
centre), so the canonical camera frames it like the EG3D crop of FFHQ (eyes just above the image centre,
chin at about 82 % of the height).

Fitting
-------
:func:`solve_pose` runs ``cv2.solvePnP`` (SQPnP start, then Levenberg-Marquardt) on the template and the
2D points in an image assumed to be seen through the model's fixed intrinsics
(``CANONICAL_FOCAL``, principal point at the centre). The rigid fit gives the direction from the camera to
the orbit pivot; :func:`orbit_from_direction` turns that direction into the ``orbit_camera(yaw, pitch)``
looking along it, so yaw and pitch have exactly the signs of :func:`ide3d_core.cameras.orbit_camera`
(positive yaw: the camera sees the subject's left cheek; positive pitch: the camera is above, looking
down). In-plane roll is returned separately; the aligner removes it by rotating the image, because the
model's cameras never roll.

Pixel frame: continuous pixel coordinates with pixel centres at ``i + 0.5`` (the project convention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ide3d_core.cameras import (CANONICAL_FOCAL, CANONICAL_PIVOT, CANONICAL_RADIUS, METRES_PER_UNIT, Camera,
                                intrinsics, orbit_camera)

#: MediaPipe landmark index -> (x, y, z) in cm; x = subject's left, y = up, z = out of the face; origin
#: between the eye centres (see the module docstring).
TEMPLATE_CM: dict[int, tuple[float, float, float]] = {
    33: (-4.5, 0.0, -1.0),    # right eye, outer corner
    133: (-1.6, -0.1, 0.0),   # right eye, inner corner
    362: (1.6, -0.1, 0.0),    # left eye, inner corner
    263: (4.5, 0.0, -1.0),    # left eye, outer corner
    105: (-3.8, 2.2, 0.7),    # right brow, middle
    334: (3.8, 2.2, 0.7),     # left brow, middle
    168: (0.0, 0.4, 1.5),     # between the eyes
    1: (0.0, -4.0, 3.6),      # nose tip
    2: (0.0, -4.6, 2.0),      # below the nose (subnasale)
    61: (-2.7, -5.9, -0.3),   # mouth, right corner
    291: (2.7, -5.9, -0.3),   # mouth, left corner
    0: (0.0, -5.6, 1.8),      # upper lip, middle
    17: (0.0, -7.4, 1.2),     # lower lip, middle
    152: (0.0, -10.5, -0.5),  # chin
    10: (0.0, 4.4, 1.5),      # forehead, top of the face-mesh outline (below the hairline)
}
TEMPLATE_INDICES = np.array(sorted(TEMPLATE_CM), dtype=np.int64)
#: Model-world position of the template origin (between the eye centres).
TEMPLATE_EYE_MIDPOINT = (0.0, 0.02, 0.19)
#: Model units per template centimetre.
UNITS_PER_CM = 0.01 / METRES_PER_UNIT


def template_world(indices: np.ndarray = TEMPLATE_INDICES) -> np.ndarray:
    """(N, 3) model-world positions of the template landmarks ``indices`` (MediaPipe numbering)."""
    pts = np.array([TEMPLATE_CM[int(i)] for i in indices], dtype=np.float64)
    return pts * UNITS_PER_CM + np.asarray(TEMPLATE_EYE_MIDPOINT)


@dataclass(frozen=True)
class PoseEstimate:
    """Result of :func:`solve_pose`.

    Attributes:
        camera: the orbit camera (radius 2.7, pivot (0, 0, 0.2), focal ``CANONICAL_FOCAL``) along the
            fitted viewing direction.
        yaw, pitch, roll: degrees; yaw/pitch as :func:`orbit_camera`, roll = in-plane rotation of the face
            in the image, positive counter-clockwise as seen.
        rms_px: root-mean-square reprojection error of the rigid fit, pixels of the fitted image.
    """

    camera: Camera
    yaw: float
    pitch: float
    roll: float
    rms_px: float


def orbit_from_direction(direction: np.ndarray, radius: float = CANONICAL_RADIUS,
                         pivot: tuple[float, float, float] = CANONICAL_PIVOT) -> tuple[float, float]:
    """(yaw, pitch) in radians of the orbit camera whose viewing direction toward ``pivot`` is ``direction``.

    Solves ``|pivot - s d| = radius`` for ``s > 0``; the camera sits at ``pivot - s d`` (model world)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    p = np.asarray(pivot, dtype=np.float64)
    b = float(p @ d)
    s = b + math.sqrt(max(b * b - float(p @ p) + radius * radius, 0.0))
    pos = p - s * d
    return math.atan2(pos[0], pos[2]), math.asin(float(np.clip(pos[1] / radius, -1.0, 1.0)))


def solve_pose(points_px: np.ndarray, size: int, indices: np.ndarray = TEMPLATE_INDICES,
               focal: float = CANONICAL_FOCAL) -> PoseEstimate:
    """Fit the template to 2D landmarks seen through the model's intrinsics.

    Args:
        points_px: (N, 2) landmark pixels (continuous, pixel centres at +0.5) in a ``size`` x ``size`` image
            framed for the model (see :mod:`.align`), in the order of ``indices``.
        size: image side in pixels.
        indices: (N,) MediaPipe indices of the points (keys of :data:`TEMPLATE_CM`).
        focal: normalised focal length of the image.
    """
    import cv2

    obj = template_world(indices)
    img = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    if img.shape[0] != obj.shape[0] or img.shape[0] < 6:
        raise ValueError(f"need the same number (>= 6) of 2D points and template points, got "
                         f"{img.shape[0]} and {obj.shape[0]}")
    k = intrinsics(focal) * np.array([[size], [size], [1.0]])
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise ValueError("solvePnP failed")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, None, rvec, tvec)
    rot, _ = cv2.Rodrigues(rvec)
    t = tvec.reshape(3)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, k, None)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    # Direction from the camera centre to the pivot, in the model world (independent of the fitted
    # distance, which depends on the unknown real head size).
    pivot_cam = rot @ np.asarray(CANONICAL_PIVOT) + t
    direction = rot.T @ (pivot_cam / np.linalg.norm(pivot_cam))
    yaw, pitch = orbit_from_direction(direction)
    cam = orbit_camera(yaw, pitch, CANONICAL_RADIUS, CANONICAL_PIVOT, focal)
    # Roll: angle between the world-up axis as the fitted camera sees it and as the rolled-free orbit
    # camera sees it (both projected to the image plane; image y points down).
    up_fit = rot @ np.array([0.0, 1.0, 0.0])
    up_orbit = cam.world2cam()[:3, :3] @ np.array([0.0, 1.0, 0.0])
    a_fit = math.atan2(-up_fit[1], up_fit[0])
    a_orb = math.atan2(-up_orbit[1], up_orbit[0])
    roll = math.degrees((a_fit - a_orb + math.pi) % (2 * math.pi) - math.pi)
    return PoseEstimate(cam, math.degrees(yaw), math.degrees(pitch), roll, rms)
