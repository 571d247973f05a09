# SPDX-License-Identifier: GPL-3.0-or-later
"""The camera convention of the whole project, and the only place it is written down.

Frames
------
* **Model world**: right-handed, metres are *not* used; one unit = ``METRES_PER_UNIT`` metres.
  ``+y`` is up, the face looks toward ``+z``, the head lies inside the box ``[-0.5, 0.5]^3``.
  The subject's own left is ``+x`` (so a frontal camera sees it on the image's right).
* **Camera** (OpenCV, as in EG3D ``dataset.json`` labels): ``+x`` right, ``+y`` down, ``+z`` forward.
  ``cam2world`` is a 4x4 rigid transform taking camera coordinates to model-world coordinates.
* **Blender world**: ``+Z`` up, the face looks toward ``-Y`` (Blender's front view looks along ``+Y``),
  one Blender unit = one metre. Model point ``p`` maps to ``METRES_PER_UNIT * R_MODEL_TO_BLENDER @ p``.
* **Blender camera object**: ``+X`` right, ``+Y`` up, looks along ``-Z``.

Intrinsics and pixels
---------------------
Intrinsics are *normalised*: ``K = [[fx/W, 0, cx/W], [0, fy/H, cy/H], [0, 0, 1]]`` with the principal
point measured from the top-left image *corner*. Pixel ``(i, j)`` (column ``i``, row ``j``) covers
``[i, i+1) x [j, j+1)``; its centre is ``(i + 0.5, j + 0.5)`` in pixel units, i.e. normalised
``((i + 0.5) / W, (j + 0.5) / H)``. Rays go through pixel centres. Projections return continuous pixel
coordinates in the same frame (so a point on the optical axis of an unshifted camera lands at
``(W/2, H/2)``, the corner between the four central pixels of an even-sized image).

Depth is the distance along the unit ray direction (not camera-space ``z``) everywhere in the project.

Poses
-----
``orbit_camera(yaw, pitch)`` puts the camera on the sphere of ``radius`` about the *world origin*, at
``radius * (cos(pitch) sin(yaw), sin(pitch), cos(pitch) cos(yaw))``, looking at ``pivot``. This is how
the FFHQ labels of EG3D are made (radius 2.7, pivot (0, 0, 0.2)), so the default neural-rendering
bounds (near 2.25, far 3.3) enclose the head box from every yaw. Positive yaw moves the camera toward
``+x`` (it sees more of the subject's left cheek); positive pitch moves it up (it looks down).

The 25-float label
------------------
``label = concat(cam2world.flatten() (row-major, 16), K_normalised.flatten() (row-major, 9))``, float32,
cam2world in OpenCV convention, exactly as in EG3D/IDE-3D ``dataset.json`` files. ``pack_label`` and
``unpack_label`` are the only functions that build or read it.

Blender
-------
The conversions between the model world and the Blender world, and between a Blender camera's settings
(:class:`BlenderCamera`: lens, sensor, shift, resolution, pixel aspect) and a :class:`Camera`, live in
:mod:`ide3d_core.camera_blender` (``model_to_blender_matrix``, ``model_points_to_blender``,
``blender_points_to_model``, ``BlenderCamera``, ``camera_from_blender``, ``blender_from_camera``). It uses
the constants above; this module re-exports its public names (loaded on first use), so they can be
imported from here as before.

This module needs only numpy (the Blender add-on imports it inside Blender's Python). The batched torch
side of the same convention (``rays_from_labels``: rays through pixel centres; ``turn_labels``: a camera
moved along its orbit, the pose correction of inversion) lives in :mod:`ide3d_core.camera_torch` and is
re-exported from here on first use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .camera_torch import rays_from_labels as rays_from_labels, turn_labels as turn_labels  # noqa: F401

    # Re-exported through __getattr__ at the end of this module.
    from .camera_blender import BlenderCamera as BlenderCamera  # noqa: F401
    from .camera_blender import (blender_from_camera as blender_from_camera,  # noqa: F401
                                 blender_points_to_model as blender_points_to_model,
                                 camera_from_blender as camera_from_blender,
                                 model_points_to_blender as model_points_to_blender,
                                 model_to_blender_matrix as model_to_blender_matrix)

# ----------------------------------------------------------------------------------------------
# Constants of the convention
# ----------------------------------------------------------------------------------------------

#: Normalised focal length of the FFHQ labels (2985.29 / 700); horizontal FOV 13.37 degrees.
CANONICAL_FOCAL = 4.2647
#: Distance of every training camera from the world origin.
CANONICAL_RADIUS = 2.7
#: The point the training cameras look at (model world).
CANONICAL_PIVOT = (0.0, 0.0, 0.2)
#: Blender metres per model-world unit: the head box is 0.5 m wide, a head (chin to crown, about
#: 0.46 units in the procedural heads) about 0.23 m, as an adult's.
METRES_PER_UNIT = 0.5
#: Rotation taking model-world directions to Blender-world directions (+90 degrees about x):
#: y (up) -> Z, +z (face direction) -> -Y.
R_MODEL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

LABEL_DIM = 25


# ----------------------------------------------------------------------------------------------
# Intrinsics helpers
# ----------------------------------------------------------------------------------------------

def fov_to_focal(fov_degrees: float) -> float:
    """Normalised focal length ``f / size`` of a camera whose full field of view (edge to edge of the
    image, not between edge pixel centres) is ``fov_degrees`` along that size."""
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_degrees}")
    return 0.5 / math.tan(math.radians(fov_degrees) / 2.0)


def focal_to_fov(focal: float) -> float:
    """Inverse of :func:`fov_to_focal`: full field of view in degrees of a normalised focal length."""
    if focal <= 0:
        raise ValueError(f"normalised focal length must be positive, got {focal}")
    return math.degrees(2.0 * math.atan(0.5 / focal))


def intrinsics(focal: float = CANONICAL_FOCAL, focal_y: float | None = None,
               cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """Normalised 3x3 intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (units of image size)."""
    fy = focal if focal_y is None else focal_y
    return np.array([[focal, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Rigid-transform helpers
# ----------------------------------------------------------------------------------------------

def _normalize(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    if n < 1e-12:
        raise ValueError("zero-length vector")
    return v / n


def look_at(eye: Sequence[float], target: Sequence[float],
            up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV cam2world (4x4) of a camera at ``eye`` looking at ``target`` with world ``up`` as the
    image's upward direction (camera ``-y``)."""
    return _look_at_batch(np.asarray(eye, dtype=np.float64)[None], target, up)[0]


