# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading any common photo into an 8-bit sRGB array with bounded memory.

Accepted: everything Pillow decodes (JPEG, PNG, WebP, TIFF, BMP, GIF, ...), in any mode: greyscale,
palette, RGBA / LA (composited over white; the alpha is kept), 16-bit and 32-bit integer, float, CMYK.
The EXIF orientation tag is applied, so the array is upright as a viewer shows it. Images Pillow cannot
open (some 16-bit multi-channel TIFFs) go through OpenCV's decoder.

Memory bounds: the size is read from the header *before* decoding. An image above ``max_pixels`` is
refused, except JPEG, which is decoded directly at a reduced scale (1/2 .. 1/8, libjpeg's DCT scaling) when
that brings it under the limit. Decoded images larger than ``max_side`` are downscaled (area filter).

Label images (painted masks, label maps) go through :func:`load_label_image`: the same header-first
size check, file-size limit and EXIF orientation, but no colour conversion that could change an id.

This module is the one way an image file enters the program: photos (``prepare``, ``invert``), style
images and painted masks all come through it.

Output frame: ``rgb[row, column]``, row 0 at the top; ``scale`` maps original pixel coordinates to the
returned array's (``x_loaded = scale * x_original``), after the EXIF rotation.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PhotoError

#: Largest image (pixels, from the header) that is decoded at full size.
MAX_PIXELS = 64_000_000
#: Decoded images are downscaled so their longer side is at most this.
MAX_SIDE = 2048
#: Smallest side (pixels) that can hold a usable face.
MIN_SIDE = 32
#: Files above this many bytes are refused before reading.
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded photo.

    Attributes:
        rgb: (H, W, 3) uint8 sRGB, upright (EXIF applied), alpha composited over white.
        alpha: (H, W) uint8 or None when the file has no transparency.
        name: the file name (or ``"<array>"`` / ``"<bytes>"``) used in messages.
        original_size: (width, height) of the upright image before any downscaling.
        scale: loaded pixels per original pixel (<= 1).
        warnings: human-readable notes (downscaled, first frame of several, ...).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    name: str
    original_size: tuple[int, int]
    scale: float
    warnings: tuple[str, ...] = ()


def load_image(source: str | Path | bytes | np.ndarray, *, max_side: int = MAX_SIDE,
               max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode ``source`` (a path, the bytes of a file, or an (H, W[, C]) array) into a :class:`LoadedImage`.

    Raises:
        PhotoError: missing, empty, damaged or non-image file, absurd size, or an image too small for a face.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, "<array>", max_side)
    data, name = _read_source(source, "photo")
    try:
        return _decode_pillow(data, name, max_side, max_pixels)
    except _PillowCannotOpen:
        return _decode_opencv(data, name, max_side, max_pixels)


class _PillowCannotOpen(Exception):
    pass


def _too_large(name: str, w: int, h: int, max_pixels: int) -> PhotoError:
    return PhotoError(name, f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels, limit "
                            f"{max_pixels / 1e6:.0f})", "downscale it in an image editor first")


def _decode_pillow(data: bytes, name: str, max_side: int, max_pixels: int) -> LoadedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    try:
        with warnings.catch_warnings():  # the size is checked below, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise PhotoError(name, "the header declares an image too large to decode safely",
                         "downscale it in an image editor first") from None
    except UnidentifiedImageError:
        raise _PillowCannotOpen() from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(name, f"the file is damaged ({_short(exc)})", "re-export or re-download it") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            if im.format == "JPEG" and w * h / 64 <= max_pixels:
                factor = int(np.ceil(np.sqrt(w * h / max_pixels)))
                im.draft("RGB", (max(1, w // factor), max(1, h // factor)))
                notes.append(f"decoded at reduced scale from {w}x{h}")
            else:
                raise _too_large(name, w, h, max_pixels)
        elif im.format == "JPEG" and max(w, h) > 2 * max_side:
            # Decode at the smallest DCT scale still >= max_side: faster, and the area filter follows.
            f = max_side / max(w, h)
            im.draft("RGB", (int(np.ceil(w * f)), int(np.ceil(h * f))))
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"the file holds {im.n_frames} frames; using the first")
        try:
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            im.load()
            im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PhotoError(name, f"the file is damaged or truncated ({_short(exc)})",
                             "re-export or re-download it") from None
        orig = (h, w) if turned else (w, h)
        rgb, alpha = _to_rgb8(im)
    return _finish(rgb, alpha, name, orig, max_side, notes)


def _to_rgb8(im) -> tuple[np.ndarray, np.ndarray | None]:
    """A loaded Pillow image in any mode -> ((H, W, 3) uint8, (H, W) uint8 alpha or None)."""
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _gray_to_rgb(_to_uint8(np.asarray(im))), None
    if "transparency" in im.info and mode in ("P", "L", "RGB"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3]
        a = alpha[..., None].astype(np.float32) / 255.0
        rgb = np.round(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
        return rgb, alpha.copy()
    return np.ascontiguousarray(np.asarray(im.convert("RGB"))), None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer or float samples -> uint8 (16-bit by /257, float in [0, 1] by *255, else clipped)."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        finite = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(np.round(finite * scale), 0, 255).astype(np.uint8)
    peak = int(a.max()) if a.size else 0
    if peak > 255:
        return np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _decode_opencv(data: bytes, name: str, max_side: int, max_pixels: int) -> LoadedImage:
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        arr = None
    if arr is None:
        raise PhotoError(name, "is not an image or is in an unsupported format",
                         "save it as JPEG, PNG, WebP or TIFF") from None
    h, w = arr.shape[:2]
    if w * h > max_pixels:
        raise _too_large(name, w, h, max_pixels)
    if arr.ndim == 2:
        rgb, alpha = _gray_to_rgb(_to_uint8(arr)), None
    else:
        chans = _to_uint8(arr)
        if chans.shape[2] == 4:
            rgb = cv2.cvtColor(chans, cv2.COLOR_BGRA2RGB)
            alpha = chans[..., 3].copy()
            a = alpha[..., None].astype(np.float32) / 255.0
            rgb = np.round(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        else:
            rgb, alpha = cv2.cvtColor(chans[..., :3], cv2.COLOR_BGR2RGB), None
    return _finish(rgb, alpha, name, (w, h), max_side, ["decoded by OpenCV (EXIF orientation not applied)"])


def _from_array(arr: np.ndarray, name: str, max_side: int) -> LoadedImage:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        rgb, alpha = _gray_to_rgb(_to_uint8(a)), None
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        chans = _to_uint8(a)
        rgb, alpha = np.ascontiguousarray(chans[..., :3]), (chans[..., 3].copy() if a.shape[2] == 4 else None)
    else:
        raise PhotoError(name, f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}",
                         "pass an RGB image")
    return _finish(rgb, alpha, name, (rgb.shape[1], rgb.shape[0]), max_side, [])


def _finish(rgb: np.ndarray, alpha: np.ndarray | None, name: str, orig: tuple[int, int], max_side: int,
            notes: list[str]) -> LoadedImage:
    import cv2

    h, w = rgb.shape[:2]
    if min(orig) < MIN_SIDE:
        raise PhotoError(name, f"the image is only {orig[0]}x{orig[1]} pixels",
                         f"use a photo at least {MIN_SIDE} pixels on each side (a face needs about 128)")
    if max(w, h) > max_side:
        f = max_side / max(w, h)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        if alpha is not None:
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {orig[0]}x{orig[1]} to {size[0]}x{size[1]}")
    scale = rgb.shape[1] / orig[0]
    return LoadedImage(np.ascontiguousarray(rgb), alpha, name, orig, float(scale), tuple(notes))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


#: Largest label image (pixels): masks are painted on renders, never larger than a few megapixels.
MAX_LABEL_PIXELS = 16_000_000


def load_label_image(source: str | Path | bytes, *, max_pixels: int = MAX_LABEL_PIXELS) -> np.ndarray:
    """A label image (painted mask or label map) as stored: (H, W) uint8 for single-channel files (the
    values are the ids; 16-bit files must hold values <= 255), else (H, W, 3) uint8 RGB (palette colours;
    alpha dropped). EXIF orientation is applied; nothing is rescaled or colour-converted beyond that.

    Raises:
        PhotoError: missing, empty, damaged or non-image file, or more than ``max_pixels`` pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    data, name = _read_source(source)
    advice = "save it as a PNG of ids 0..18 or palette colours"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise PhotoError(name, "the header declares an image too large to decode safely", advice) from None
    except UnidentifiedImageError:
        raise PhotoError(name, "is not an image or is in an unsupported format", advice) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(name, f"the file is damaged ({_short(exc)})", advice) from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise _too_large(name, w, h, max_pixels)
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PhotoError(name, f"the file is damaged or truncated ({_short(exc)})", advice) from None
        if im.mode in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "1"):
            arr = np.asarray(im)
            if arr.dtype != np.uint8:
                if arr.size and (int(arr.max()) > 255 or int(arr.min()) < 0):
                    raise PhotoError(name, "a single-channel label image must hold ids 0..255", advice)
                arr = arr.astype(np.uint8)
            return np.ascontiguousarray(arr)
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def _read_source(source: str | Path | bytes, kind: str = "image") -> tuple[bytes, str]:
    """The bytes and display name of a path or bytes, after the file checks every loader shares: it exists,
    is a file, is not empty and is under :data:`MAX_FILE_BYTES`. ``kind`` ("photo" or "image") words the
    advice. Raises :class:`PhotoError`."""
    formats = "JPEG, PNG, WebP, TIFF" if kind == "photo" else "PNG, JPEG, WebP, TIFF"
    a_kind = f"an {kind}" if kind == "image" else f"a {kind}"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
        if not data:
            raise PhotoError(name, "the data is empty (0 bytes)", f"choose {a_kind} file ({formats})")
        return data, name
    path = Path(source)
    name = str(path)
    if not path.exists():
        raise PhotoError(name, "no such file", "check the path")
    if not path.is_file():
        raise PhotoError(name, "is not a file", f"give the path of {a_kind} file")
    size = path.stat().st_size
    if size == 0:
        raise PhotoError(name, "the file is empty (0 bytes)", f"choose {a_kind} file ({formats})")
    if size > MAX_FILE_BYTES:
        raise PhotoError(name, f"the file is {size / 2**20:.0f} MiB",
                         f"use {a_kind} under {MAX_FILE_BYTES // 2**20} MiB")
    return path.read_bytes(), name
