# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests on portraits: new from a seed, open a document, import a photo, render, mask edit, restyle,
global style, undo/redo and head mesh, all on the worker's :class:`~.session.PortraitSession`.

They mirror the ``ide3d invert | edit | restyle | render`` commands (:mod:`ide3d_core.commands.portrait_cli`)
and call the same public API (:mod:`ide3d_core.editing`, :mod:`ide3d_core.portrait`,
:mod:`ide3d_core.inversion`, :mod:`ide3d_core.photo`). Every request that makes or changes a portrait
answers with :class:`~ide3d_core.service.protocol.PortraitResult`: the new state's ``.ide3d`` document,
its revision, its codes and its canonical view.

:class:`PortraitHandlers` is mixed into :class:`ide3d_core.service.handlers.Backend`, which supplies
``generator()``, ``device()``, ``fingerprint()``, ``encoder(which)``, ``model_spec`` and ``session``.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from ide3d_core import cameras
from ide3d_core.operations import limits
from ide3d_core.operations.render import render_view, write_view
from ide3d_core.image_files import save_image, save_npy, save_npz
from ide3d_core.progress import report
from ide3d_core.service import protocol as P
from ide3d_core.service.errors import BadRequest, NotAvailable
from ide3d_core.service.session import SessionPortrait, revision_of, write_document


def _read_labels(path: str, size: int) -> np.ndarray:
    """(size, size) uint8 label ids of a single-channel label PNG."""
    from ide3d_core.photo.errors import PhotoError
    from ide3d_core.photo.load import load_label_image

    try:
        ids = load_label_image(path)  # the hardened loader: bounded, EXIF orientation applied
    except PhotoError as exc:
        raise BadRequest(f"cannot read the mask: {exc}") from None
    if ids.ndim != 2:
        raise BadRequest(f"the mask {Path(path).name} must be an 8-bit label image, got a colour image")
    if ids.shape != (size, size):
        raise BadRequest(f"the mask is {ids.shape[1]}x{ids.shape[0]} pixels; the canonical view is {size}x{size}")
    return ids


def write_mesh_files(mesh, out_dir: Path) -> P.MeshResult:
    """Write a :class:`ide3d_core.mesh.HeadMesh` as the files of a :class:`~.protocol.MeshResult` into
    ``out_dir``, each atomically: ``mesh.npz`` (``vertices``, ``faces``, and ``colors``, ``labels``, ``uv``
    as the mesh has them) and, for a textured mesh, ``mesh_texture.png`` (its ``texture`` as it is: row 0
    = v 1; the mesh's UV convention is the protocol's, so nothing is flipped)."""
    out_dir = Path(out_dir)
    arrays = {"vertices": mesh.vertices.astype(np.float32), "faces": mesh.faces.astype(np.int32)}
    if mesh.colors is not None:
        arrays["colors"] = mesh.colors.astype(np.float32)
    if mesh.labels is not None:
        arrays["labels"] = mesh.labels.astype(np.uint8)
    texture_file = ""
    if mesh.uv is not None:
        arrays["uv"] = mesh.uv.astype(np.float32)
        texture_file = str(save_image(mesh.texture, out_dir / "mesh_texture.png"))
    path = out_dir / "mesh.npz"
    save_npz(path, **arrays)  # last: a mesh file never names a texture that is not there yet
    return P.MeshResult(mesh_file=str(path), num_vertices=int(mesh.num_vertices), num_faces=int(mesh.num_faces),
                        texture_file=texture_file)


