# SPDX-License-Identifier: GPL-3.0-or-later
"""Generators of hostile input files for the fuzz and fault tests (not a test module). Every file is
made here, from nothing, so the suite needs no fixtures on disk."""
from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------------------------------------
# The catalogue of hostile command lines (tests/test_hostile_cli.py, scripts/hostile_inputs.py)
# ------------------------------------------------------------------------------------------------

def _tiny_model(root: Path) -> Path:
    from ide3d_core.networks import Generator, save_generator

    folder = root / "tiny_model"
    if not (folder / "config.json").exists():
        save_generator(Generator("tiny", seed=0), folder)
    return folder


def portrait_bytes(root: Path, model: Path | None = None, **overrides) -> bytes:
    """A valid document of the tiny model at ``model`` (made if None), then changed: ``header`` (a
    function of the header dict), ``tensors`` (a function of the tensor dict)."""
    import torch
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from ide3d_core import portrait as P
    from ide3d_core.cameras import orbit_camera
    from ide3d_core.networks import load_generator

    model = model or _tiny_model(root)
    g = load_generator(model)
    ws = g.codes_from_seeds([1])
    tuned = load_generator(model)
    with torch.no_grad():
        next(iter(tuned.parameters())).add_(0.01)
    doc = P.Portrait(camera=orbit_camera(0.2).label(), generator_config=g.config.to_dict(),
                     base_fingerprint=P.generator_fingerprint(g),
                     history=(P.EditRecord("invert", {}, P.PortraitState(ws)),
                              P.EditRecord("restyle", {}, P.PortraitState(ws.clone(), P.Restyle(ws.clone(), (13,))))),
                     current=1, delta=P.WeightDelta.between(g, tuned), model_hint=str(model))
    data = P.encode_portrait(doc)
    header_fn, tensors_fn = overrides.get("header"), overrides.get("tensors")
    if header_fn is None and tensors_fn is None:
        return data
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            blob = src.read(name)
            if name == "portrait.json" and header_fn is not None:
                h = json.loads(blob)
                header_fn(h)
                blob = json.dumps(h).encode()
            if name == "tensors.safetensors" and tensors_fn is not None:
                t = dict(st_load(blob))
                tensors_fn(t)
                blob = st_save(t)
            zf.writestr(name, blob, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _doc(root: Path, name: str, data: bytes) -> Path:
    path = root / f"{name}.ide3d"
    path.write_bytes(data)
    return path


def _render(doc: Path, root: Path) -> list[str]:
    return ["render", str(doc), "--out", str(root / "view.png"), "--quiet"]


def _hostile_model_doc(root: Path, name: str, **config) -> list[str]:
    folder = model_folder(root / f"model_{name}", **config)
    data = portrait_bytes(root, header=lambda h: h["generator"].update(model_hint=str(folder)))
    return _render(_doc(root, name, data), root)


def _set_header(path, value):
    def f(h):
        d = h
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


def _deep_header(h):
    h["extra"]["deep"] = json.loads("[" * 40 + "]" * 40)
    h["extra"]["deeper"] = {"x": json.loads("[" * 10 + "]" * 10)}


def _bomb_doc(root: Path) -> list[str]:
    good = zipfile.ZipFile(io.BytesIO(portrait_bytes(root)))
    others = {n: good.read(n) for n in good.namelist() if n != "tensors.safetensors"}
    return _render(_doc(root, "deflate_bomb", deflate_bomb_zip("tensors.safetensors", 1 << 30, others)), root)


def _photo(root: Path, name: str, data: bytes) -> list[str]:
    path = root / name
    path.write_bytes(data)
    return ["invert", str(path), "--model", "config:tiny", "--out", str(root / "inv.ide3d"), "--quiet"]


def _nan_codes(t):
    t["history.1.ws"][0, 0, 0] = float("nan")


def _zero_camera(h):
    h["camera"] = [0.0] * 25


#: (name, what it is, function(root) -> ide3d argv, expected message pattern). Every case must end
#: with exit code 2, one stderr line, no traceback, peak RSS under 1.5 GB.
CASES = [
    ("model_channels_1e9", "model_hint -> config.json channel_max 1e9",
     lambda r: _hostile_model_doc(r, "ch", channel_max=10 ** 9), r"channel_max must be an integer in \[1, 4096\]"),
    ("model_w_dim_1e9", "model_hint -> config.json w_dim 1e9",
     lambda r: _hostile_model_doc(r, "w", w_dim=10 ** 9), r"w_dim must be an integer in \[1, 4096\]"),
    ("model_plane_2_20", "model_hint -> config.json plane_resolution 2^20",
     lambda r: _hostile_model_doc(r, "pl", plane_resolution=2 ** 20), r"plane_resolution must be an integer"),
    ("model_string_field", "model_hint -> config.json z_dim \"32\"",
     lambda r: _hostile_model_doc(r, "s", z_dim="32"), r"z_dim must be an integer"),
    ("model_memory", "every field in range, 30+ GiB in total",
     lambda r: _hostile_model_doc(r, "m", channel_max=4096, channel_base=1 << 20, head_channel_max=4096,
                                  head_channel_base=1 << 20, plane_resolution=2048, shared_resolution=256,
                                  semantic_plane_channels=512, texture_plane_channels=512),
     r"above the 12 GiB limit"),
    ("doc_deflate_bomb", ".ide3d whose tensor member inflates to 1 GiB",
     _bomb_doc, r"decompresses to more than|declares"),
    ("doc_codes_shape", "codes of shape [1, 3, 4]",
     lambda r: _render(_doc(r, "shape", portrait_bytes(r, tensors=lambda t: t.update({"history.0.ws": __import__("torch").zeros(1, 3, 4)}))), r),
     r"codes of record 0 have shape \(1, 3, 4\)"),
    ("doc_restyle_strings", "restyle_classes [\"hair\", \"cloth\"]",
     lambda r: _render(_doc(r, "rs", portrait_bytes(r, header=_set_header(("history", 1, "restyle_classes"), ["hair", "cloth"]))), r),
     r"restyle classes of record 1 must be a list"),
    ("doc_restyle_range", "restyle_classes [13, 99]",
     lambda r: _render(_doc(r, "rr", portrait_bytes(r, header=_set_header(("history", 1, "restyle_classes"), [13, 99]))), r),
     r"distinct class ids in 0..18"),
    ("doc_deep_json", "header JSON nested 42 levels",
     lambda r: _render(_doc(r, "deep", portrait_bytes(r, header=_deep_header)), r), r"nested deeper than 32"),
    ("doc_delta_shape_1", "a weight delta of shape [1]",
     lambda r: _render(_doc(r, "delta", portrait_bytes(r, tensors=lambda t: t.update(
         {k: __import__("torch").zeros(1, dtype=__import__("torch").float16) for k in t if k.startswith("delta.")}))), r),
     r"weight delta .* has shape \(1,\)"),
    ("doc_nan_codes", "a NaN in the codes",
     lambda r: _render(_doc(r, "nan", portrait_bytes(r, tensors=_nan_codes)), r), r"NaN or infinite"),
    ("doc_zero_camera", "an all-zero camera",
     lambda r: _render(_doc(r, "cam0", portrait_bytes(r, header=_zero_camera)), r), r"not a valid camera"),
    ("doc_nan_camera", "a NaN camera",
     lambda r: _render(_doc(r, "camnan", portrait_bytes(r, header=_set_header(("camera",), [float("nan")] * 25))), r),
     r"NaN or infinite"),
    ("photo_bomb", "invert: PNG header 100000 x 100000",
     lambda r: _photo(r, "bomb.png", png_header_only(100_000, 100_000)), r"too large to decode safely"),
    ("photo_9000", "invert: PNG 9000 x 9000",
     lambda r: _photo(r, "big.png", png_header_only(9000, 9000)), r"81 megapixels, limit 64"),
    ("photo_1x1", "invert: a 1 x 1 image",
     lambda r: _photo(r, "one.png", png_bytes(np.zeros((1, 1, 3), np.uint8))), r"only 1x1 pixels"),
    ("photo_truncated", "invert: a truncated PNG",
     lambda r: _photo(r, "cut.png", png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:300]),
     r"damaged|truncated"),
]


def run_measured(argv: list[str], address_space: int = 8 << 30, timeout: float = 900) -> tuple[int, str, int]:
    """Run ``python -m ide3d_core.cli ARGV`` -> (exit code, stderr, peak RSS in bytes of that process).
    The address space is capped at ``address_space`` so a regression fails instead of exhausting memory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ide3d_core.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)
    try:
        err = proc.stderr.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
