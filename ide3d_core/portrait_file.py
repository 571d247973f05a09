# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``.ide3d`` file of a portrait document (:class:`~ide3d_core.portrait_document.Portrait`): encoding,
strict decoding, atomic saving and loading.

File layout (version 1): a zip container (never a pickle) with

* ``portrait.json``: ``{"format": "ide3d-portrait", "version": 1, ...}`` -- header, camera, generator
  identity, history kinds/params, cursor;
* ``tensors.safetensors``: ``history.{i}.ws`` [1, num_ws, w_dim] float32, ``history.{i}.style_ws``
  (restyle source codes, when present), ``history.{i}.shape_residual`` [1, 3, Cs, r, r] float16 (a refined
  mask edit's residual on the semantic planes, when present; its record's header carries
  ``"shape_residual": true``), ``delta.{name}`` (tuned - base, only for changed tensors);
* ``source.png`` (RGB uint8) and ``source_mask.png`` (label ids, uint8) when present;
* a multi-view inversion's source views (:class:`~ide3d_core.portrait_document.SourceView`, optional header
  key ``source_views``: camera, mask flag and JSON params per view) as ``views/{i}.png`` and
  ``views/{i}_mask.png``. Documents without them are written exactly as before.

Saving is atomic (a temporary file in the same folder, fsync, ``os.replace``), so a failed save leaves
the previous file intact. Loading is strict: a truncated or damaged container, a file of another kind,
a newer version, unknown members or keys, or tensors that do not match the header raise
:class:`~ide3d_core.portrait_checks.PortraitError` with one line (limits and value checks:
:mod:`ide3d_core.portrait_checks`). The round trip is exact (bit for bit). Re-exported by
:mod:`ide3d_core.portrait`.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ide3d_core import portrait_checks as checks
from ide3d_core.atomic_file import write_atomic
from ide3d_core.portrait_checks import PortraitError
from ide3d_core.portrait_document import EditRecord, Portrait, PortraitState, Restyle, SourceView
from ide3d_core.weight_delta import DELTA_DTYPES, WeightDelta

FORMAT = "ide3d-portrait"
VERSION = 1
SUFFIX = ".ide3d"
_HEADER = "portrait.json"
_TENSORS = "tensors.safetensors"
_SOURCE = "source.png"
_SOURCE_MASK = "source_mask.png"
_VIEW_IMAGE = "views/{}.png"
_VIEW_MASK = "views/{}_mask.png"


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _png_array(data: bytes, mode: str, name: str) -> np.ndarray:
    from PIL import Image

    size = checks.png_size(data)
    checks.require(size is not None, f"member {name} is not a PNG")
    checks.require(0 < size[0] <= checks.MAX_IMAGE_SIDE and 0 < size[1] <= checks.MAX_IMAGE_SIDE,
                   f"member {name} is {size[0]}x{size[1]} pixels (at most {checks.MAX_IMAGE_SIDE} a side)")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many types on damaged data
        raise PortraitError(f"member {name} is not a readable PNG ({checks.short(exc)})") from None
    if img.mode != mode:
        raise PortraitError(f"member {name} has mode {img.mode}, expected {mode}")
    return np.array(img)