class PortraitHandlers:
    """The portrait requests of :class:`~ide3d_core.service.handlers.Backend` (see the module docstring)."""

    # -- session ---------------------------------------------------------------------------------
    def _entry(self, req) -> SessionPortrait:
        """The session portrait a request names; loaded from its document when the session does not hold
        that revision."""
        entry = self.session.get(req.portrait_id, req.revision)
        if entry is not None:
            return entry
        from ide3d_core.portrait import PortraitError, decode_portrait

        try:
            data = Path(req.document_file).read_bytes()
        except OSError as exc:
            raise BadRequest(f"the portrait document {req.document_file} cannot be read: "
                             f"{exc.strerror or exc}") from None
        if req.revision and revision_of(data) != req.revision:
            raise BadRequest(f"the portrait document {Path(req.document_file).name} is not revision {req.revision}")
        try:
            portrait = decode_portrait(data, name=Path(req.document_file).name)
        except PortraitError as exc:
            raise BadRequest(str(exc)) from None
        entry = self._session_entry(portrait, revision_of(data))
        self.session.put(req.portrait_id, entry)
        return entry

    def _session_entry(self, portrait, revision: str) -> SessionPortrait:
        from ide3d_core.portrait import PortraitError

        try:
            g = portrait.generator(self.generator())
        except PortraitError as exc:
            raise BadRequest(f"{exc}; choose that model in the add-on's preferences") from None
        return SessionPortrait(portrait=portrait, revision=revision, generator=g.eval().requires_grad_(False))

    def _publish(self, portrait_id: str, portrait, out_dir: Path, progress, cancel, notes=(),
                 generator=None, quality: str = "full") -> P.PortraitResult:
        """Store ``portrait`` in the session under ``portrait_id``, write its document, codes and canonical
        view into ``out_dir`` and describe them."""
        from ide3d_core.portrait import encode_portrait

        document = encode_portrait(portrait)
        revision = revision_of(document)
        if generator is not None:
            entry = SessionPortrait(portrait=portrait, revision=revision, generator=generator)
            prev = self.session.latest(portrait_id)
            if prev is not None and prev.generator is generator and prev.portrait.history[0] is portrait.history[0]:
                entry.projection = prev.projection  # an edit: the same photos on the same tuned generator
        else:
            entry = self._session_entry(portrait, revision)
        doc_file = write_document(document, out_dir / "portrait.ide3d")
        ws = portrait.ws
        ws_file = out_dir / "ws.npy"
        save_npy(ws[0].detach().float().cpu().numpy(), ws_file)
        report(progress, 1, 2, "rendering the canonical view", cancel)
        dev = self.device()
        view = render_view(entry.generator, portrait.state, cameras.canonical_camera().label(),
                           inputs=entry.render_inputs(dev), quality=quality,
                           grid=None if quality == "reference" else entry.occupancy_grid(dev),
                           projection=entry.photo_projection())
        image_file, labels_file = (str(f) for f in write_view(view, out_dir / "canonical.png", seg=False))
        ids = view.ids
        if quality != "preview":  # the map residual edits subtract: the full render's, never a preview's
            entry.canonical_labels = ids
        self.session.put(portrait_id, entry)
        report(progress, 2, 2, "done", cancel)
        g = entry.generator
        restyle = portrait.state.restyle
        return P.PortraitResult(
            portrait_id=portrait_id, revision=revision, document_file=str(doc_file), ws_file=str(ws_file),
            num_ws=int(g.num_ws), w_dim=int(g.w_dim), num_shape_ws=int(g.num_shape_ws), image_file=image_file,
            labels_file=labels_file, resolution=int(view.image.shape[1]),
            history=tuple(r.kind for r in portrait.history), current=int(portrait.current),
            restyle_classes=() if restyle is None else tuple(int(c) for c in restyle.classes),
            notes=tuple(str(n) for n in notes))

    @staticmethod
    def _new_id() -> str:
        return uuid.uuid4().hex[:16]

    # -- making portraits --------------------------------------------------------------------------
    def _do_new_portrait(self, req: P.NewPortraitRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_config

        if req.truncation is not None:
            limits.check_truncation(req.truncation)
        report(progress, 0, 2, "loading the model", cancel)
        g = self.generator()
        psi = g.default_truncation if req.truncation is None else float(req.truncation)
        ws = g.codes_from_seeds([int(req.seed)], truncation_psi=psi).detach().float().cpu()
        record = EditRecord("seed", {"seed": int(req.seed), "truncation_psi": psi},
                            PortraitState(ws))
        portrait = Portrait(camera=cameras.canonical_camera().label(), generator_config=generator_config(g),
                            base_fingerprint=self.fingerprint(), history=(record,), model_hint=self.model_spec)
        return self._publish(self._new_id(), portrait, out_dir, progress, cancel, generator=g)

    def _do_open_document(self, req: P.OpenDocumentRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from ide3d_core.portrait import PortraitError, load_portrait

        report(progress, 0, 2, "reading the document", cancel)
        try:
            portrait = load_portrait(req.path)
        except PortraitError as exc:
            raise BadRequest(str(exc)) from None
        return self._publish(self._new_id(), portrait, out_dir, progress, cancel)

    def _do_invert(self, req: P.InvertRequest, out_dir, progress, cancel) -> P.PortraitResult:
        """Photo import of one or more photos of one head, then hybrid inversion of them together (as
        ``ide3d invert --prepare``): :func:`ide3d_core.operations.invert.invert_photos`."""
        import torch

        from ide3d_core.inversion import InversionPolicy
        from ide3d_core.operations import OperationError
        from ide3d_core.portrait import generator_config

        try:
            import ide3d_core.photo  # noqa: F401  (the pipeline's optional dependencies)
            from ide3d_core.operations.invert import PhotoInput, invert_photos
        except ImportError as exc:
            raise NotAvailable(f"photo import (ide3d_core.photo) is not available in this backend: {exc}") from None
        if req.steps < 0 or req.tune_steps < 0:
            raise BadRequest("step counts must be >= 0")
        g = self.generator()
        policy = InversionPolicy(optimise_steps=int(req.steps), tune_steps=int(req.tune_steps),
                                 refine_pose=bool(req.refine_camera))
        files = (req.photo_file, *req.more_photo_files)
        inner = 6 * len(files) + policy.optimise_steps + policy.tune_steps + 1
        total = inner + 2

        def inner_progress(done, _total, message=""):
            report(progress, done, total, message, cancel)

        try:
            with torch.enable_grad():
                out = invert_photos(g, [PhotoInput(f) for f in files], encoder=self.encoder("standard"),
                                    policy=policy, preparation="photo", parser=self.face_parser(),
                                    model_hint=self.model_spec,
                                    generator_config=generator_config(g), progress=inner_progress, cancel=cancel)
        except OperationError as exc:
            raise BadRequest(str(exc)) from None

        def tail(done, _total, message=""):
            report(progress, inner + done, total, message, cancel)

        return self._publish(self._new_id(), out.portrait, out_dir, tail, cancel, notes=out.notes,
                             generator=out.result.generator.eval().requires_grad_(False))

    # -- using and editing portraits --------------------------------------------------------------------
    def _do_render(self, req: P.RenderRequest, out_dir, progress, cancel) -> P.ViewResult:
        report(progress, 0, 1, "rendering", cancel)
        if not isinstance(req.photo, bool):
            raise BadRequest(f"render: photo must be true or false, got {req.photo!r}")
        entry = self._entry(req)
        dev = self.device()
        view = render_view(entry.generator, entry.portrait.state, np.asarray(req.label, np.float64), req.width,
                           req.height, inputs=entry.render_inputs(dev), quality=req.quality,
                           grid=None if req.quality == "reference" else entry.occupancy_grid(dev),
                           projection=entry.photo_projection() if req.photo else None)
        image_file, labels_file = (str(f) for f in write_view(view, out_dir / "view.png", alpha=True, seg=False))
        report(progress, 1, 1, "done", cancel)
        return P.ViewResult(image_file=image_file, labels_file=labels_file, width=req.width, height=req.height)

    def _required_encoder(self, which: str, need: str):
        """The model's ``which`` encoder; raises :class:`BadRequest` "<need>, and this model has none ..."."""
        encoder = self.encoder(which)
        if encoder is None:
            folder = self.model_folder()
            where = (str(folder / "encoders" / which) if folder is not None
                     else f"a model folder's encoders/{which}")
            raise BadRequest(f"{need}, and this model has none (expected {where}, written by `ide3d train-encoders`)")
        return encoder

    def _do_mask_edit(self, req: P.MaskEditRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from dataclasses import replace

        from ide3d_core import editing
        from ide3d_core.shape_residual import RefineConfig

        report(progress, 0, 2, "editing", cancel)
        entry = self._entry(req)
        editor = self._required_encoder("canonical", "mask edits need the canonical editor")
        g = entry.generator
        base, current = entry.portrait, entry.canonical_labels
        visible = base.history[base.current]
        if req.live and visible.kind == "mask" and visible.params.get("live") and base.current > 0:
            base = replace(base, current=base.current - 1)  # replace the session's record, not stack on it
            current = entry.live_base_labels
        if current is None:
            current = editing.canonical_labels(g, base.state, entry.photo_projection())
        mask = _read_labels(req.labels_file, int(current.shape[0]))
        refine = None if req.live or not req.refine else RefineConfig()
        try:
            portrait = editing.mask_edit(base, g, editor, mask, mode=req.mode, current=current, refine=refine,
                                         progress=progress, cancel=cancel)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if req.live:
            record = portrait.history[portrait.current]
            portrait = base.with_record(replace(record, params={**record.params, "live": True}))
        result = self._publish(req.portrait_id, portrait, out_dir, progress, cancel, generator=g, quality=req.quality)
        if req.live:
            self.session.get(req.portrait_id, result.revision).live_base_labels = current
        return result

    def _style_codes(self, entry, seed: int, truncation: float | None, document_file: str = ""):
        """Codes [1, num_ws, w_dim] of a style source (a seed, or a portrait document) and its description."""
        from ide3d_core import editing
        from ide3d_core.portrait import PortraitError, load_portrait

        if document_file:
            try:
                other = load_portrait(document_file)
            except PortraitError as exc:
                raise BadRequest(str(exc)) from None
            return other.ws, {"kind": "portrait", "file": Path(document_file).name}
        psi = entry.generator.default_truncation if truncation is None else limits.check_truncation(truncation)
        return (editing.codes_from_seed(entry.generator, int(seed), psi),
                {"kind": "seed", "seed": int(seed), "truncation_psi": psi})

    def _image_style_codes(self, entry, path: str, cancel):
        """Codes [1, num_ws, w_dim] whose texture codes come from a face photo (aligned by photo import,
        encoded by the standard encoder) and whose shape codes are the portrait's own."""
        import torch

        encoder = self._required_encoder("standard", "a style from a reference image needs the standard encoder")
        try:
            from ide3d_core.photo import PhotoError, prepare
        except ImportError as exc:
            raise NotAvailable(f"photo import (ide3d_core.photo) is not available in this backend: {exc}") from None
        try:
            prepared = prepare(path, size=max(64, int(entry.generator.img_resolution)), cancel=cancel)
        except PhotoError as exc:
            raise BadRequest(str(exc)) from None
        dev = self.device()
        w_t, _ = encoder.encode_texture(prepared.image_tensor(dev))
        ws = entry.portrait.ws.detach().float().cpu()
        ns = int(entry.generator.num_shape_ws)
        style = torch.cat([ws[:, :ns], w_t.detach().float().cpu().to(ws.dtype)], 1)
        return style, {"kind": "image", "file": Path(path).name}

    def _do_restyle(self, req: P.RestyleRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from ide3d_core import editing

        entry = self._entry(req)
        if req.style_image_file and req.style_document_file:
            raise BadRequest("give one style source: a portrait document or a reference image")
        if req.style_image_file:
            style, source = self._image_style_codes(entry, req.style_image_file, cancel)
        else:
            style, source = self._style_codes(entry, req.style_seed, req.truncation, req.style_document_file)
        try:
            portrait = editing.restyle(entry.portrait, req.classes, style, source)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return self._publish(req.portrait_id, portrait, out_dir, progress, cancel, generator=entry.generator)

    def _do_style(self, req: P.StyleRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from ide3d_core import editing

        for name in ("shape_alpha", "texture_alpha"):
            limits.check_style_alpha(getattr(req, name), name)
        entry = self._entry(req)
        other, source = self._style_codes(entry, req.style_seed, req.truncation)
        portrait = editing.global_style(entry.portrait, other, int(entry.generator.num_shape_ws),
                                        float(req.shape_alpha), float(req.texture_alpha), source)
        return self._publish(req.portrait_id, portrait, out_dir, progress, cancel, generator=entry.generator)

    def _do_history(self, req: P.HistoryRequest, out_dir, progress, cancel) -> P.PortraitResult:
        from ide3d_core import editing

        if req.step not in (-1, 1):
            raise BadRequest(f"history step must be -1 (undo) or +1 (redo), got {req.step}")
        entry = self._entry(req)
        try:
            portrait = editing.undo(entry.portrait) if req.step < 0 else editing.redo(entry.portrait)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return self._publish(req.portrait_id, portrait, out_dir, progress, cancel, generator=entry.generator)

    def _mesh(self, req, options, progress, cancel):
        """The head mesh of the portrait ``req`` names, built by :func:`ide3d_core.operations.mesh.build_mesh`."""
        try:
            from ide3d_core.operations import mesh as mesh_ops
        except ImportError as exc:
            raise NotAvailable("head mesh extraction (ide3d_core.mesh) is not available in this backend: "
                               f"{exc}") from None
        entry = self._entry(req)
        field = mesh_ops.portrait_field(entry.generator, entry.portrait.state)
        level = mesh_ops.resolve_level(options, self.model_spec)
        return mesh_ops.build_mesh(field, options, level, progress=progress, cancel=cancel,
                                   projection=entry.photo_projection(), state=entry.portrait.state).mesh

    def _do_mesh(self, req: P.MeshRequest, out_dir, progress, cancel) -> P.MeshResult:
        """The mesh the add-on imports: vertex colours and labels and, with ``req.texture`` > 0, UVs and the
        baked texture, cleaned up and baked like ``ide3d mesh`` (:func:`write_mesh_files`)."""
        from ide3d_core.operations.mesh import MeshOptions

        options = MeshOptions(resolution=req.resolution, texture=req.texture)  # the ranges of .limits
        return write_mesh_files(self._mesh(req, options, progress, cancel), out_dir)

    def _do_export_mesh(self, req: P.ExportMeshRequest, out_dir, progress, cancel) -> P.ExportMeshResult:
        """The add-on's Export: the same file ``ide3d mesh --portrait`` writes."""
        from ide3d_core.operations.mesh import MeshOptions, check_output, write_mesh

        options = MeshOptions(resolution=req.resolution, texture=req.texture, faces=req.faces)
        path = check_output(Path(req.path), options, req.parts)
        if not path.is_absolute():
            raise BadRequest(f"the export path must be absolute, got {req.path!r}")
        mesh = self._mesh(req, options, progress, cancel)
        files = write_mesh(mesh, path, parts=req.parts)
        return P.ExportMeshResult(files=tuple(str(f) for f in files), num_vertices=int(mesh.num_vertices),
                                  num_faces=int(mesh.num_faces))
