# SPDX-License-Identifier: GPL-3.0-or-later
"""Model world <-> Blender world, and a Blender camera <-> the project's typed :class:`~.cameras.Camera`.

Pure numbers, no ``bpy``: the add-on reads a camera object's settings into a :class:`BlenderCamera` and
writes one back; everything in between happens here. The frames and units are those written down in
:mod:`.cameras` (the only place the convention is defined; its constants are imported from there):

* **Model world**: ``+y`` up, the face looks toward ``+z``; one unit = ``METRES_PER_UNIT`` metres.
* **Blender world**: ``+Z`` up, the face looks toward ``-Y``, metres. A model point ``p`` maps to
  ``METRES_PER_UNIT * R_MODEL_TO_BLENDER @ p`` (:func:`model_points_to_blender`,
  :func:`blender_points_to_model`, :func:`model_to_blender_matrix`).
* **Blender camera object**: ``+X`` right, ``+Y`` up, looks along ``-Z``; its ``matrix_world`` takes
  these axes to the Blender world. The OpenCV camera of :class:`~.cameras.Camera` (``+x`` right, ``+y``
  down, ``+z`` forward) differs by the flip ``diag(1, -1, -1)``.
* **Intrinsics**: Blender's lens (mm), sensor size and fit, lens shift, render resolution, percentage and
  pixel aspect become the normalised ``K`` of :mod:`.cameras` (principal point from the image's top-left
  corner) and an image size in pixels (:func:`camera_from_blender`); :func:`blender_from_camera` goes back
  (horizontal sensor fit, 100 %, a pixel aspect for non-square focal lengths, a shift for an off-centre
  principal point).

:mod:`.cameras` re-exports every public name of this module, so ``from ide3d_core.cameras import
BlenderCamera`` keeps working. Needs only numpy; the add-on carries a verbatim copy of this module next to
``cameras.py`` (``ide3d_core.commands.addon.VENDORED``), so it imports its sibling relatively.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import METRES_PER_UNIT, R_MODEL_TO_BLENDER, Camera, intrinsics

#: Flip between a Blender camera's axes (x right, y up, -z forward) and OpenCV's (x right, y down, z fwd).
_BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0])


def model_to_blender_matrix() -> np.ndarray:
    """4x4 similarity taking model-world points to Blender-world points (metres, Z up)."""
    m = np.eye(4)
    m[:3, :3] = METRES_PER_UNIT * R_MODEL_TO_BLENDER
    return m


def model_points_to_blender(points: np.ndarray) -> np.ndarray:
    """(..., 3) model-world points -> (..., 3) Blender-world points in metres."""
    return METRES_PER_UNIT * np.asarray(points, dtype=np.float64) @ R_MODEL_TO_BLENDER.T


def blender_points_to_model(points: np.ndarray) -> np.ndarray:
    """(..., 3) Blender-world points in metres -> (..., 3) model-world points."""
    return np.asarray(points, dtype=np.float64) @ R_MODEL_TO_BLENDER / METRES_PER_UNIT


@dataclass(frozen=True)
class BlenderCamera:
    """The numbers of a Blender camera that decide its projection (all plain floats/strings).

    Attributes:
        matrix_world: (4, 4) the camera object's world matrix (may carry scale; it is ignored, as
            Blender's ``world_to_camera_view`` ignores it).
        lens: focal length in mm. sensor_width, sensor_height: mm. sensor_fit: 'AUTO' | 'HORIZONTAL' |
            'VERTICAL'. shift_x, shift_y: in units of the larger... as Blender (fraction of the
            fitted sensor dimension). resolution_x/y, resolution_percentage, pixel_aspect_x/y: the
            scene's render settings.
    """

    matrix_world: np.ndarray
    lens: float = 50.0
    sensor_width: float = 36.0
    sensor_height: float = 24.0
    sensor_fit: str = "AUTO"
    shift_x: float = 0.0
    shift_y: float = 0.0
    resolution_x: int = 512
    resolution_y: int = 512
    resolution_percentage: int = 100
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0

    def pixel_size(self) -> tuple[int, int]:
        """Rendered image size (width, height) in pixels after the percentage scale."""
        s = self.resolution_percentage / 100.0
        return int(self.resolution_x * s), int(self.resolution_y * s)


def _effective_fit(bc: BlenderCamera, w: float, h: float) -> str:
    if bc.sensor_fit not in ("AUTO", "HORIZONTAL", "VERTICAL"):
        raise ValueError(f"unknown sensor_fit {bc.sensor_fit!r}")
    if bc.sensor_fit == "AUTO":
        return "HORIZONTAL" if bc.pixel_aspect_x * w >= bc.pixel_aspect_y * h else "VERTICAL"
    return bc.sensor_fit


def camera_from_blender(bc: BlenderCamera) -> tuple[Camera, int, int]:
    """Typed model-world camera and image size (width, height) of a Blender camera.

    Formulas from Blender's ``BKE_camera_params_compute_viewplane`` (verified against
    ``world_to_camera_view`` in ``shared/reference/blender.md`` section 4): the sensor size is
    ``sensor_height`` only when ``sensor_fit == 'VERTICAL'`` explicitly.
    """
    w, h = bc.pixel_size()
    if w < 1 or h < 1:
        raise ValueError(f"render size must be positive, got {w}x{h}")
    fit = _effective_fit(bc, w, h)
    ycor = bc.pixel_aspect_y / bc.pixel_aspect_x
    sensor = bc.sensor_height if bc.sensor_fit == "VERTICAL" else bc.sensor_width
    viewfac = w if fit == "HORIZONTAL" else ycor * h
    fx = bc.lens * viewfac / sensor
    fy = fx / ycor
    cx = w / 2.0 - bc.shift_x * viewfac
    cy = h / 2.0 + bc.shift_y * viewfac / ycor
    k = intrinsics(fx / w, fy / h, cx / w, cy / h)

    mw = np.asarray(bc.matrix_world, dtype=np.float64)
    rot = mw[:3, :3] / np.linalg.norm(mw[:3, :3], axis=0, keepdims=True)
    c2w_blender = np.eye(4)
    c2w_blender[:3, :3] = rot @ _BLENDER_TO_CV
    c2w_blender[:3, 3] = mw[:3, 3]
    c2w = np.eye(4)
    c2w[:3, :3] = R_MODEL_TO_BLENDER.T @ c2w_blender[:3, :3]
    c2w[:3, 3] = blender_points_to_model(c2w_blender[:3, 3])
    return Camera(c2w, k), w, h


def blender_from_camera(camera: Camera, width: int, height: int,
                        sensor_width: float = 36.0) -> BlenderCamera:
    """A Blender camera (HORIZONTAL sensor fit, 100 %) reproducing ``camera`` at ``width`` x ``height``.

    Non-square normalised focal lengths become a pixel aspect ratio; an off-centre principal point
    becomes a lens shift."""
    k = camera.intrinsics
    fx, fy = k[0, 0] * width, k[1, 1] * height
    cx, cy = k[0, 2] * width, k[1, 2] * height
    ycor = fx / fy
    pax, pay = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    viewfac = float(width)
    lens = fx * sensor_width / viewfac
    shift_x = (width / 2.0 - cx) / viewfac
    shift_y = (cy - height / 2.0) * ycor / viewfac
    mw = np.eye(4)
    mw[:3, :3] = R_MODEL_TO_BLENDER @ camera.cam2world[:3, :3] @ _BLENDER_TO_CV
    mw[:3, 3] = model_points_to_blender(camera.cam2world[:3, 3])
    return BlenderCamera(matrix_world=mw, lens=float(lens), sensor_width=float(sensor_width),
                         sensor_height=float(sensor_width), sensor_fit="HORIZONTAL",
                         shift_x=float(shift_x), shift_y=float(shift_y), resolution_x=int(width),
                         resolution_y=int(height), resolution_percentage=100,
                         pixel_aspect_x=float(pax), pixel_aspect_y=float(pay))
