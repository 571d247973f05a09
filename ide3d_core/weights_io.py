# SPDX-License-Identifier: GPL-3.0-or-later
"""The one on-disk format of every network the project saves: ``folder/config.json`` beside
``folder/<name>.safetensors`` (no pickles, nothing executed on load).

``config.json`` is ``{"format": F, "version": V, "dtype": D, "config": {...}}``: ``format`` names the
kind of network (``ide3d-generator``, ``ide3d-encoder``, ...), ``config`` holds the fields of its frozen
config dataclass. Loading is strict: a wrong format, a newer version, unknown or missing config keys,
and missing, unexpected or mis-shaped weights all raise ``ValueError`` with one line naming the file.
Weights saved in float16/bfloat16 load into the module's own (float32) parameters.

Optional state: a submodule may declare ``optional_state() -> {name: default tensor}`` for buffers added
after models were first saved (for example the surface detail's per-portrait strength). A file without
them loads with those defaults, and :func:`~ide3d_core.weight_delta.generator_fingerprint` leaves out a
buffer that holds its default, so a model and the portraits made with it keep their identity.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ide3d_core.atomic_file import write_atomic

CONFIG_FILE = "config.json"
#: ``config.json`` files above this size are refused unread (a real one is about 2 KB).
MAX_CONFIG_BYTES = 1 << 20
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
T = TypeVar("T")


def save_module(module: nn.Module, folder: str | Path, *, format: str, version: int, config: dict[str, Any],
                weights_file: str, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` and ``weights_file`` (floating tensors cast to ``dtype``) into ``folder``."""
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": format, "version": version, "dtype": name, "config": config}
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in module.state_dict().items()}
    # Weights first, config last: a folder whose config.json is new always has its new weights
    # (each file is replaced atomically, so a killed export leaves the old pair or a loadable mix
    # in which a shape change is caught by the strict loader).
    save_safetensors(folder / weights_file, tensors, {"format": format, "version": str(version)})
    write_atomic(folder / CONFIG_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return folder


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> Path:
    """Atomically write CPU ``tensors`` as a safetensors file (old file or complete new one after a
    kill). The bytes are built in memory and written by :func:`~ide3d_core.atomic_file.write_atomic`:
    ``safetensors.torch.save_file`` would make its own ``.tmpXXXXXX`` beside the file, which a killed
    writer leaves behind under a name no one cleans up."""
    from safetensors.torch import save

    return write_atomic(path, save(tensors, metadata=metadata))


def read_config(folder: str | Path, *, format: str, version: int) -> dict[str, Any]:
    """The ``config`` entry of ``folder/config.json`` after checking its format and version."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        kind = format.removeprefix("ide3d-")
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ValueError(f"{folder} is not {article} {kind} folder ({CONFIG_FILE} missing)")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is {size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({str(exc)[:80]})") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a config") from None
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise ValueError(f"{path} is not an {format} config")
    if not isinstance(meta.get("version"), int) or meta["version"] > version:
        raise ValueError(f"{path} has version {meta.get('version')}; this build reads up to {version}")
    extra = sorted(set(meta) - {"format", "version", "dtype", "config"})
    if extra or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: unknown keys {extra} or no config")
    return meta["config"]


def dataclass_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Strict construction of a config dataclass: unknown or missing keys raise; lists become tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        raise ValueError(f"{where}: unknown config keys {unknown[:5]}, missing config keys {missing[:5]}")
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for name, value in data.items():
        _check_value(name, value, where, types[name])
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


#: Bounds every config value read by :func:`dataclass_from_dict` must keep (sizes of networks that
#: come from untrusted model folders: an encoder or parser config asking for 1e9 channels is refused
#: before the network is built). Generator configs have their own, per-field limits.
MAX_CONFIG_INT = 4096
MAX_CONFIG_ITEMS = 64


def _check_value(name: str, value: Any, where: str, declared: str = "") -> None:
    """``value`` of field ``name`` (declared type ``declared``, as written in the dataclass) is of that
    type and within the bounds above; raises ``ValueError`` naming the field."""
    want = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(declared.split("[")[0].strip())
    if declared.startswith(("tuple", "list")) and not isinstance(value, list):
        raise ValueError(f"{where}: {name} must be a list, got {type(value).__name__}")
    if want is not None and (not isinstance(value, want) or (want is not bool and isinstance(value, bool))):
        raise ValueError(f"{where}: {name} must be of type {declared}, got {type(value).__name__}")
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) > MAX_CONFIG_ITEMS:
        raise ValueError(f"{where}: {name} holds more than {MAX_CONFIG_ITEMS} values")
    for v in items:
        ok = (isinstance(v, bool) or (isinstance(v, int) and -MAX_CONFIG_INT <= v <= MAX_CONFIG_INT)
              or (isinstance(v, float) and abs(v) <= 1e6 and v == v) or (isinstance(v, str) and len(v) <= 256))
        if not ok:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise ValueError(f"{where}: {name} must be a bool, an integer in [-{MAX_CONFIG_INT}, {MAX_CONFIG_INT}], "
                             f"a finite number or a short string, got {shown}")


def optional_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State-dict name -> default value of every buffer a submodule of ``module`` declares optional
    (its ``optional_state()`` method; see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, sub in module.named_modules():
        declare = getattr(sub, "optional_state", None)
        if callable(declare):
            out.update({f"{prefix}.{k}" if prefix else k: v for k, v in declare().items()})
    return out


def load_weights(module: nn.Module, folder: str | Path, weights_file: str) -> nn.Module:
    """Load ``folder/weights_file`` into ``module`` strictly (names and shapes must match exactly; only
    optional buffers, :func:`optional_state`, may be absent, and then take their defaults)."""
    from safetensors.torch import load_file

    path = Path(folder) / weights_file
    if not path.is_file():
        raise ValueError(f"no weights at {path}")
    expected = module.state_dict()
    optional = optional_state(module)
    _check_header(path, expected, set(optional))  # names, shapes and dtypes from the header, before any data
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({_short(exc)})") from None
    tensors.update({k: v for k, v in optional.items() if k not in tensors})
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    wrong = [k for k, v in tensors.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path}: mis-shaped weights {wrong[:5]}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return module


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


_FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}


def _check_header(path: Path, expected: dict[str, torch.Tensor], optional: set[str] = frozenset()) -> None:
    """Compare the safetensors header of ``path`` with ``expected`` without reading the tensor data,
    so a file that declares huge or extra tensors is refused before it costs memory. Names in
    ``optional`` may be absent."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as exc:  # SafetensorError and friends on a damaged header
        raise ValueError(f"{path} is not a readable safetensors file ({_short(exc)})") from None
    missing = sorted(set(expected) - set(shapes) - optional)
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    wrong = [k for k, (shape, _) in shapes.items() if shape != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"{path}: mis-shaped weights {wrong[:5]}")
    bad = [k for k, (_, dt) in shapes.items() if expected[k].is_floating_point() and dt not in _FLOAT_DTYPES]
    if bad:
        raise ValueError(f"{path}: weights of a non-float type {bad[:5]}")
