# SPDX-License-Identifier: GPL-3.0-or-later
"""Typed, versioned messages between the Blender add-on and the backend worker.

Transport: one JSON object per line over the worker's stdin (client -> worker) and stdout
(worker -> client). Big arrays never travel in the JSON: they are files (``.npy``, ``.npz``, ``.png``)
in a folder chosen by the client (``RequestMessage.out_dir``); messages carry absolute paths.

Every line carries ``"v": PROTOCOL_VERSION``; a line with another version, an unknown ``type``/``kind``
or unknown keys raises :class:`ProtocolError` (strict, so a mismatched add-on and backend fail loudly
instead of half-working). The worker answers every line it rejects that carries an integer ``id`` with
a ``bad_request`` error response of that id (echoing the line's ``kind``, see :func:`peek`), so no
request ever goes unanswered; the client reads the hello's version with :func:`peek` and names both
versions when they differ.

Message flow::

    worker  -> HelloMessage                          once, when ready
    client  -> RequestMessage(id, request, out_dir)  any number, processed in order
    worker  -> ProgressMessage(id, done, total, msg) zero or more per request
    worker  -> ResponseMessage(id, ok, result|error) exactly one per request
    client  -> CancelMessage(id)                     asks the worker to stop (or skip) request id
    client  -> ShutdownMessage                       the worker exits after the current request

Modules: this one (envelopes, errors, :func:`encode` / :func:`decode` / :func:`peek`) and
:mod:`.protocol_requests` (the request and result dataclasses, re-exported here: import everything from
this module). Both need only the standard library: the add-on ships verbatim copies of them side by side
(``ide3d_core.commands.addon.VENDORED``), so this module imports its sibling relatively.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

# Requests (client -> worker) and their results (worker -> client) live in .protocol_requests; they are
# part of this module's interface.
from .protocol_requests import (PORTRAIT_REF_FIELDS, REQUEST_TYPES, RESULT_TYPES, ExportMeshRequest,
                                ExportMeshResult, HistoryRequest, InvertRequest, MaskEditRequest, MeshRequest,
                                MeshResult, NewPortraitRequest, OpenDocumentRequest, PingRequest, PingResult,
                                PortraitRequest, PortraitResult, RenderRequest, RestyleRequest, SleepRequest,
                                SleepResult, StyleRequest, ViewResult)

PROTOCOL_VERSION = 5  # 3: export_mesh; 4: mesh texture (MeshRequest.texture, MeshResult.texture_file); 5: RenderRequest.photo

__all__ = [
    "PROTOCOL_VERSION", "ProtocolError", "ERROR_KINDS", "ErrorInfo", "MAX_LINE_CHARS",
    "HelloMessage", "RequestMessage", "CancelMessage", "ShutdownMessage", "ProgressMessage", "ResponseMessage",
    "encode", "decode", "peek", "error_response",
    # from .protocol_requests
    "PingRequest", "PingResult", "NewPortraitRequest", "OpenDocumentRequest", "InvertRequest", "PortraitResult",
    "RenderRequest", "ViewResult", "MaskEditRequest", "RestyleRequest", "StyleRequest", "HistoryRequest",
    "MeshRequest", "MeshResult", "ExportMeshRequest", "ExportMeshResult", "SleepRequest", "SleepResult",
    "REQUEST_TYPES", "RESULT_TYPES", "PORTRAIT_REF_FIELDS", "PortraitRequest",
]


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol version."""


# ----------------------------------------------------------------------------------------------
# Errors are values
# ----------------------------------------------------------------------------------------------

#: Error kinds: the request was wrong; the feature is not in this backend yet; it was cancelled;
#: anything else raised in the backend; the worker process died, or went silent past the client's
#: timeout (both set by the client).
ERROR_KINDS = ("bad_request", "not_available", "cancelled", "backend_error", "worker_died", "timed_out")


@dataclass(frozen=True)
class ErrorInfo:
    kind: str
    message: str
    traceback: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise ProtocolError(f"unknown error kind {self.kind!r}")


# ----------------------------------------------------------------------------------------------
# Envelopes
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HelloMessage:
    TYPE: ClassVar[str] = "hello"
    protocol: int
    pid: int
    python: str


@dataclass(frozen=True)
class RequestMessage:
    TYPE: ClassVar[str] = "request"
    id: int
    request: Any
    out_dir: str


@dataclass(frozen=True)
class CancelMessage:
    TYPE: ClassVar[str] = "cancel"
    id: int


@dataclass(frozen=True)
class ShutdownMessage:
    TYPE: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class ProgressMessage:
    TYPE: ClassVar[str] = "progress"
    id: int
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class ResponseMessage:
    """``result`` is set when ``error`` is None, and the other way round."""

    TYPE: ClassVar[str] = "response"
    id: int
    kind: str
    result: Any = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (
    HelloMessage, RequestMessage, CancelMessage, ShutdownMessage, ProgressMessage, ResponseMessage)}


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------