def encode_portrait(portrait: Portrait) -> bytes:
    """The ``.ide3d`` bytes of a portrait (see the module docstring)."""
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    history = []
    for i, rec in enumerate(portrait.history):
        tensors[f"history.{i}.ws"] = rec.state.ws.detach().float().cpu().clone()
        restyle = rec.state.restyle
        if restyle is not None:
            tensors[f"history.{i}.style_ws"] = restyle.style_ws.detach().float().cpu().clone()
        entry = {"kind": rec.kind, "params": rec.params,
                 "restyle_classes": None if restyle is None else [int(c) for c in restyle.classes]}
        if rec.state.shape_residual is not None:  # absent otherwise: documents without one are as before
            tensors[f"history.{i}.shape_residual"] = rec.state.shape_residual.detach().cpu().half().clone()
            entry["shape_residual"] = True
        history.append(entry)
    delta = None
    if portrait.delta is not None:
        delta = {"dtype": portrait.delta.dtype, "base_fingerprint": portrait.delta.base_fingerprint,
                 "names": sorted(portrait.delta.deltas)}
        for name, d in portrait.delta.deltas.items():
            tensors[f"delta.{name}"] = d.clone()
    header = {
        "format": FORMAT, "version": VERSION,
        "camera": [float(x) for x in portrait.camera],
        "generator": {"config": portrait.generator_config, "fingerprint": portrait.base_fingerprint,
                      "model_hint": portrait.model_hint},
        "delta": delta, "history": history, "current": portrait.current,
        "source_image": portrait.source_image is not None,
        "source_mask": portrait.source_mask is not None,
        "extra": portrait.extra,
    }
    if portrait.source_views:
        header["source_views"] = [{"camera": [float(x) for x in np.asarray(v.camera, np.float32).reshape(-1)],
                                   "mask": v.mask is not None, "params": v.params} for v in portrait.source_views]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_entry(_HEADER), json.dumps(header, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(_entry(_TENSORS), st_save(tensors), compress_type=zipfile.ZIP_STORED)
        if portrait.source_image is not None:
            img = np.asarray(portrait.source_image)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"source_image must be (H, W, 3) uint8, got {img.dtype} {img.shape}")
            zf.writestr(_entry(_SOURCE), _png_bytes(img), compress_type=zipfile.ZIP_STORED)
        if portrait.source_mask is not None:
            m = np.asarray(portrait.source_mask)
            if m.dtype != np.uint8 or m.ndim != 2:
                raise ValueError(f"source_mask must be (H, W) uint8, got {m.dtype} {m.shape}")
            zf.writestr(_entry(_SOURCE_MASK), _png_bytes(m), compress_type=zipfile.ZIP_STORED)
        for i, v in enumerate(portrait.source_views):
            img, m = np.asarray(v.image), v.mask
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"source view {i} must be (H, W, 3) uint8, got {img.dtype} {img.shape}")
            zf.writestr(_entry(_VIEW_IMAGE.format(i)), _png_bytes(img), compress_type=zipfile.ZIP_STORED)
            if m is not None:
                m = np.asarray(m)
                if m.dtype != np.uint8 or m.shape != img.shape[:2]:
                    raise ValueError(f"source view {i}: mask must be {img.shape[:2]} uint8, got {m.dtype} {m.shape}")
                zf.writestr(_entry(_VIEW_MASK.format(i)), _png_bytes(m), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


#: Time stamp of every entry of a portrait file: fixed, so the same document always gives the same bytes
#: (the zip module would stamp the current time, two-second steps, into the local headers).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.external_attr = 0o600 << 16  # what writestr gives a plain name
    return info


_require = checks.require


def decode_portrait(data: bytes, name: str = "portrait") -> Portrait:
    """Strict, bounded inverse of :func:`encode_portrait` (limits and value checks:
    :mod:`ide3d_core.portrait_checks`)."""
    from safetensors.torch import load as st_load

    if not data.startswith(b"PK\x03\x04"):
        raise PortraitError(f"{name} is not an .ide3d portrait (unknown file type)")
    _require(len(data) <= checks.MAX_FILE_BYTES, f"{name} is {len(data)} bytes (limit {checks.MAX_FILE_BYTES})")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        raise PortraitError(f"{name} is truncated or damaged (its zip directory cannot be read)") from None
    with zf:
        members = zf.namelist()
        _require(len(members) <= 4 + 2 * checks.MAX_VIEWS and len(set(members)) == len(members),
                 f"{name}: unexpected members {sorted(members)[:6]}")
        _require(_HEADER in members, f"{name} is not an .ide3d portrait (no {_HEADER})")
        reader = checks.MemberReader(zf, name)
        try:
            header = json.loads(reader.read(_HEADER))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PortraitError(f"{name}: {_HEADER} is not valid JSON") from None
        except RecursionError:
            raise PortraitError(f"{name}: {_HEADER} is nested too deeply") from None
        _require(checks.json_depth(header) <= checks.MAX_JSON_DEPTH,
                 f"{name}: {_HEADER} is nested deeper than {checks.MAX_JSON_DEPTH} levels")
        _require(isinstance(header, dict) and header.get("format") == FORMAT,
                 f"{name} is not an .ide3d portrait (format tag missing)")
        version = header.get("version")
        _require(checks.is_int(version) and 1 <= version <= VERSION,
                 f"{name} has format version {str(version)[:20]}; this build reads versions 1..{VERSION}")
        known = {"format", "version", "camera", "generator", "delta", "history", "current",
                 "source_image", "source_mask", "extra"}
        _require(set(header) - {"source_views"} == known, f"{name}: header keys differ from version {version} "
                 f"(unknown {sorted(set(header) - known - {'source_views'})[:5]}, missing {sorted(known - set(header))})")
        _require(isinstance(header["source_image"], bool) and isinstance(header["source_mask"], bool),
                 f"{name}: source_image and source_mask must be true or false")
        views_h = header.get("source_views", [])
        _require(isinstance(views_h, list) and len(views_h) <= checks.MAX_VIEWS
                 and all(isinstance(v, dict) and set(v) == {"camera", "mask", "params"}
                         and isinstance(v["mask"], bool) and isinstance(v["params"], dict) for v in views_h),
                 f"{name}: source_views must be a list of at most {checks.MAX_VIEWS} views "
                 "with camera, mask and params")
        expected = {_HEADER, _TENSORS} | ({_SOURCE} if header["source_image"] else set()) \
            | ({_SOURCE_MASK} if header["source_mask"] else set())
        for i, v in enumerate(views_h):
            expected |= {_VIEW_IMAGE.format(i)} | ({_VIEW_MASK.format(i)} if v["mask"] else set())
        _require(set(members) == expected, f"{name}: unexpected members {sorted(set(members) ^ expected)[:6]}")

        # -- everything in the header, before the tensors are decoded ----------------------------
        gen = header["generator"]
        _require(isinstance(gen, dict) and set(gen) == {"config", "fingerprint", "model_hint"}
                 and isinstance(gen["config"], dict) and isinstance(gen["fingerprint"], str)
                 and len(gen["fingerprint"]) <= 128
                 and (gen["model_hint"] is None or (isinstance(gen["model_hint"], str)
                                                    and len(gen["model_hint"]) <= 4096)),
                 f"{name}: generator header is malformed")
        code_shape = _code_shape(gen["config"], name)
        camera = checks.check_camera(header["camera"], f"{name}: the camera")
        hist = header["history"]
        _require(isinstance(hist, list) and 0 < len(hist) <= checks.MAX_HISTORY,
                 f"{name}: the edit history must hold 1..{checks.MAX_HISTORY} records")
        current = header["current"]
        _require(checks.is_int(current) and 0 <= current < len(hist),
                 f"{name}: history cursor {str(current)[:20]} is not in 0..{len(hist) - 1}")
        _require(isinstance(header["extra"], dict), f"{name}: extra must be an object")
        want = set()
        for i, h in enumerate(hist):
            _require(isinstance(h, dict) and set(h) - {"shape_residual"} == {"kind", "params", "restyle_classes"}
                     and h.get("shape_residual", True) is True
                     and isinstance(h["kind"], str) and 0 < len(h["kind"]) <= 64 and isinstance(h["params"], dict),
                     f"{name}: history record {i} is malformed")
            if h["restyle_classes"] is not None:
                from ide3d_core.labels import NUM_CLASSES

                checks.check_classes(h["restyle_classes"], f"{name}: restyle classes of record {i}", NUM_CLASSES)
            want.add(f"history.{i}.ws")
            if h["restyle_classes"] is not None:
                want.add(f"history.{i}.style_ws")
            if "shape_residual" in h:
                want.add(f"history.{i}.shape_residual")
        delta_h = header["delta"]
        if delta_h is not None:
            _require(isinstance(delta_h, dict) and set(delta_h) == {"dtype", "base_fingerprint", "names"}
                     and delta_h["dtype"] in DELTA_DTYPES and isinstance(delta_h["base_fingerprint"], str)
                     and isinstance(delta_h["names"], list)
                     and all(isinstance(n, str) and len(n) <= 256 for n in delta_h["names"])
                     and len(set(delta_h["names"])) == len(delta_h["names"]) <= 4096,
                     f"{name}: weight-delta header is malformed")
            want |= {f"delta.{n}" for n in delta_h["names"]}

        try:
            tensors = st_load(reader.read(_TENSORS))
        except PortraitError:
            raise
        except Exception as exc:  # safetensors raises its own error type
            raise PortraitError(f"{name}: tensor block is damaged ({checks.short(exc)})") from None
        _require(set(tensors) == want, f"{name}: tensors do not match the header "
                 f"(extra {sorted(set(tensors) - want)[:3]}, missing {sorted(want - set(tensors))[:3]})")

        records = []
        for i, h in enumerate(hist):
            ws = tensors[f"history.{i}.ws"]
            checks.check_codes(ws, code_shape, f"{name}: codes of record {i}")
            code_shape = code_shape or tuple(ws.shape)
            restyle = None
            if h["restyle_classes"] is not None:
                sw = tensors[f"history.{i}.style_ws"]
                checks.check_codes(sw, code_shape, f"{name}: restyle codes of record {i}")
                restyle = Restyle(sw, tuple(h["restyle_classes"]))
            residual = None
            if "shape_residual" in h:
                residual = tensors[f"history.{i}.shape_residual"]
                checks.check_residual(residual, f"{name}: shape residual of record {i}")
                residual = residual.float()
            records.append(EditRecord(h["kind"], h["params"], PortraitState(ws, restyle, residual)))
        delta = None
        if delta_h is not None:
            deltas = {n: tensors[f"delta.{n}"] for n in delta_h["names"]}
            _require(all(d.dtype == DELTA_DTYPES[delta_h["dtype"]] for d in deltas.values()),
                     f"{name}: weight deltas do not have dtype {delta_h['dtype']}")
            bad = [n for n, d in deltas.items() if not bool(torch.isfinite(d).all())]
            _require(not bad, f"{name}: weight delta {bad[:1]} holds NaN or infinite values")
            delta = WeightDelta(delta_h["base_fingerprint"], deltas, delta_h["dtype"])
        source = _png_array(reader.read(_SOURCE), "RGB", _SOURCE) if header["source_image"] else None
        mask = _png_array(reader.read(_SOURCE_MASK), "L", _SOURCE_MASK) if header["source_mask"] else None
        if mask is not None:
            from ide3d_core.labels import NUM_CLASSES

            _require(int(mask.max(initial=0)) < NUM_CLASSES, f"{name}: the source mask holds ids >= {NUM_CLASSES}")
            _require(source is None or mask.shape == source.shape[:2],
                     f"{name}: the source mask and image differ in size")
        views = []
        for i, v in enumerate(views_h):
            image = _png_array(reader.read(_VIEW_IMAGE.format(i)), "RGB", _VIEW_IMAGE.format(i))
            vmask = _png_array(reader.read(_VIEW_MASK.format(i)), "L", _VIEW_MASK.format(i)) if v["mask"] else None
            _require(vmask is None or vmask.shape == image.shape[:2], f"{name}: view {i}: mask and image differ in size")
            views.append(SourceView(image=image, camera=checks.check_camera(v["camera"], f"{name}: camera of view {i}"),
                                    mask=vmask, params=v["params"]))
        try:
            return Portrait(camera=camera, generator_config=gen["config"], base_fingerprint=gen["fingerprint"],
                            history=tuple(records), current=current, delta=delta,
                            source_image=source, source_mask=mask, model_hint=gen["model_hint"],
                            extra=dict(header["extra"]), source_views=tuple(views))
        except (ValueError, TypeError) as exc:
            raise PortraitError(f"{name}: {checks.short(exc)}") from None


def _code_shape(config: dict[str, Any], name: str) -> tuple[int, int, int] | None:
    """[1, num_ws, w_dim] of a generator config stored in a document; None for a config of another
    kind (an empty dict: the base model had no config dataclass). A generator config with bad
    values is an error."""
    from ide3d_core.networks.config import ConfigError, GeneratorConfig

    from ide3d_core.networks import config as config_module

    fields = set(GeneratorConfig.__dataclass_fields__)
    optional = set(getattr(config_module, "OPTIONAL_KEYS", ()))
    if not fields - optional <= set(config) <= fields:
        return None
    try:
        cfg = GeneratorConfig.from_dict(config)
    except ConfigError as exc:
        raise PortraitError(f"{name}: {checks.short(exc)}") from None
    return (1, cfg.num_ws, cfg.w_dim)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def save_portrait(portrait: Portrait, path: str | Path, expect: tuple | None = None) -> Path:
    """Write ``portrait`` to ``path`` atomically (temporary file + fsync + ``os.replace``). ``expect``:
    the :func:`ide3d_core.atomic_file.file_stamp` ``path`` had when the edit began; if another program
    wrote ``path`` since, :class:`~ide3d_core.atomic_file.WriteConflict` is raised and nothing is lost."""
    return write_atomic(path, encode_portrait(portrait), expect=expect)


def load_portrait(path: str | Path) -> Portrait:
    """Read a ``.ide3d`` file strictly; raises :class:`PortraitError` with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > checks.MAX_FILE_BYTES:
            raise PortraitError(f"{path} is {size} bytes; a portrait is at most {checks.MAX_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise PortraitError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_portrait(data, name=str(path))
