# SPDX-License-Identifier: GPL-3.0-or-later
"""Invert one or more photos of one head into a portrait document: the one path of ``ide3d invert`` and the
service's ``invert`` (the add-on's Import Photos).

    outcome = invert_photos(generator, [PhotoInput("front.jpg"), PhotoInput("left.jpg")], encoder=E,
                            preparation="photo")
    save_portrait(outcome.portrait, "head.ide3d")

Preparation of each photo (the same for one photo as for several):

* ``"photo"`` -- the photo pipeline (:func:`ide3d_core.photo.prepare`: detect, align, pose, mask) at the
  generator's resolution: any size and framing; a photo in which no face is found is skipped with a note;
  its estimated camera is used unless the input brings one.
* ``"square"`` -- the image is already an aligned square crop (e.g. from ``ide3d prepare``) and is used as
  it is, with its mask and camera if given (the camera otherwise comes from the encoder).

Then :func:`ide3d_core.inversion.invert_views` fits all usable views at once. The document's source view is
the most frontal photo; with several usable photos it records every one (``Portrait.source_views``).
Photos of apparently different people are named in ``notes``; no usable photo raises
:class:`~ide3d_core.operations.errors.OperationError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ide3d_core.operations.errors import OperationError
from ide3d_core.progress import CancelToken, ProgressFn, report

if TYPE_CHECKING:  # pragma: no cover
    from ide3d_core.photo import PrepareOptions

PREPARATIONS = ("photo", "square")
#: Progress units of preparing one photo (the pipeline's steps, :data:`ide3d_core.photo.pipeline.STEPS`).
_PHOTO_UNITS = 6


@dataclass(frozen=True, eq=False)
class PhotoInput:
    """One photo of the head.

    Attributes:
        source: a file path, the bytes of an image file, or an (H, W, 3) uint8 RGB array.
        mask: its label mask (path or (H, W) array of ids or palette colours), or None.
        camera: (25,) camera label of the photo (after preparation: the aligned crop's), or None.
        name: how messages name it (default: the file name, else "photo <i>").
    """

    source: str | Path | bytes | np.ndarray
    mask: str | Path | np.ndarray | None = None
    camera: np.ndarray | None = None
    name: str = ""


@dataclass(eq=False)
class InvertOutcome:
    """``portrait`` (the document), ``result`` (:class:`~ide3d_core.inversion.InversionResult`: codes, tuned
    generator, per-view report), ``notes`` (preparation warnings, skipped photos, inversion notes) and
    ``skipped`` (name, reason) of the photos the pipeline could not use."""

    portrait: Any
    result: Any
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _name(photo: PhotoInput, i: int) -> str:
    if photo.name:
        return photo.name
    if isinstance(photo.source, (str, Path)):
        return Path(photo.source).name
    return f"photo {i + 1}"


def _square_image(photo: PhotoInput, name: str) -> np.ndarray:
    """(S, S, 3) uint8 RGB of an aligned square input."""
    if isinstance(photo.source, np.ndarray):
        arr = photo.source
    else:
        from ide3d_core.photo.errors import PhotoError
        from ide3d_core.photo.load import load_image

        try:  # the hardened loader: bounded memory, EXIF orientation, any bit depth
            arr = load_image(photo.source).rgb
        except PhotoError as exc:
            raise OperationError(str(exc)) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise OperationError(f"{name}: expected an (H, W, 3) uint8 RGB image, got {arr.dtype} {arr.shape}")
    if abs(arr.shape[0] - arr.shape[1]) > 1:
        raise OperationError(f"{name} is {arr.shape[1]}x{arr.shape[0]}; it must be square (crop it with "
                             "`ide3d prepare`, or let the photo pipeline prepare it)")
    return arr


def invert_photos(generator, photos: Sequence[PhotoInput], *, encoder=None, policy=None,
                  preparation: str = "photo", lpips=None, parser: Optional[Callable] = None,
                  prepare_options: Optional[PrepareOptions] = None, model_hint: str | None = None,
                  generator_config: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InvertOutcome:
    """Prepare ``photos`` (see the module docstring) and invert them together into one portrait.

    Args:
        generator: the base generator. encoder: the standard encoder or None.
        policy: :class:`~ide3d_core.inversion.InversionPolicy` (default: its defaults).
        preparation: "photo" or "square".
        parser: face parser; for "square" an image-tensor parser as :func:`~ide3d_core.inversion.invert`
            takes, for "photo" the pipeline's ``(S, S, 3) uint8 -> (S, S) ids`` parser.
        prepare_options: :class:`ide3d_core.photo.PrepareOptions` for "photo" (framing, domain, ...); its size
            is replaced by the generator's (at least 64).
        params: extra JSON parameters of the document's "invert" record.
    Raises:
        OperationError: unknown preparation, unreadable photo or mask, no usable photo.
    """
    from ide3d_core.inversion import InversionPolicy, InversionView, NoUsableViews, invert_views

    if preparation not in PREPARATIONS:
        raise OperationError(f"unknown preparation {preparation!r}; choose {' or '.join(PREPARATIONS)}")
    if not photos:
        raise OperationError("no photos to invert")
    policy = policy or InversionPolicy()
    size = int(generator.img_resolution)
    n = len(photos)
    prep_units = _PHOTO_UNITS * n if preparation == "photo" else 0
    inv_units = policy.optimise_steps + policy.tune_steps + 1
    total = prep_units + inv_units
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    views: list[InversionView] = []
    sources: list[tuple[np.ndarray, np.ndarray | None]] = []
    names = [_name(p, i) for i, p in enumerate(photos)]
    mask_sources: list[str] = []

    for i, (photo, name) in enumerate(zip(photos, names)):
        if preparation == "photo":
            from ide3d_core.photo import PhotoError, prepare

            def photo_progress(done, _total, message="", i=i, name=name):
                report(progress, _PHOTO_UNITS * i + min(done, _PHOTO_UNITS), total,
                       f"photo: {i + 1}/{n} {name}: {message}" if n > 1 else f"photo: {message}", cancel)

            try:
                prepared = prepare(photo.source, prepare_options, size=max(64, size), mask=photo.mask, parser=parser,
                                   progress=photo_progress, cancel=cancel)
            except PhotoError as exc:
                if exc.problem == "no face found" and n > 1:
                    skipped.append((name, exc.problem))
                    notes.append(f"{name}: no face found; photo skipped")
                    continue
                raise OperationError(str(exc)) from None
            notes += [f"{name}: {w}" if n > 1 else w for w in prepared.warnings]
            image, mask = prepared.image, prepared.mask  # at max(64, size): the inversion resizes
            camera = photo.camera if photo.camera is not None else prepared.label()
            mask_sources.append(prepared.mask_source)
        else:
            image = _square_image(photo, name)
            mask = photo.mask
            if mask is not None and not isinstance(mask, np.ndarray):
                raise OperationError(f"{name}: with preparation 'square' the mask must be an array of label ids")
            if mask is not None and mask.shape != image.shape[:2]:
                raise OperationError(f"{name}: its mask is {mask.shape[1]}x{mask.shape[0]} pixels; it must be "
                                     f"{image.shape[1]}x{image.shape[0]}")
            camera = photo.camera
            mask_sources.append("given" if mask is not None else "")
        views.append(InversionView(image, mask, camera, name))
        sources.append((np.ascontiguousarray(image), None if mask is None else np.ascontiguousarray(mask, np.uint8)))
    if not views:
        raise OperationError(f"no usable photo: no face found in any of the {n} photos")

    def inversion_progress(done, _total, message=""):
        report(progress, prep_units + done, total,
               f"inversion: {message}" if len(views) == 1 else f"inversion: {len(views)} views: {message}", cancel)

    try:
        res = invert_views(generator, views, encoder=encoder, policy=policy, lpips=lpips,
                           parser=parser if preparation == "square" else None, progress=inversion_progress,
                           cancel=cancel)
    except NoUsableViews as exc:
        raise OperationError(f"no usable photo: {exc}") from None
    except ValueError as exc:
        raise OperationError(str(exc)) from None
    notes += res.notes
    k = res.primary
    rec = {"policy": policy.summary(), **(params or {})}
    if len(views) == 1:
        rec["photo"] = names[0] if isinstance(photos[0].source, (str, Path)) else views[0].name
    if skipped:
        rec["skipped"] = [{"name": s, "reason": r} for s, r in skipped]
    if preparation == "photo":
        rec["mask_source"] = mask_sources[k]  # the pipeline's (landmarks, parser, user, box)
    portrait = res.portrait(generator, source_image=sources[k][0], source_mask=sources[k][1],
                            generator_config=generator_config, model_hint=model_hint, params=rec, sources=sources)
    return InvertOutcome(portrait=portrait, result=res, notes=notes, skipped=skipped)


def invert_photo(generator, photo: PhotoInput, **kwargs) -> InvertOutcome:
    """One photo: :func:`invert_photos` with a list of one."""
    return invert_photos(generator, [photo], **kwargs)