def _look_at_batch(eyes: np.ndarray, target: Sequence[float],
                   up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """(n, 3) camera centres -> (n, 4, 4) OpenCV cam2world matrices looking at ``target``."""
    eyes = np.asarray(eyes, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64)[None] - eyes
    fn = np.linalg.norm(forward, axis=1, keepdims=True)
    if (fn < 1e-12).any():
        raise ValueError("look_at: the camera is at its target")
    forward = forward / fn
    right = np.cross(forward, np.asarray(up, dtype=np.float64)[None])
    rn = np.linalg.norm(right, axis=1, keepdims=True)
    if (rn < 1e-9).any():
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    right = right / rn
    down = np.cross(forward, right)
    m = np.tile(np.eye(4), (len(eyes), 1, 1))
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, down, forward, eyes
    return m


def _check_rigid(m: np.ndarray, name: str) -> None:
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {m.shape}")
    r = m[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise ValueError(f"{name} rotation is not a proper orthonormal rotation")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise ValueError(f"{name} bottom row must be (0, 0, 0, 1)")


# ----------------------------------------------------------------------------------------------
# The typed camera
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera in the model world.

    Attributes:
        cam2world: (4, 4) float64, OpenCV convention (x right, y down, z forward), rigid.
        intrinsics: (3, 3) float64, normalised by the image size (see the module docstring).
    """

    cam2world: np.ndarray
    intrinsics: np.ndarray

    def __post_init__(self) -> None:
        c2w = np.array(self.cam2world, dtype=np.float64)
        k = np.array(self.intrinsics, dtype=np.float64)
        _check_rigid(c2w, "cam2world")
        if k.shape != (3, 3) or k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
            raise ValueError(f"intrinsics must be a normalised 3x3 matrix with positive focal, got {k}")
        c2w.setflags(write=False)
        k.setflags(write=False)
        object.__setattr__(self, "cam2world", c2w)
        object.__setattr__(self, "intrinsics", k)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_label(cls, label: Sequence[float] | np.ndarray) -> "Camera":
        c2w, k = unpack_label(label)
        return cls(c2w, k)

    def label(self) -> np.ndarray:
        """The packed 25-float label (float32), see :func:`pack_label`."""
        return pack_label(self.cam2world, self.intrinsics)

    # -- properties ----------------------------------------------------------------------------
    @property
    def position(self) -> np.ndarray:
        """Camera centre in model-world coordinates, shape (3,)."""
        return self.cam2world[:3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (camera +z) in the model world, shape (3,)."""
        return self.cam2world[:3, 2].copy()

    def world2cam(self) -> np.ndarray:
        r = self.cam2world[:3, :3]
        m = np.eye(4)
        m[:3, :3] = r.T
        m[:3, 3] = -r.T @ self.cam2world[:3, 3]
        return m

    def yaw_pitch(self) -> tuple[float, float]:
        """Yaw and pitch in radians of the camera centre as seen from the world origin (the inverse of
        :func:`orbit_camera`'s position; the look-at target is not recovered)."""
        p = self.cam2world[:3, 3]
        r = np.linalg.norm(p)
        return math.atan2(p[0], p[2]), math.asin(np.clip(p[1] / r, -1.0, 1.0))

    # -- geometry ------------------------------------------------------------------------------
    def project(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Project model-world points to pixels.

        Args:
            points: (..., 3) model-world points.
            width, height: image size in pixels.
        Returns:
            uv: (..., 2) continuous pixel coordinates (x to the right, y down, pixel centres at +0.5).
            z: (...,) camera-space depth along the optical axis (positive in front of the camera).
        """
        pts = np.asarray(points, dtype=np.float64)
        w2c = self.world2cam()
        pc = pts @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn, yn = pc[..., 0] / z, pc[..., 1] / z
        k = self.intrinsics
        u = (k[0, 0] * xn + k[0, 2]) * width
        v = (k[1, 1] * yn + k[1, 2]) * height
        return np.stack([u, v], axis=-1), z

    def rays(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel rays through pixel centres.

        Returns:
            origins: (height, width, 3) model world, all equal to the camera centre.
            directions: (height, width, 3) unit vectors in the model world.
        """
        dirs = _pixel_directions_np(self.intrinsics, width, height) @ self.cam2world[:3, :3].T
        origins = np.broadcast_to(self.cam2world[:3, 3], dirs.shape).copy()
        return origins, dirs

    def mirrored(self) -> "Camera":
        """The camera mirrored through the face's symmetry plane ``x = 0``.

        A point mirrored in the world (x -> -x) projects, in the mirrored camera, to the horizontally
        mirrored pixel (u -> W - u). On the label this negates entries [1, 2, 3, 4, 8] (as EG3D's
        ``flip_yaw``) and maps cx -> 1 - cx.
        """
        s = np.diag([-1.0, 1.0, 1.0, 1.0])
        c2w = s @ self.cam2world @ s
        k = self.intrinsics.copy()
        k[0, 2] = 1.0 - k[0, 2]
        return Camera(c2w, k)

    def with_intrinsics(self, k: np.ndarray) -> "Camera":
        return Camera(self.cam2world, k)


def _pixel_directions_np(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit camera-space directions through pixel centres, shape (height, width, 3)."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    uu, vv = np.meshgrid(u, v, indexing="xy")
    x = (uu - k[0, 2]) / k[0, 0]
    y = (vv - k[1, 2]) / k[1, 1]
    d = np.stack([x, y, np.ones_like(x)], axis=-1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Label packing (the only place the 25-float layout is written)
# ----------------------------------------------------------------------------------------------

def pack_label(cam2world: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(..., 4, 4) OpenCV cam2world and (..., 3, 3) normalised intrinsics -> float32 (..., 25):
    16 row-major cam2world entries, then 9 row-major intrinsics entries."""
    c2w = np.asarray(cam2world, dtype=np.float64)
    kk = np.broadcast_to(np.asarray(k, dtype=np.float64), c2w.shape[:-2] + (3, 3))
    return np.concatenate([c2w.reshape(c2w.shape[:-2] + (16,)), kk.reshape(kk.shape[:-2] + (9,))],
                          axis=-1).astype(np.float32)


def unpack_label(label: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float (25,) label -> (cam2world (4, 4), intrinsics (3, 3)), both float64.

    The rotation is re-orthonormalised (labels are stored in float32)."""
    arr = np.asarray(label, dtype=np.float64)
    if arr.shape != (LABEL_DIM,):
        raise ValueError(f"a camera label has {LABEL_DIM} numbers, got shape {arr.shape}")
    c2w = arr[:16].reshape(4, 4).copy()
    u, _, vt = np.linalg.svd(c2w[:3, :3])
    c2w[:3, :3] = u @ vt
    return c2w, arr[16:].reshape(3, 3).copy()


def mirror_label(label: np.ndarray) -> np.ndarray:
    """Label of the mirrored camera (see :meth:`Camera.mirrored`); works on (..., 25) arrays."""
    out = np.array(label, dtype=np.float32, copy=True)
    out[..., [1, 2, 3, 4, 8]] *= -1.0
    out[..., 18] = 1.0 - out[..., 18]
    return out


# ----------------------------------------------------------------------------------------------
# Poses
# ----------------------------------------------------------------------------------------------

def _orbit_cam2world(yaw: np.ndarray, pitch: np.ndarray, radius: float,
                     pivot: Sequence[float]) -> np.ndarray:
    """(n,) yaw and pitch in radians -> (n, 4, 4) cam2world of :func:`orbit_camera`."""
    yaw, pitch = np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64)
    if (np.abs(pitch) >= math.pi / 2).any():
        raise ValueError(f"pitch must be within (-90, 90) degrees, got {np.degrees(pitch).round(1)}")
    eyes = radius * np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], 1)
    return _look_at_batch(eyes, pivot)


def orbit_camera(yaw: float, pitch: float = 0.0, radius: float = CANONICAL_RADIUS,
                 pivot: Sequence[float] = CANONICAL_PIVOT, focal: float = CANONICAL_FOCAL) -> Camera:
    """Camera at ``radius`` from the world origin at ``yaw``/``pitch`` (radians), looking at ``pivot``.

    See the module docstring for the sign conventions."""
    return Camera(_orbit_cam2world(np.array([yaw]), np.array([pitch]), radius, pivot)[0], intrinsics(focal))


def orbit_labels(angles: np.ndarray, radius: float = CANONICAL_RADIUS, focal: float = CANONICAL_FOCAL,
                 pivot: Sequence[float] = CANONICAL_PIVOT) -> np.ndarray:
    """(n, 2) yaw/pitch in radians -> (n, 25) float32 packed labels of :func:`orbit_camera`, vectorised
    (no per-camera objects: training draws thousands of cameras a second)."""
    angles = np.asarray(angles, dtype=np.float64).reshape(-1, 2)
    return pack_label(_orbit_cam2world(angles[:, 0], angles[:, 1], radius, pivot), intrinsics(focal))


def canonical_camera() -> Camera:
    """The canonical front camera: yaw = pitch = 0, radius 2.7, pivot (0, 0, 0.2), focal 4.2647."""
    return orbit_camera(0.0, 0.0)


@dataclass(frozen=True)
class PoseDistribution:
    """FFHQ-like camera distribution: Gaussian yaw/pitch (radians) clipped to ``[-clip, clip]`` sigmas
    and to absolute limits. Defaults: yaw sigma 25 degrees, pitch sigma 10 degrees."""

    yaw_std: float = math.radians(25.0)
    pitch_std: float = math.radians(10.0)
    yaw_limit: float = math.radians(60.0)
    pitch_limit: float = math.radians(30.0)
    radius: float = CANONICAL_RADIUS
    focal: float = CANONICAL_FOCAL

    def sample_angles(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 2) array of (yaw, pitch) in radians."""
        yaw = np.clip(rng.normal(0.0, self.yaw_std, n), -self.yaw_limit, self.yaw_limit)
        pitch = np.clip(rng.normal(0.0, self.pitch_std, n), -self.pitch_limit, self.pitch_limit)
        return np.stack([yaw, pitch], axis=1)

    def sample(self, rng: np.random.Generator, n: int) -> list[Camera]:
        return [orbit_camera(y, p, self.radius, CANONICAL_PIVOT, self.focal)
                for y, p in self.sample_angles(rng, n)]


def stack_labels(cameras: Sequence[Camera]) -> np.ndarray:
    """(N, 25) float32 labels of a list of cameras."""
    return np.stack([c.label() for c in cameras]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Re-exports of the Blender conversions and of the torch side (both modules import this one, so they
# are loaded on first access rather than at import: either module may be imported first)
# ----------------------------------------------------------------------------------------------

_BLENDER_NAMES = frozenset({"BlenderCamera", "blender_from_camera", "blender_points_to_model",
                            "camera_from_blender", "model_points_to_blender", "model_to_blender_matrix"})


_TORCH_NAMES = frozenset({"camera_positions", "project_points", "rays_from_labels", "turn_labels"})


def __getattr__(name: str):
    if name in _BLENDER_NAMES:
        from . import camera_blender  # relative: the add-on's vendored copies sit side by side

        return getattr(camera_blender, name)
    if name in _TORCH_NAMES:
        from . import camera_torch  # torch-only: never reached inside Blender

        return getattr(camera_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _BLENDER_NAMES | _TORCH_NAMES)
