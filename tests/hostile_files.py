# SPDX-License-Identifier: GPL-3.0-or-later
"""Generators of hostile input files for the fuzz and fault tests (not a test module). Every file is
made here, from nothing, so the suite needs no fixtures on disk."""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


def png_header_only(width: int, height: int, mode: int = 2, depth: int = 8) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (colour type ``mode``) with almost no data:
    a decompression bomb as far as the header goes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, mode, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def png_bytes(array: np.ndarray, mode: str | None = None, exif_orientation: int | None = None,
              fmt: str = "PNG") -> bytes:
    from PIL import Image

    img = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    buf = io.BytesIO()
    kw = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def deflate_bomb_zip(member: str, size: int, others: dict[str, bytes]) -> bytes:
    """A zip whose ``member`` inflates to ``size`` zero bytes (written in 1 MiB pieces, so making it
    costs no memory) beside ``others``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, blob in others.items():
            zf.writestr(name, blob)
        with zf.open(member, "w", force_zip64=True) as f:
            piece = b"\x00" * (1 << 20)
            for _ in range(size >> 20):
                f.write(piece)
    return buf.getvalue()


def model_folder(root: Path, **config_changes) -> Path:
    """A model folder whose ``config.json`` is the tiny generator's with ``config_changes`` applied
    (no weights needed: a hostile config must be refused before the weights are looked at)."""
    from ide3d_core.networks import CONFIGS

    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": "ide3d-generator", "version": 1, "dtype": "float32",
            "config": {**CONFIGS["tiny"].to_dict(), **config_changes}}
    (root / "config.json").write_text(json.dumps(meta))
    (root / "generator.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return root