def _plain(obj: Any) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _build(cls: type, data: Any, what: str) -> Any:
    """Strictly construct dataclass ``cls`` from a JSON dict (unknown or missing keys raise)."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected an object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ProtocolError(f"{what}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def encode(message: Any) -> str:
    """One message -> one JSON line (no trailing newline)."""
    cls = type(message)
    if cls not in _MESSAGE_TYPES.values():
        raise ProtocolError(f"not a protocol message: {cls.__name__}")
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": cls.TYPE}
    if isinstance(message, RequestMessage):
        req = message.request
        if type(req) not in REQUEST_TYPES.values():
            raise ProtocolError(f"not a request: {type(req).__name__}")
        body.update(id=message.id, kind=req.KIND, params=_plain(req), out_dir=message.out_dir)
    elif isinstance(message, ResponseMessage):
        body.update(id=message.id, kind=message.kind,
                    result=None if message.result is None else _plain(message.result),
                    error=None if message.error is None else _plain(message.error))
    else:
        body.update(_plain(message))
    return json.dumps(body, separators=(",", ":"))


#: Longest line either side accepts (characters); real messages are well under 64 KiB.
MAX_LINE_CHARS = 16 * 2**20


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


_FLAT_HEAD = re.compile(r'^\s*\{[^{}\[\]]*')
_FLAT_FIELD = re.compile(r'"(v|type|id|kind)"\s*:\s*(-?\d{1,15}|"[^"\\]{0,64}")')


def peek(line: str | bytes) -> dict[str, Any]:
    """What can be told of a line that :func:`decode` may refuse, without raising: its protocol
    version ``v``, message ``type``, request ``id`` (an int, else None) and ``kind`` (a short string,
    else None). Used to answer a rejected request with its id, and to name both versions when the
    add-on and the backend differ (the hello is always readable this way)."""
    out: dict[str, Any] = {"v": None, "type": None, "id": None, "kind": None}
    try:
        if isinstance(line, (bytes, bytearray)):
            line = bytes(line).decode("utf-8", errors="replace")
        if len(line) > MAX_LINE_CHARS:
            raise ValueError("too long")
        body = json.loads(line)
    except (ValueError, RecursionError, TypeError):
        # Malformed or too deep: the envelope's flat fields, when they come before any nesting.
        head = _FLAT_HEAD.match(str(line)[:4096])
        body = {}
        if head:
            for m in _FLAT_FIELD.finditer(head.group(0)):
                body[m.group(1)] = json.loads(m.group(2))
    if isinstance(body, dict):
        v, t, i, k = body.get("v"), body.get("type"), body.get("id"), body.get("kind")
        out["v"] = v if _is_id(v) else None
        out["type"] = t if isinstance(t, str) and len(t) <= 32 else None
        out["id"] = i if _is_id(i) else None
        out["kind"] = k if isinstance(k, str) and len(k) <= 64 else None
    return out


def decode(line: str) -> Any:
    """One JSON line -> a message dataclass; raises :class:`ProtocolError` (one line) on anything
    unexpected: bad JSON, a line over :data:`MAX_LINE_CHARS`, nesting too deep for the parser, another
    protocol version, unknown types, kinds or fields, an ``id`` that is not a non-negative integer."""
    if len(line) > MAX_LINE_CHARS:
        raise ProtocolError(f"a line of {len(line)} characters is over the {MAX_LINE_CHARS} limit")
    try:
        body = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} in {line[:80]!r}") from None
    except RecursionError:
        raise ProtocolError("not a message: JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("a message must be a JSON object")
    v = body.pop("v", None)
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version mismatch: this side speaks v{PROTOCOL_VERSION}, the other "
                            f"v{str(v)[:10]}; the add-on and the backend come from different releases")
    if "id" in body and not _is_id(body["id"]):
        raise ProtocolError(f"id must be a non-negative integer, got {str(body['id'])[:20]!r}")
    mtype = body.pop("type", None)
    cls = _MESSAGE_TYPES.get(mtype)
    if cls is None:
        raise ProtocolError(f"unknown message type {mtype!r}")
    if cls is RequestMessage:
        kind = body.get("kind")
        rcls = REQUEST_TYPES.get(kind)
        if rcls is None:
            raise ProtocolError(f"unknown request kind {kind!r}")
        if set(body) != {"id", "kind", "params", "out_dir"}:
            raise ProtocolError(f"request: unexpected fields {sorted(body)}")
        if not isinstance(body["out_dir"], str):
            raise ProtocolError("request: out_dir must be a string")
        return RequestMessage(id=body["id"], request=_build(rcls, body["params"], kind),
                              out_dir=body["out_dir"])
    if cls is ResponseMessage:
        kind = body.get("kind")
        # An error may answer a request of a kind this side does not know (the reply to a rejected
        # request echoes its kind); a result never may.
        if not isinstance(kind, str) or (kind not in RESULT_TYPES and body.get("result") is not None):
            raise ProtocolError(f"unknown response kind {str(kind)[:64]!r}")
        if set(body) != {"id", "kind", "result", "error"}:
            raise ProtocolError(f"response: unexpected fields {sorted(body)}")
        err = None if body["error"] is None else _build(ErrorInfo, body["error"], "error")
        res = None if body["result"] is None else _build(RESULT_TYPES[kind], body["result"], kind)
        if (err is None) == (res is None):
            raise ProtocolError("a response carries exactly one of result and error")
        return ResponseMessage(id=body["id"], kind=kind, result=res, error=err)
    return _build(cls, body, mtype)


def error_response(request_id: int, kind: str, error_kind: str, message: str,
                   traceback: str = "") -> ResponseMessage:
    return ResponseMessage(id=request_id, kind=kind, error=ErrorInfo(error_kind, message, traceback))

