# SPDX-License-Identifier: GPL-3.0-or-later
"""Every image entering the program (invert's photos, painted masks, the service's label maps) goes
through the hardened loader: bounded memory, EXIF orientation, bit depth, clear one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from hostile_files import png_bytes, png_header_only
from ide3d_core.cli import UserError
from ide3d_core.commands.portrait_cli import read_mask, read_rgb


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _upright():
    """64 x 48 image: top half red, bottom half blue, a green left column (tells every rotation apart)."""
    a = np.zeros((48, 64, 3), np.uint8)
    a[:24, :, 0] = 255
    a[24:, :, 2] = 255
    a[:, :4] = (0, 255, 0)
    return a


@pytest.mark.parametrize("orientation,turn", [(6, 1), (8, -1), (3, 2)])
def test_invert_photos_are_turned_upright_by_their_exif_orientation(tmp_path, orientation, turn):
    upright = _upright()
    # Orientation 6 means "turn 90 degrees clockwise to view": store the picture turned the other way.
    stored = np.ascontiguousarray(np.rot90(upright, k=turn))
    path = _write(tmp_path, "p.jpg", png_bytes(stored, exif_orientation=orientation, fmt="JPEG"))
    got = read_rgb(path).astype(int)
    assert got.shape == upright.shape
    assert np.abs(got - upright).mean() < 12


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = _write(tmp_path, "g16.png", png_bytes(ramp))
    got = read_rgb(path)
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255 and 120 <= got[0, 32, 0] <= 135  # not washed out


@pytest.mark.parametrize("make,match", [
    (lambda: png_header_only(100_000, 100_000), "too large to decode safely"),
    (lambda: png_header_only(9000, 9000), r"9000x9000 pixels \(81 megapixels, limit 64\)"),
    (lambda: png_bytes(np.zeros((1, 1, 3), np.uint8)), "only 1x1 pixels"),
    (lambda: b"", "empty"),
    (lambda: b"GIF89a\x01\x00", "damaged|not an image"),
    (lambda: png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:300],
     "damaged|truncated"),
])
def test_hostile_photos_fail_with_one_line(tmp_path, make, match):
    path = _write(tmp_path, "bad.png", make())
    with pytest.raises(UserError, match=match) as e:
        read_rgb(path)
    assert "\n" not in str(e.value)


def test_masks_keep_their_ids_at_any_bit_depth_and_refuse_bombs(tmp_path):
    ids = (np.arange(64 * 64).reshape(64, 64) % 19).astype(np.uint8)
    p8 = _write(tmp_path, "m8.png", png_bytes(ids, "L"))
    p16 = _write(tmp_path, "m16.png", png_bytes(ids.astype(np.uint16)))
    assert np.array_equal(read_mask(p8, (64, 64)), ids)
    assert np.array_equal(read_mask(p16, (64, 64)), ids)  # ids, never rescaled by 257
    bomb = _write(tmp_path, "bomb.png", png_header_only(100_000, 100_000, mode=0))
    with pytest.raises(UserError, match="too large"):
        read_mask(bomb, None)
    big16 = _write(tmp_path, "big16.png", png_bytes(np.full((8, 8), 4000, np.uint16)))
    with pytest.raises(UserError, match="ids 0..255"):
        read_mask(big16, None)


def test_the_operations_square_input_uses_the_same_loader(tmp_path):
    from ide3d_core.operations import OperationError
    from ide3d_core.operations.invert import PhotoInput, _square_image

    bomb = _write(tmp_path, "bomb.png", png_header_only(100_000, 100_000))
    with pytest.raises(OperationError, match="too large to decode safely"):
        _square_image(PhotoInput(bomb, None, None, "bomb.png"), "bomb.png")
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    got = _square_image(PhotoInput(png_bytes(ramp), None, None, "g"), "g")
    assert 120 <= got[0, 32, 0] <= 135


def test_the_service_reads_painted_masks_through_the_loader(tmp_path):
    from ide3d_core.service.errors import BadRequest
    from ide3d_core.service.portrait_handlers import _read_labels

    ids = np.full((32, 32), 5, np.uint8)
    assert np.array_equal(_read_labels(str(_write(tmp_path, "m.png", png_bytes(ids, "L"))), 32), ids)
    with pytest.raises(BadRequest, match="too large"):
        _read_labels(str(_write(tmp_path, "b.png", png_header_only(100_000, 100_000, mode=0))), 32)
    with pytest.raises(BadRequest, match="colour image"):
        _read_labels(str(_write(tmp_path, "c.png", png_bytes(np.zeros((32, 32, 3), np.uint8)))), 32)


@pytest.mark.slow
def test_prepare_prints_no_native_library_noise(tmp_path):
    import subprocess
    import sys

    from ide3d_core.photo.detect import mediapipe_available

    if not mediapipe_available():
        pytest.skip("MediaPipe (photo extra) not installed")
    cbook = pytest.importorskip("matplotlib.cbook")
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    done = subprocess.run([sys.executable, "-c", "import sys; from ide3d_core.cli import main; sys.exit(main())",
                           "prepare", str(photo), "--out", str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    for noise in ("W0000", "I0000", "AttributeError", "TensorFlow Lite", "absl::InitializeLog"):
        assert noise not in out, out
    assert "[prepare] wrote 7 files" in out


def test_native_quiet_gives_back_what_a_failing_block_printed(capfd):
    import os

    from ide3d_core.photo.quiet import native_quiet

    with native_quiet():
        os.write(2, b"W0000 noise\n")
    with pytest.raises(RuntimeError):
        with native_quiet():
            os.write(2, b"the native reason\n")
            raise RuntimeError("boom")
    err = capfd.readouterr().err
    assert "W0000 noise" not in err and "the native reason" in err
