# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo loading: formats, modes, EXIF orientation, and a fuzz-style suite of broken inputs.

Each broken input must give a one-line PhotoError naming the file, or a valid image, quickly. Truth is
independent of the loader: images are written by Pillow/OpenCV from known arrays, the absurd header is
crafted byte by byte (never allocated)."""
from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from ide3d_core.photo import PhotoError, prepare
from ide3d_core.photo.load import load_image

pytestmark = pytest.mark.timeout(60)


def _gradient(w: int = 96, h: int = 64) -> np.ndarray:
    """(h, w, 3) uint8 image whose red grows to the right and green downward (orientation checks)."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 60)], -1).round().astype(np.uint8)


def _save(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A syntactically valid PNG signature + IHDR (8-bit RGB) + empty IDAT + IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP"])
def test_formats_round_trip(tmp_path, fmt):
    ref = _gradient()
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(_save(ref, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    got = load_image(path)
    assert got.rgb.shape == ref.shape and got.rgb.dtype == np.uint8
    assert np.abs(got.rgb.astype(int) - ref).mean() < 4.0
    assert got.original_size == (96, 64) and got.scale == 1.0


def test_greyscale_16bit_rgba_cmyk():
    ref = _gradient()
    gray = load_image(_save(ref[..., 0], "PNG")).rgb
    assert gray.shape == (64, 96, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    assert np.array_equal(gray[..., 0], ref[..., 0])
    # 16-bit greyscale: 257 * v must come back as v.
    im16 = Image.fromarray(ref[..., 1].astype(np.uint16) * 257)
    g16 = load_image(_save(im16, "PNG")).rgb
    assert np.array_equal(g16[..., 0], ref[..., 1])
    # RGBA: fully transparent pixels become white, opaque ones keep their colour; alpha is kept.
    rgba = np.concatenate([ref, np.zeros_like(ref[..., :1])], -1)
    rgba[:, :48, 3] = 255
    got = load_image(_save(rgba, "PNG"))
    assert np.array_equal(got.rgb[:, :48], ref[:, :48]) and (got.rgb[:, 48:] == 255).all()
    assert got.alpha is not None and got.alpha[0, 0] == 255 and got.alpha[0, 95] == 0
    cmyk = load_image(_save(Image.fromarray(ref).convert("CMYK"), "JPEG", quality=95)).rgb
    assert cmyk.shape == ref.shape and np.abs(cmyk.astype(int) - ref).mean() < 6.0


def test_16bit_rgb_tiff_through_opencv():
    import cv2

    ref = _gradient()
    ok, buf = cv2.imencode(".tiff", (ref[..., ::-1].astype(np.uint16) * 257))
    assert ok
    got = load_image(buf.tobytes()).rgb
    assert np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("orientation,expect", [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation(orientation, expect):
    ref = _gradient()
    exif = Image.Exif()
    exif[0x0112] = orientation
    got = load_image(_save(ref, "JPEG", quality=95, exif=exif))
    want = expect(ref)
    assert got.rgb.shape == want.shape
    assert np.abs(got.rgb.astype(int) - want).mean() < 4.0
    assert got.original_size == (want.shape[1], want.shape[0])


def test_large_images_are_downscaled_or_decoded_small():
    ref = np.zeros((600, 3000, 3), np.uint8)
    ref[:, 1500:] = 200
    got = load_image(_save(ref, "PNG"), max_side=1000)
    assert got.rgb.shape == (200, 1000, 3) and abs(got.scale - 1 / 3) < 1e-6 and got.warnings
    # A JPEG above the pixel limit is decoded at a reduced DCT scale instead of being refused ...
    jpg = load_image(_save(ref, "JPEG"), max_pixels=300_000)
    assert jpg.original_size == (3000, 600) and max(jpg.rgb.shape) <= 1500 and jpg.warnings
    # ... a PNG is refused.
    with pytest.raises(PhotoError, match="megapixels"):
        load_image(_save(ref, "PNG"), max_pixels=300_000)


def _broken_inputs(tmp_path):
    png = _save(_gradient(256, 256), "PNG")
    cases = {
        "truncated.png": png[: len(png) // 2],
        "empty.png": b"",
        "text.jpg": b"this is not an image, just some text\n" * 20,
        "one_pixel.png": _save(np.zeros((1, 1, 3), np.uint8), "PNG"),
        "huge_header.png": _png_header(20000, 20000),
        "huge_header_mid.png": _png_header(12000, 9000),
        "grey.png": _save(np.full((128, 128), 128, np.uint8), "PNG"),
        "cmyk.jpg": _save(Image.new("CMYK", (128, 128), (0, 40, 80, 10)), "JPEG"),
        "garbage_after_magic.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
    }
    paths = {}
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths[name] = p
    return paths


def test_broken_inputs_fail_cleanly_and_fast(tmp_path):
    expected = {  # name -> a phrase the one-line message must contain; None = a valid result is fine
        "truncated.png": "truncated", "empty.png": "empty", "text.jpg": "not an image",
        "one_pixel.png": "1x1", "huge_header.png": "too large", "huge_header_mid.png": "megapixels",
        "grey.png": "no face", "cmyk.jpg": "no face", "garbage_after_magic.jpg": None,
    }
    for name, path in _broken_inputs(tmp_path).items():
        t0 = time.perf_counter()
        with pytest.raises(PhotoError) as info:
            prepare(path)
        dt = time.perf_counter() - t0
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(path)), (name, msg)
        if expected[name]:
            assert expected[name] in msg, (name, msg)
        assert dt < 10.0, (name, dt)


def test_missing_file_and_bad_array(tmp_path):
    with pytest.raises(PhotoError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(PhotoError, match="is not a file"):
        load_image(tmp_path)
    with pytest.raises(PhotoError, match="array"):
        load_image(np.zeros((4, 4, 4, 4)))
