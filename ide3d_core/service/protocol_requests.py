# SPDX-License-Identifier: GPL-3.0-or-later
"""The requests of the add-on <-> worker protocol and the results that answer them (one frozen dataclass
each; ``KIND`` names a request on the wire). Encoding, decoding, envelopes and errors are
:mod:`.protocol`'s, which re-exports every name of this module: import them from there.

This module needs only the standard library: the add-on ships a verbatim copy of it beside
``protocol.py`` (``ide3d_core.commands.addon.VENDORED``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

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
    """A new portrait from a random seed with ``truncation`` (1 = none, 0 = the average face; None: the
    model's default, ``Generator.default_truncation``; the same None in the restyle and style requests)."""

    KIND: ClassVar[str] = "new_portrait"
    seed: int
    truncation: float | None = None


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
    ``more_photo_files``: further photos of the same head (Import Photos with several files).
    ``refine_camera``: refine each photo's estimated camera with the codes (``InversionPolicy.refine_pose``)."""

    KIND: ClassVar[str] = "invert"
    photo_file: str
    steps: int = 24
    tune_steps: int = 6
    more_photo_files: tuple[str, ...] = ()
    refine_camera: bool = True


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


@dataclass(frozen=True)
class PortraitRequest:
    """Base of the requests on an existing portrait: its reference, always their first three fields.

    ``portrait_id``; ``revision`` (of the state the client shows); ``document_file`` (that state's
    ``.ide3d`` document). The worker uses its session copy when the revision matches and otherwise
    loads the document (a restarted worker, or a client-side undo of Blender's own).
    """

    portrait_id: str
    revision: str
    document_file: str


@dataclass(frozen=True)
class RenderRequest(PortraitRequest):
    """Neural render of a portrait from a camera, at ``width`` x ``height`` pixels.

    ``label`` is the 25-float camera label for that image size (non-square images and shifted
    principal points are allowed; the backend renders a square view that covers the frame and crops).
    ``quality``: "full" (the fast renderer; the reference image), "preview" (cheaper rays, while the
    user orbits or paints) or "reference" (the generator's own render), as in
    :data:`ide3d_core.fast_render.QUALITIES`. ``photo``: lay the portrait's photos over the render where they
    saw the head (:mod:`ide3d_core.photo_projection`); False shows the model alone.
    """

    KIND: ClassVar[str] = "render"
    label: tuple[float, ...]
    width: int
    height: int
    quality: str = "full"
    photo: bool = True


@dataclass(frozen=True)
class ViewResult:
    """``image_file``: RGBA PNG whose alpha is the neural opacity; ``labels_file``: label-id PNG."""

    image_file: str
    labels_file: str
    width: int
    height: int


@dataclass(frozen=True)
class MaskEditRequest(PortraitRequest):
    """Edit a portrait so its canonical-view semantics follow ``labels_file`` (the canonical editor;
    ``mode`` "residual" or "direct", :func:`ide3d_core.editing.mask_edit`).

    ``live``: an edit of a live painting session. When the visible record is itself a live mask edit,
    the new edit replaces it, starting from the state before it (one history record per painting
    session, however many strokes were sent); otherwise it is appended like any edit.
    ``quality``: of the canonical view in the result (as :class:`RenderRequest`'s; "preview" while
    painting). ``refine``: after the editor, fit the portrait's shape residual to the painted map
    (:mod:`ide3d_core.shape_residual`, some seconds, with progress and cancel); live edits never refine
    (they must keep up with the brush)."""

    KIND: ClassVar[str] = "mask_edit"
    labels_file: str
    mode: str = "residual"
    live: bool = False
    quality: str = "full"
    refine: bool = True


@dataclass(frozen=True)
class RestyleRequest(PortraitRequest):
    """Give the regions ``classes`` the texture of ``style_seed``, or, when set, of the portrait in
    ``style_document_file`` or of the face photo ``style_image_file`` (its texture codes from the
    model's standard encoder, its shape codes the portrait's own)."""

    KIND: ClassVar[str] = "restyle"
    classes: tuple[int, ...]
    style_seed: int = 0
    style_document_file: str = ""
    style_image_file: str = ""
    truncation: float | None = None


@dataclass(frozen=True)
class StyleRequest(PortraitRequest):
    """Global style: move the shape codes by ``shape_alpha`` and the texture codes by ``texture_alpha``
    toward the codes of ``style_seed`` (0 keeps, 1 takes them; :func:`ide3d_core.editing.global_style`)."""

    KIND: ClassVar[str] = "style"
    style_seed: int
    shape_alpha: float = 0.0
    texture_alpha: float = 1.0
    truncation: float | None = None


@dataclass(frozen=True)
class HistoryRequest(PortraitRequest):
    """Undo (``step`` = -1) or redo (``step`` = +1) one edit of a portrait."""

    KIND: ClassVar[str] = "history"
    step: int


@dataclass(frozen=True)
class MeshRequest(PortraitRequest):
    """Extract a head mesh of a portrait at ``resolution`` voxels per side (Import Head Mesh), cleaned up
    like ``ide3d mesh``; with ``texture`` > 0 also UV-unwrapped with a baked texture of that edge in texels
    (the bake of ``ide3d mesh --texture``), 0 = vertex colours only. Ranges: ``ide3d_core.operations.limits``."""

    KIND: ClassVar[str] = "mesh"
    resolution: int = 128
    texture: int = 1024


@dataclass(frozen=True)
class MeshResult:
    """``mesh_file`` is an ``.npz`` with ``vertices`` (V, 3) float32 model world, ``faces`` (F, 3)
    int32 and, when the backend has them, ``colors`` (V, 3) float32 sRGB in [0, 1] (the generator's
    colour space) and ``labels`` (V,) uint8 class ids. With a texture it also holds ``uv`` (V, 2) float32
    per vertex (vertices are split along the UV seams; u right, v up, origin bottom-left, both in [0, 1],
    as Blender's UVs), and ``texture_file`` is the baked texture beside it: an 8-bit sRGB RGB PNG of
    ``texture`` x ``texture`` pixels, top row first (v = 1); "" without a texture."""

    mesh_file: str
    num_vertices: int
    num_faces: int
    texture_file: str = ""


@dataclass(frozen=True)
class ExportMeshRequest(PortraitRequest):
    """Write a portrait's head mesh to ``path`` (.glb, .obj or .ply) exactly as ``ide3d mesh`` does
    (:mod:`ide3d_core.operations.mesh`): clean-up, decimation to ``faces`` triangles, vertex labels
    (glTF ``_LABEL``), with ``texture`` > 0 a baked UV texture of that edge, with ``parts`` one glTF node
    and material per label. Ranges: ``ide3d_core.operations.limits``."""

    KIND: ClassVar[str] = "export_mesh"
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
PORTRAIT_REF_FIELDS = tuple(f.name for f in dataclasses.fields(PortraitRequest))
