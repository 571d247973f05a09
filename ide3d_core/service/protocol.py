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

This module needs only the standard library: the add-on ships a verbatim copy of it.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

PROTOCOL_VERSION = 3  # 3: export_mesh


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol version."""


# ----------------------------------------------------------------------------------------------
# Requests (client -> worker) and their results (worker -> client)
# ----------------------------------------------------------------------------------------------
# Conventions: ``*_file`` fields are absolute paths. Latent codes ``ws`` are float32 ``.npy`` files of
# shape (num_ws, w_dim); portrait documents are ``.ide3d`` files (ide3d_core.portrait).
# Colour images are 8-bit sRGB RGB PNGs, top row first; label images are
# 8-bit single-channel PNGs of class ids 0..18 (ide3d_core.labels). Camera labels are the 25-float
# packed labels of ide3d_core.cameras.


@dataclass(frozen=True)
class PingRequest:
    """Reports the backend's environment and whether its model loads."""

    KIND: ClassVar[str] = "ping"
    check_model: bool = True


@dataclass(frozen=True)
class PingResult:
    protocol: int
    python: str
    torch_version: str
    device: str
    cuda_available: bool
    networks_available: bool
    model: str
    model_status: str


@dataclass(frozen=True)
class NewPortraitRequest:
    """A new portrait from a random seed with truncation ``psi`` (1 = none, 0 = the average face)."""

    KIND: ClassVar[str] = "new_portrait"
    seed: int
    truncation: float = 0.7


@dataclass(frozen=True)
class OpenDocumentRequest:
    """Open a portrait document (``.ide3d``, :mod:`ide3d_core.portrait`) as a new session portrait."""

    KIND: ClassVar[str] = "open_document"
    path: str


@dataclass(frozen=True)
class InvertRequest:
    """A portrait from one or more photos of one head: photo import of each (``ide3d_core.photo.prepare``:
    detect, align, pose, mask; a further photo without a face is skipped with a note), then hybrid
    inversion of all of them together (``ide3d_core.operations.invert.invert_photos``) with ``steps``
    code-optimisation and ``tune_steps`` pivotal-tuning steps (the defaults of ``InversionPolicy``).
    ``more_photo_files``: further photos of the same head (Import Photos with several files)."""

    KIND: ClassVar[str] = "invert"
    photo_file: str
    steps: int = 24
    tune_steps: int = 6
    more_photo_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortraitResult:
    """A session portrait after a request that made or changed it.

    The worker keeps the portrait (:class:`ide3d_core.portrait.Portrait`) in its session under
    ``portrait_id``; ``document_file`` is the ``.ide3d`` document of exactly this state and
    ``revision`` its content hash (the first 16 hex digits of the SHA-256 of the document's bytes).
    The client keeps the document and passes (``portrait_id``, ``revision``, ``document_file``) with
    every later request, so a restarted worker reloads the portrait from the document.

    ``ws_file``: the visible codes (num_ws, w_dim) float32 ``.npy``; ``image_file``/``labels_file``: the
    canonical view (``resolution`` x ``resolution``), the map a mask edit paints on. ``history`` holds
    the kinds of the edit records, ``current`` the cursor (undo/redo); ``restyle_classes`` the classes
    of the active region restyle; ``notes`` one-line remarks (photo-import and inversion fallbacks).
    """

    portrait_id: str
    revision: str
    document_file: str
    ws_file: str
    num_ws: int
    w_dim: int
    num_shape_ws: int
    image_file: str
    labels_file: str
    resolution: int
    history: tuple[str, ...] = ()
    current: int = 0
    restyle_classes: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


# Requests on an existing portrait carry its reference as three fields: ``portrait_id``, ``revision``
# (of the state the client shows) and ``document_file`` (that state's ``.ide3d`` document). The worker
# uses its session copy when the revision matches and otherwise loads the document (a restarted
# worker, or a client-side undo of Blender's own).


@dataclass(frozen=True)
class RenderRequest:
    """Neural render of a portrait from a camera, at ``width`` x ``height`` pixels.

    ``label`` is the 25-float camera label for that image size (non-square images and shifted
    principal points are allowed; the backend renders a square view that covers the frame and crops).
    ``quality``: "full" (the fast renderer; the reference image), "preview" (cheaper rays, while the
    user orbits or paints) or "reference" (the generator's own render), as in
    :data:`ide3d_core.fast_render.QUALITIES`.
    """

    KIND: ClassVar[str] = "render"
    portrait_id: str
    revision: str
    document_file: str
    label: tuple[float, ...]
    width: int
    height: int
    quality: str = "full"


@dataclass(frozen=True)
class ViewResult:
    """``image_file``: RGBA PNG whose alpha is the neural opacity; ``labels_file``: label-id PNG."""

    image_file: str
    labels_file: str
    width: int
    height: int


