# SPDX-License-Identifier: GPL-3.0-or-later
"""``prepare(photo)``: load -> detect -> align + pose -> warp -> segment -> mask, with warnings and timings.

Every failure caused by the photo raises :class:`~ide3d_core.photo.errors.PhotoError` (one line naming the
file and what to do); everything that merely degrades the result is a warning on the returned
:class:`PreparedPhoto`. Nothing is downloaded; nothing global is changed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ide3d_core.cameras import Camera, canonical_camera, orbit_camera
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.progress import CancelToken, ProgressFn, report

from .align import FRAMINGS, MIN_ALIGNED_SIZE, Alignment, align_face, apply_matrix, box_alignment, warp
from .detect import Face, detect_faces, mediapipe_available
from .errors import PhotoError
from .load import MAX_SIDE, LoadedImage, load_image
from .mask import box_mask, landmark_mask, person_probability, user_mask
from .pose import DEFAULT_DOMAIN, DOMAINS

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Beyond these |yaw| / |pitch| (degrees) the model has seen few training views (yaw sigma 25 degrees,
#: pitch sigma 10 degrees in :class:`ide3d_core.cameras.PoseDistribution`): a warning is given.
YAW_WARN = 45.0
PITCH_WARN = 25.0
#: Faces narrower than this (pixels of the original photo) are warned about (upscaled, blurry).
SMALL_FACE = 100
STEPS = ("load", "detect", "align", "warp", "segment", "mask")


@dataclass(frozen=True, eq=False)
class PreparedPhoto:
    """A photo ready for inversion.

    Attributes:
        image: (S, S, 3) uint8 sRGB, aligned to ``framing``.
        camera: the camera of ``image`` (orbit camera, ``CANONICAL_FOCAL``; see :mod:`.pose`).
        mask: (S, S) uint8 label ids (:mod:`ide3d_core.labels`).
        yaw, pitch, roll: estimated pose in degrees (roll was removed by the crop).
        landmarks: (468, 2) aligned landmark pixels, or None when the face had none.
        matrix: (2, 3) loaded-photo pixels -> aligned pixels.
        photo: the loaded photo (:class:`.load.LoadedImage`).
        faces: every face found, largest first (boxes/landmarks in loaded-photo pixels).
        face_index: index in ``faces`` of the prepared face.
        framing: ``"model"`` or ``"ffhq"``.
        mask_source: ``"landmarks"``, ``"box"`` or ``"user"``.
        warnings: one-line notes about anything that degrades the result.
        timings: milliseconds per step (keys of :data:`STEPS` that ran).
    """

    image: np.ndarray
    camera: Camera
    mask: np.ndarray
    yaw: float
    pitch: float
    roll: float
    landmarks: np.ndarray | None
    matrix: np.ndarray
    photo: LoadedImage
    faces: tuple[Face, ...]
    face_index: int
    framing: str
    mask_source: str
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.photo.name

    def label(self) -> np.ndarray:
        """The packed 25-float camera label (float32)."""
        return self.camera.label()

    def image_tensor(self, device: "torch.device | str" = "cpu") -> "torch.Tensor":
        """(1, 3, S, S) float32 in [-1, 1] on ``device`` (the generator's image range)."""
        from ide3d_core.images import from_uint8_hwc

        return from_uint8_hwc(self.image).to(device)


def prepare(photo: str | Path | bytes | np.ndarray, *, size: int = 512, framing: str = "model",
            face_index: Optional[int] = None, mask: Optional[str | Path | np.ndarray] = None,
            max_side: int = MAX_SIDE, use_mediapipe: bool = True, domain: str = DEFAULT_DOMAIN,
            pose_net: bool = True, parser: Optional[Callable[[np.ndarray], np.ndarray]] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> PreparedPhoto:
    """Turn any photo into an aligned image, a camera and a label mask.

    Args:
        photo: a path, the bytes of an image file, or an (H, W[, C]) array.
        size: side of the aligned output in pixels.
        framing: ``"model"`` (the project cameras' framing) or ``"ffhq"`` (:mod:`.align`).
        face_index: which face when there are several (0 = largest); None = largest, with a warning.
        mask: optional user mask (path or array, ids or palette colours) of the photo's size or of
            ``size`` x ``size``; replaces the automatic mask.
        max_side: photos are downscaled to this longest side before detection.
        use_mediapipe: False forces the OpenCV-only path (Haar box, frontal pose, box mask).
        domain: landmark template for the pose (:mod:`.pose`): ``"human"`` (default) for photos of people,
            ``"procedural"`` for images of the project's procedural heads (the default model's domain).
        pose_net: for ``domain="procedural"``, when the shipped pose net weights exist
            (:mod:`.pose_net`), yaw and pitch (and the camera) come from the net run on the aligned image
            instead of the landmark fit, which under-reads the procedural heads' pitch; the crop itself is
            still the landmark fit's. Landmark PnP stays for ``"human"`` and as the fallback.
        parser: a face parser, ``(size, size, 3) uint8 aligned image -> (size, size) uint8 label ids`` (e.g.
            the project's SegNet trained on procedural heads, for images of that domain); used for the
            mask instead of the landmark rules when no ``mask`` is given (``mask_source == "parser"``).
        progress, cancel: see :mod:`ide3d_core.progress`.
    Raises:
        PhotoError: unreadable photo or mask, no face, face index out of range.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    # Caller errors first, so that a ValueError of the landmark fit below can only mean a failed fit.
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    if size < MIN_ALIGNED_SIZE:
        raise ValueError(f"aligned size must be at least {MIN_ALIGNED_SIZE} pixels, got {size}")
    timings: dict[str, float] = {}
    total = len(STEPS)

    def tick(step: str, t0: float) -> None:
        timings[step] = (time.perf_counter() - t0) * 1e3
        report(progress, len(timings), total, step, cancel)

    t0 = time.perf_counter()
    loaded = load_image(photo, max_side=max_side)
    notes = list(loaded.warnings)
    tick("load", t0)

    t0 = time.perf_counter()
    if use_mediapipe and not mediapipe_available():
        notes.append("MediaPipe is not installed: OpenCV face box only (pose assumed frontal, rough mask); "
                     "run scripts/setup_env.sh to install it")
    faces = tuple(detect_faces(loaded.rgb, use_mediapipe=use_mediapipe))
    tick("detect", t0)
    if not faces:
        raise PhotoError(loaded.name, "no face found", "use a photo with a clearly visible face at least "
                         f"{SMALL_FACE} pixels wide")
    if face_index is None:
        idx = 0
        if len(faces) > 1:
            notes.append(f"found {len(faces)} faces; using the largest (choose another with --face 0..{len(faces) - 1})")
    else:
        if not 0 <= face_index < len(faces):
            raise PhotoError(loaded.name, f"face {face_index} requested but {len(faces)} found",
                             f"choose --face between 0 and {len(faces) - 1} (0 = largest)")
        idx = face_index
    face = faces[idx]
    width_orig = (face.box[2] - face.box[0]) / loaded.scale
    if width_orig < SMALL_FACE:
        notes.append(f"the face is only {width_orig:.0f} pixels wide in the photo; the result will be blurry")

    t0 = time.perf_counter()
    if face.landmarks is not None:
        try:
            al: Alignment | None = align_face(face.landmarks, size, framing, domain=domain)
        except ValueError as exc:  # framing and size were checked above: the fit itself failed
            al = None
            notes.append(f"the landmark fit failed ({exc}); using the face box")
    else:
        al = None
        notes.append("no landmarks on this face: pose assumed frontal, mask is a rough ellipse")
    if al is not None:
        matrix, cam = al.matrix, al.pose.camera
        yaw, pitch, roll = al.pose.yaw, al.pose.pitch, al.pose.roll
        if al.pose.rms_px > 0.03 * size:
            notes.append(f"landmarks fit the face template poorly ({al.pose.rms_px:.1f} px rms); pose is uncertain")
    else:
        if framing not in ("model", "ffhq"):
            raise ValueError(f"unknown framing {framing!r}")
        matrix, cam, yaw, pitch, roll = box_alignment(face.box, size), canonical_camera(), 0.0, 0.0, 0.0
    tick("align", t0)

    t0 = time.perf_counter()
    image = warp(loaded.rgb, matrix, size)
    if pose_net and domain == "procedural" and framing == "model":  # timed with the warp
        from .pose_net import default_pose_net_available, estimate_pose, load_pose_net

        if default_pose_net_available():
            yaw, pitch = estimate_pose(load_pose_net(), image)
            cam = orbit_camera(np.radians(yaw), np.radians(pitch))
    if abs(yaw) > YAW_WARN or abs(pitch) > PITCH_WARN:
        notes.append(f"estimated yaw {yaw:+.0f} deg, pitch {pitch:+.0f} deg is beyond the model's range "
                     f"(|yaw| <= {YAW_WARN:.0f}, |pitch| <= {PITCH_WARN:.0f}); expect a poor result")
    if _outside_fraction(matrix, loaded.rgb.shape, size) > 0.2:
        notes.append("the crop reaches well beyond the photo; the missing border is filled by reflection")
    tick("warp", t0)

    t0 = time.perf_counter()
    person = None if mask is not None or parser is not None or not use_mediapipe else person_probability(image)
    tick("segment", t0)

    t0 = time.perf_counter()
    landmarks = None if face.landmarks is None else apply_matrix(matrix, face.landmarks[:, :2])
    if mask is not None:
        name, arr = _read_mask(mask)
        ids = user_mask(arr, name, loaded.original_size, (loaded.rgb.shape[1], loaded.rgb.shape[0]),
                        lambda m: warp(m, matrix, size, nearest=True, border="replicate"), size)
        source = "user"
    elif parser is not None:
        ids = np.asarray(parser(image))
        if ids.shape != (size, size) or ids.dtype != np.uint8 or int(ids.max(initial=0)) >= NUM_CLASSES:
            raise ValueError(f"the parser must return ({size}, {size}) uint8 ids < {NUM_CLASSES}, got "
                             f"{ids.shape} {ids.dtype}")
        source = "parser"
    elif landmarks is not None:
        ids, source = landmark_mask(image, landmarks, person), "landmarks"
    else:
        box = np.concatenate([apply_matrix(matrix, face.box[:2][None])[0], apply_matrix(matrix, face.box[2:][None])[0]])
        ids, source = box_mask(image, box, person), "box"
    tick("mask", t0)
    return PreparedPhoto(image=image, camera=cam, mask=ids, yaw=yaw, pitch=pitch, roll=roll, landmarks=landmarks,
                         matrix=matrix, photo=loaded, faces=faces, face_index=idx, framing=framing,
                         mask_source=source, warnings=tuple(notes), timings=timings)


def _outside_fraction(matrix: np.ndarray, shape: tuple[int, ...], size: int) -> float:
    """Fraction of the aligned square whose source lies outside the photo (sampled on a 16x16 grid)."""
    g = (np.arange(16) + 0.5) * size / 16
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    a, t = matrix[:, :2], matrix[:, 2]
    src = (pts - t) @ np.linalg.inv(a).T
    h, w = shape[:2]
    inside = (src[:, 0] >= 0) & (src[:, 0] <= w) & (src[:, 1] >= 0) & (src[:, 1] <= h)
    return float(1.0 - inside.mean())


def _read_mask(mask: str | Path | np.ndarray) -> tuple[str, np.ndarray]:
    """A user mask from a path (any image format, palette or ids) or an array."""
    if isinstance(mask, np.ndarray):
        return "<mask array>", mask
    from .load import load_label_image

    path = Path(mask)
    arr = load_label_image(path)
    return str(path), arr

