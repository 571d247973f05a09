# SPDX-License-Identifier: GPL-3.0-or-later
"""``prepare(photo)``: load -> detect -> align + pose -> warp -> segment -> mask, with warnings and timings.

Every failure caused by the photo raises :class:`~ide3d_core.photo.errors.PhotoError` (one line naming the
file and what to do); everything that merely degrades the result is a warning on the returned
:class:`PreparedPhoto`. Nothing is downloaded; nothing global is changed.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

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


@dataclass(frozen=True)
class PrepareOptions:
    """How :func:`prepare` aligns a photo (checked on construction: a bad value raises ``ValueError``).

    Attributes:
        size: side of the aligned output in pixels (at least :data:`.align.MIN_ALIGNED_SIZE`).
        framing: ``"model"`` (the project cameras' framing) or ``"ffhq"`` (:mod:`.align`).
        face_index: which face when there are several (0 = largest); None = largest, with a warning.
        max_side: photos are downscaled to this longest side before detection.
        use_mediapipe: False forces the OpenCV-only path (Haar box, frontal pose, box mask).
        domain: landmark template for the pose (:mod:`.pose`): ``"human"`` (default) for photos of people,
            ``"procedural"`` for images of the project's procedural heads (the default model's domain).
        pose_net: for ``domain="procedural"`` and ``framing="model"``, when the shipped pose net weights
            exist (:mod:`.pose_net`), yaw and pitch (and the camera) come from the net run on the aligned
            image instead of the landmark fit, which under-reads the procedural heads' pitch; the crop
            itself is still the landmark fit's. Landmark PnP stays for ``"human"`` and as the fallback.
    """

    size: int = 512
    framing: str = "model"
    face_index: Optional[int] = None
    max_side: int = MAX_SIDE
    use_mediapipe: bool = True
    domain: str = DEFAULT_DOMAIN
    pose_net: bool = True

    def __post_init__(self) -> None:
        # Checked before any work, so that a ValueError of the landmark fit can only mean a failed fit.
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; choose one of {', '.join(DOMAINS)}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}; choose one of {', '.join(FRAMINGS)}")
        if self.size < MIN_ALIGNED_SIZE:
            raise ValueError(f"aligned size must be at least {MIN_ALIGNED_SIZE} pixels, got {self.size}")


def prepare(photo: str | Path | bytes | np.ndarray, options: Optional[PrepareOptions] = None, *,
            mask: Optional[str | Path | np.ndarray] = None,
            parser: Optional[Callable[[np.ndarray], np.ndarray]] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
            **option_fields) -> PreparedPhoto:
    """Turn any photo into an aligned image, a camera and a label mask.

    Args:
        photo: a path, the bytes of an image file, or an (H, W[, C]) array.
        options: :class:`PrepareOptions` (default: its defaults).
        mask: optional user mask (path or array, ids or palette colours) of the photo's size or of
            ``size`` x ``size``; replaces the automatic mask.
        parser: a face parser, ``(size, size, 3) uint8 aligned image -> (size, size) uint8 label ids`` (e.g.
            the project's SegNet trained on procedural heads, for images of that domain); used for the
            mask instead of the landmark rules when no ``mask`` is given (``mask_source == "parser"``).
        progress, cancel: see :mod:`ide3d_core.progress` (one report per step of :data:`STEPS`).
        **option_fields: fields of :class:`PrepareOptions` replacing those of ``options``
            (``prepare(photo, size=128)`` is ``prepare(photo, PrepareOptions(size=128))``).
    Raises:
        PhotoError: unreadable photo or mask, no face, face index out of range.
        ValueError: a bad option, or a parser returning the wrong shape or ids.
    """
    opts = replace(options or PrepareOptions(), **option_fields)
    steps = _Steps(progress, cancel)
    with steps("load"):
        loaded = load_image(photo, max_side=opts.max_side)
    notes = list(loaded.warnings)
    with steps("detect"):
        faces = _detect(loaded, opts.use_mediapipe, notes)
    idx = _choose_face(loaded, faces, opts.face_index, notes)
    face = faces[idx]
    with steps("align"):
        crop = _align(face, opts, notes)
    with steps("warp"):  # the pose net runs on the warped image, so it is timed with the warp
        image = warp(loaded.rgb, crop.matrix, opts.size)
        crop = _refine_pose(crop, image, opts)
        _warn_about_view(crop, loaded, opts.size, notes)
    with steps("segment"):
        person = None if mask is not None or parser is not None or not opts.use_mediapipe else person_probability(image)
    with steps("mask"):
        landmarks = None if face.landmarks is None else apply_matrix(crop.matrix, face.landmarks[:, :2])
        if mask is not None:
            ids, source = _user_mask(mask, loaded, crop.matrix, opts.size), "user"
        elif parser is not None:
            ids, source = _parsed_mask(parser, image), "parser"
        else:
            ids, source = _rule_mask(image, face, landmarks, crop.matrix, person)
    return PreparedPhoto(image=image, camera=crop.camera, mask=ids, yaw=crop.yaw, pitch=crop.pitch, roll=crop.roll,
                         landmarks=landmarks, matrix=crop.matrix, photo=loaded, faces=faces, face_index=idx,
                         framing=opts.framing, mask_source=source, warnings=tuple(notes), timings=steps.timings)


class _Steps:
    """Times the steps of :func:`prepare` and reports each as it ends (``with steps("load"): ...``)."""

    def __init__(self, progress: Optional[ProgressFn], cancel: Optional[CancelToken]) -> None:
        self.progress, self.cancel = progress, cancel
        self.timings: dict[str, float] = {}  # milliseconds per finished step

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield  # an exception inside the step propagates here: the step is neither timed nor reported
        self.timings[step] = (time.perf_counter() - t0) * 1e3
        report(self.progress, len(self.timings), len(STEPS), step, self.cancel)


@dataclass(frozen=True)
class _Crop:
    """Where the aligned square comes from and the head pose seen in it.

    matrix: (2, 3) loaded-photo pixels -> aligned pixels; camera: the aligned image's camera;
    yaw, pitch, roll: degrees.
    """

    matrix: np.ndarray
    camera: Camera
    yaw: float
    pitch: float
    roll: float


def _detect(loaded: LoadedImage, use_mediapipe: bool, notes: list[str]) -> tuple[Face, ...]:
    """Every face of the loaded photo, largest first (a note when MediaPipe is missing)."""
    if use_mediapipe and not mediapipe_available():
        notes.append("MediaPipe is not installed: OpenCV face box only (pose assumed frontal, rough mask); "
                     "run scripts/setup_env.sh to install it")
    return tuple(detect_faces(loaded.rgb, use_mediapipe=use_mediapipe))


def _choose_face(loaded: LoadedImage, faces: tuple[Face, ...], face_index: Optional[int], notes: list[str]) -> int:
    """Index of the face to prepare (notes for several faces and a small face).

    Raises:
        PhotoError: no face, or ``face_index`` out of range.
    """
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
    box = faces[idx].box
    width_orig = (box[2] - box[0]) / loaded.scale
    if width_orig < SMALL_FACE:
        notes.append(f"the face is only {width_orig:.0f} pixels wide in the photo; the result will be blurry")
    return idx


def _align(face: Face, opts: PrepareOptions, notes: list[str]) -> _Crop:
    """The crop and pose from the face's landmarks; from its box (frontal, canonical camera) without them
    or when the landmark fit fails."""
    if face.landmarks is None:
        notes.append("no landmarks on this face: pose assumed frontal, mask is a rough ellipse")
    else:
        try:
            al: Alignment = align_face(face.landmarks, opts.size, opts.framing, domain=opts.domain)
        except ValueError as exc:  # framing and size were checked by PrepareOptions: the fit itself failed
            notes.append(f"the landmark fit failed ({exc}); using the face box")
        else:
            if al.pose.rms_px > 0.03 * opts.size:
                notes.append(f"landmarks fit the face template poorly ({al.pose.rms_px:.1f} px rms); "
                             "pose is uncertain")
            return _Crop(al.matrix, al.pose.camera, al.pose.yaw, al.pose.pitch, al.pose.roll)
    return _Crop(box_alignment(face.box, opts.size), canonical_camera(), 0.0, 0.0, 0.0)


def _refine_pose(crop: _Crop, image: np.ndarray, opts: PrepareOptions) -> _Crop:
    """Yaw, pitch and camera from the pose net run on the aligned ``image`` where :attr:`PrepareOptions.pose_net`
    applies and its weights are shipped; ``crop`` unchanged otherwise (the roll and the crop are kept)."""
    if not (opts.pose_net and opts.domain == "procedural" and opts.framing == "model"):
        return crop
    from .pose_net import default_pose_net_available, estimate_pose, load_pose_net

    if not default_pose_net_available():
        return crop
    yaw, pitch = estimate_pose(load_pose_net(), image)
    return replace(crop, camera=orbit_camera(np.radians(yaw), np.radians(pitch)), yaw=yaw, pitch=pitch)


def _warn_about_view(crop: _Crop, loaded: LoadedImage, size: int, notes: list[str]) -> None:
    """Notes for a pose beyond the model's range and for a crop reaching well beyond the photo."""
    if abs(crop.yaw) > YAW_WARN or abs(crop.pitch) > PITCH_WARN:
        notes.append(f"estimated yaw {crop.yaw:+.0f} deg, pitch {crop.pitch:+.0f} deg is beyond the model's range "
                     f"(|yaw| <= {YAW_WARN:.0f}, |pitch| <= {PITCH_WARN:.0f}); expect a poor result")
    if _outside_fraction(crop.matrix, loaded.rgb.shape, size) > 0.2:
        notes.append("the crop reaches well beyond the photo; the missing border is filled by reflection")


def _user_mask(mask: str | Path | np.ndarray, loaded: LoadedImage, matrix: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 ids from the user's mask (of the photo's size, warped like it, or already aligned)."""
    name, arr = _read_mask(mask)
    return user_mask(arr, name, loaded.original_size, (loaded.rgb.shape[1], loaded.rgb.shape[0]),
                     lambda m: warp(m, matrix, size, nearest=True, border="replicate"), size)


def _parsed_mask(parser: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """(S, S) uint8 ids from the face parser run on the (S, S, 3) aligned ``image`` (its answer checked)."""
    size = image.shape[0]
    ids = np.asarray(parser(image))
    if ids.shape != (size, size) or ids.dtype != np.uint8 or int(ids.max(initial=0)) >= NUM_CLASSES:
        raise ValueError(f"the parser must return ({size}, {size}) uint8 ids < {NUM_CLASSES}, got "
                         f"{ids.shape} {ids.dtype}")
    return ids


def _rule_mask(image: np.ndarray, face: Face, landmarks: Optional[np.ndarray], matrix: np.ndarray,
               person: Optional[np.ndarray]) -> tuple[np.ndarray, str]:
    """``(ids, source)`` from the landmark rules, or an ellipse in the face box without landmarks
    (``person``: MediaPipe's person probability on ``image``, or None)."""
    if landmarks is not None:
        return landmark_mask(image, landmarks, person), "landmarks"
    box = np.concatenate([apply_matrix(matrix, face.box[:2][None])[0], apply_matrix(matrix, face.box[2:][None])[0]])
    return box_mask(image, box, person), "box"


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