@dataclass(frozen=True)
class MaskEditRequest:
    """Edit a portrait so its canonical-view semantics follow ``labels_file`` (the canonical editor;
    ``mode`` "residual" or "direct", :func:`ide3d_core.editing.mask_edit`).

    ``live``: an edit of a live painting session. When the visible record is itself a live mask edit,
    the new edit replaces it, starting from the state before it (one history record per painting
    session, however many strokes were sent); otherwise it is appended like any edit.
    ``quality``: of the canonical view in the result (as :class:`RenderRequest`'s; "preview" while
    painting)."""

    KIND: ClassVar[str] = "mask_edit"
    portrait_id: str
    revision: str
    document_file: str
    labels_file: str
    mode: str = "residual"
    live: bool = False
    quality: str = "full"


@dataclass(frozen=True)
class RestyleRequest:
    """Give the regions ``classes`` the texture of ``style_seed``, or, when set, of the portrait in
    ``style_document_file`` or of the face photo ``style_image_file`` (its texture codes from the
    model's standard encoder, its shape codes the portrait's own)."""

    KIND: ClassVar[str] = "restyle"
    portrait_id: str
    revision: str
    document_file: str
    classes: tuple[int, ...]
    style_seed: int = 0
    style_document_file: str = ""
    style_image_file: str = ""
    truncation: float = 0.7


@dataclass(frozen=True)
class StyleRequest:
    """Global style: move the shape codes by ``shape_alpha`` and the texture codes by ``texture_alpha``
    toward the codes of ``style_seed`` (0 keeps, 1 takes them; :func:`ide3d_core.editing.global_style`)."""

    KIND: ClassVar[str] = "style"
    portrait_id: str
    revision: str
    document_file: str
    style_seed: int
    shape_alpha: float = 0.0
    texture_alpha: float = 1.0
    truncation: float = 0.7


@dataclass(frozen=True)
class HistoryRequest:
    """Undo (``step`` = -1) or redo (``step`` = +1) one edit of a portrait."""

    KIND: ClassVar[str] = "history"
    portrait_id: str
    revision: str
    document_file: str
    step: int


@dataclass(frozen=True)
class MeshRequest:
    """Extract a head mesh of a portrait at ``resolution`` voxels per side."""

    KIND: ClassVar[str] = "mesh"
    portrait_id: str
    revision: str
    document_file: str
    resolution: int = 128


@dataclass(frozen=True)
class MeshResult:
    """``mesh_file`` is an ``.npz`` with ``vertices`` (V, 3) float32 model world, ``faces`` (F, 3)
    int32 and, when the backend has them, ``colors`` (V, 3) float32 sRGB in [0, 1] (the generator's
    colour space) and ``labels`` (V,) uint8 class ids."""

    mesh_file: str
    num_vertices: int
    num_faces: int


@dataclass(frozen=True)
class ExportMeshRequest:
    """Write a portrait's head mesh to ``path`` (.glb, .obj or .ply) exactly as ``ide3d mesh`` does
    (:mod:`ide3d_core.operations.mesh`): clean-up, decimation to ``faces`` triangles, vertex labels
    (glTF ``_LABEL``), with ``texture`` > 0 a baked UV texture of that edge, with ``parts`` one glTF node
    and material per label. Ranges: ``ide3d_core.operations.limits``."""

    KIND: ClassVar[str] = "export_mesh"
    portrait_id: str
    revision: str
    document_file: str
    path: str
    resolution: int = 256
    texture: int = 2048
    faces: int = 50000
    parts: bool = True


@dataclass(frozen=True)
class ExportMeshResult:
    """``files``: what was written (the mesh file first; an .obj brings its .mtl and texture)."""

    files: tuple[str, ...]
    num_vertices: int
    num_faces: int


@dataclass(frozen=True)
class SleepRequest:
    """Diagnostics: sleeps ``seconds`` in ``steps`` steps with progress, honouring cancel; ``exit_code``
    >= 0 makes the worker process exit with that code half-way (tests of crash recovery)."""

    KIND: ClassVar[str] = "sleep"
    seconds: float
    steps: int = 10
    exit_code: int = -1


@dataclass(frozen=True)
class SleepResult:
    steps_done: int


REQUEST_TYPES: dict[str, type] = {cls.KIND: cls for cls in (
    PingRequest, NewPortraitRequest, OpenDocumentRequest, InvertRequest, RenderRequest, MaskEditRequest,
    RestyleRequest, StyleRequest, HistoryRequest, MeshRequest, ExportMeshRequest, SleepRequest)}

#: The result type each request kind answers with.
RESULT_TYPES: dict[str, type] = {
    "ping": PingResult, "new_portrait": PortraitResult, "open_document": PortraitResult,
    "invert": PortraitResult, "render": ViewResult, "mask_edit": PortraitResult, "restyle": PortraitResult,
    "style": PortraitResult, "history": PortraitResult, "mesh": MeshResult,
    "export_mesh": ExportMeshResult, "sleep": SleepResult,
}

#: Fields with which a request names the portrait it works on.
PORTRAIT_REF_FIELDS = ("portrait_id", "revision", "document_file")


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

