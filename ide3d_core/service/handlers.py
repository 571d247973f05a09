# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests of :mod:`ide3d_core.service.protocol` mapped onto backend functions.

:class:`Backend` owns the loaded generator (one model, one device, chosen when the worker starts) and
answers one request at a time; :func:`run_request` wraps a call into progress and response messages,
turning every failure into an error *value*. The worker process and the in-process mode both use it.

Features whose backend modules are not in this build answer ``not_available`` with a one-line reason.
torch is imported lazily, so importing this module is cheap.
"""
from __future__ import annotations

import importlib
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ide3d_core import cameras
from ide3d_core.progress import Cancelled, CancelToken, ProgressFn, report
from ide3d_core.service import protocol as P

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


class NotAvailable(Exception):
    """The feature is not part of this backend build yet."""


class BadRequest(Exception):
    """The request itself is wrong (bad file, wrong shape, bad value)."""


class ModelError(Exception):
    """The model could not be found or loaded."""


def _networks():
    try:
        networks = importlib.import_module("ide3d_core.networks")
    except ImportError as exc:
        raise NotAvailable(f"the generator (ide3d_core.networks) is not available yet in this backend: {exc}") from None
    return networks


def square_view(label: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int, int]:
    """A square camera covering a ``width`` x ``height`` view, for generators with square output.

    The square image has ``n = max(width, height)`` pixels per side in the same pixel units; the
    original frame is the crop ``[y0 : y0 + height, x0 : x0 + width]`` with integer offsets
    ``x0 = (n - width) // 2``, ``y0 = (n - height) // 2``. Non-square pixels (fx != fy) stay as they are.

    Returns:
        (label (25,) float32 of the square camera, n, x0, y0).
    """
    c2w, k = cameras.unpack_label(label)
    n = max(width, height)
    x0, y0 = (n - width) // 2, (n - height) // 2
    fx, fy = k[0, 0] * width, k[1, 1] * height
    cx, cy = k[0, 2] * width + x0, k[1, 2] * height + y0
    ks = cameras.intrinsics(fx / n, fy / n, cx / n, cy / n)
    return cameras.pack_label(c2w, ks), n, x0, y0


class Backend:
    """The service's state: the model spec, the device, and the lazily loaded generator.

    Args:
        model: ``""`` for the bundled model, ``"config:NAME"`` for a randomly initialised generator of
            ``CONFIGS[NAME]`` (tests, demos), else a folder written by ``save_generator``.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
    """

    def __init__(self, model: str = "", device: str = "auto") -> None:
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device must be auto, cuda or cpu, got {device!r}")
        self.model_spec = model
        self.device_name = device
        self._generator: Any = None
        self._planes_key: tuple | None = None
        self._planes: Any = None

    # -- resources -----------------------------------------------------------------------------
    def device(self):
        import torch

        if self.device_name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device_name == "cuda" and not torch.cuda.is_available():
            raise BadRequest("device 'cuda' was asked for but torch sees no CUDA device")
        return torch.device(self.device_name)

    def model_description(self) -> str:
        return self.model_spec or f"bundled ({BUNDLED_MODEL_DIR})"

    def generator(self):
        if self._generator is not None:
            return self._generator
        import torch

        networks = _networks()
        spec, dev = self.model_spec, self.device()
        if spec.startswith("config:"):
            name = spec.split(":", 1)[1]
            if name not in networks.CONFIGS:
                raise ModelError(f"unknown generator config {name!r}; known: {', '.join(networks.CONFIGS)}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                g = networks.Generator(networks.CONFIGS[name])
            g = g.to(dev)
        else:
            folder = Path(spec).expanduser() if spec else BUNDLED_MODEL_DIR
            if folder.is_file():
                folder = folder.parent
            if not (folder / "config.json").is_file():
                raise ModelError(f"no model at {folder} (expected config.json and generator.safetensors)")
            try:
                g = networks.load_generator(folder, device=str(dev))
            except Exception as exc:  # noqa: BLE001 - any load failure is reported as a bad model file
                raise ModelError(f"could not load the model from {folder}: {exc}") from None
        self._generator = g.eval().requires_grad_(False)
        return self._generator

    def _load_ws(self, path: str):
        import torch

        g = self.generator()
        try:
            ws = np.load(path)
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot read the portrait codes {path}: {exc}") from None
        if ws.shape != (g.num_ws, g.w_dim):
            raise BadRequest(f"portrait codes have shape {ws.shape}, the model expects "
                             f"({g.num_ws}, {g.w_dim}); was the portrait made with another model?")
        return torch.from_numpy(np.ascontiguousarray(ws, dtype=np.float32))[None].to(self.device())

    def _planes_for(self, ws):
        key = (id(self._generator), ws.detach().cpu().numpy().tobytes())
        if key != self._planes_key:
            self._planes, self._planes_key = self.generator().planes(ws), key
        return self._planes

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, request: Any, out_dir: Path, progress: ProgressFn | None = None,
               cancel: CancelToken | None = None) -> Any:
        method: Callable | None = getattr(self, "_do_" + request.KIND, None)
        if method is None:
            raise NotAvailable(f"request {request.KIND!r} is not handled by this backend")
        out_dir.mkdir(parents=True, exist_ok=True)
        if request.KIND != "sleep":  # diagnostics run without torch
            import torch

            with torch.no_grad():
                return method(request, out_dir, progress, cancel)
        return method(request, out_dir, progress, cancel)

    # -- handlers ------------------------------------------------------------------------------
    def _do_ping(self, req: P.PingRequest, out_dir, progress, cancel) -> P.PingResult:
        import torch

        try:
            _networks()
            networks_ok = True
        except NotAvailable:
            networks_ok = False
        status = "not checked"
        if req.check_model:
            try:
                g = self.generator()
                status = f"ok ({type(g).__name__}, {g.img_resolution} px)"
            except (NotAvailable, ModelError, BadRequest) as exc:
                status = str(exc)
        try:
            dev = str(self.device())
        except BadRequest as exc:
            dev = str(exc)
        return P.PingResult(protocol=P.PROTOCOL_VERSION, python=f"{platform.python_version()} ({sys.executable})",
                            torch_version=torch.__version__, device=dev,
                            cuda_available=bool(torch.cuda.is_available()), networks_available=networks_ok,
                            model=self.model_description(), model_status=status)

    def _write_view(self, out, out_dir: Path, stem: str, size: tuple[int, int] | None = None,
                    crop: tuple[int, int, int, int] | None = None) -> tuple[str, str]:
        """RenderResult (batch 1) -> RGB PNG + label PNG, optionally resized to ``size`` (n, n) and
        cropped to ``crop`` (x0, y0, w, h)."""
        import torch.nn.functional as F
        from PIL import Image

        img, sem = out.image[:1].float(), out.semantic[:1].float()
        if size is not None and tuple(img.shape[-2:]) != size:
            aa = size[0] < img.shape[-1]
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=aa)
            sem = F.interpolate(sem, size=size, mode="bilinear", align_corners=False, antialias=aa)
        rgb = ((img[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        ids = sem[0].argmax(0).byte().cpu().numpy()
        if crop is not None:
            x0, y0, w, h = crop
            rgb, ids = rgb[y0:y0 + h, x0:x0 + w], ids[y0:y0 + h, x0:x0 + w]
        image_file, labels_file = out_dir / f"{stem}.png", out_dir / f"{stem}_labels.png"
        Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(image_file)
        Image.fromarray(np.ascontiguousarray(ids), "L").save(labels_file)
        return str(image_file), str(labels_file)

    def _portrait_result(self, ws, out_dir: Path, progress, cancel) -> P.PortraitResult:
        import torch

        g = self.generator()
        ws_file = out_dir / "ws.npy"
        np.save(ws_file, ws[0].detach().float().cpu().numpy())
        report(progress, 1, 2, "rendering the canonical view", cancel)
        c = torch.from_numpy(cameras.canonical_camera().label())[None].to(ws.device)
        out = g.render(self._planes_for(ws), c, ws)
        image_file, labels_file = self._write_view(out, out_dir, "canonical")
        report(progress, 2, 2, "done", cancel)
        return P.PortraitResult(ws_file=str(ws_file), num_ws=int(g.num_ws), w_dim=int(g.w_dim),
                                num_shape_ws=int(g.num_shape_ws), image_file=image_file,
                                labels_file=labels_file, resolution=int(out.image.shape[-1]))

    def _do_new_portrait(self, req: P.NewPortraitRequest, out_dir, progress, cancel) -> P.PortraitResult:
        if not 0.0 <= req.truncation <= 1.0:
            raise BadRequest(f"truncation must be in [0, 1], got {req.truncation}")
        report(progress, 0, 2, "loading the model", cancel)
        g = self.generator()
        ws = g.codes_from_seeds([int(req.seed)], truncation_psi=float(req.truncation)).to(self.device())
        return self._portrait_result(ws, out_dir, progress, cancel)

    def _do_render(self, req: P.RenderRequest, out_dir, progress, cancel) -> P.ViewResult:
        import torch

        if req.width < 1 or req.height < 1 or max(req.width, req.height) > 8192:
            raise BadRequest(f"render size must be 1..8192 pixels per side, got {req.width}x{req.height}")
        report(progress, 0, 1, "rendering", cancel)
        ws = self._load_ws(req.ws_file)
        label, n, x0, y0 = square_view(np.asarray(req.label, np.float64), req.width, req.height)
        c = torch.from_numpy(label)[None].to(ws.device)
        out = self.generator().render(self._planes_for(ws), c, ws)
        image_file, labels_file = self._write_view(out, out_dir, "view", size=(n, n),
                                                   crop=(x0, y0, req.width, req.height))
        report(progress, 1, 1, "done", cancel)
        return P.ViewResult(image_file=image_file, labels_file=labels_file, width=req.width, height=req.height)

    def _do_mask_edit(self, req, out_dir, progress, cancel):
        raise NotAvailable("mask editing (the canonical editor, ide3d_core.editing) is not available yet in this backend")

    def _do_restyle(self, req, out_dir, progress, cancel):
        raise NotAvailable("region restyling (ide3d_core.editing) is not available yet in this backend")

    def _do_invert(self, req, out_dir, progress, cancel):
        raise NotAvailable("photo import (inversion, ide3d_core.inversion) is not available yet in this backend")

    def _do_mesh(self, req: P.MeshRequest, out_dir, progress, cancel) -> P.MeshResult:
        try:
            from ide3d_core.mesh import GridConfig, MeshConfig, extract_head_mesh
            from ide3d_core.mesh.generator_field import GeneratorField
        except ImportError as exc:
            raise NotAvailable(f"head mesh extraction (ide3d_core.mesh) is not available yet in this backend: {exc}") from None
        if not 8 <= req.resolution <= 1024:
            raise BadRequest(f"mesh resolution must be in 8..1024, got {req.resolution}")
        ws = self._load_ws(req.ws_file)
        config = MeshConfig(grid=GridConfig(resolution=int(req.resolution)))
        try:
            mesh = extract_head_mesh(GeneratorField(self.generator(), ws), config, progress=progress,
                                     cancel=cancel).mesh
        except ValueError as exc:  # e.g. the density never reaches the surface level
            raise BadRequest(f"no head surface could be extracted (an untrained model?): {exc}") from None
        if mesh.num_faces == 0:
            raise BadRequest("no head surface could be extracted (an untrained model?): empty mesh")
        arrays = {"vertices": mesh.vertices.astype(np.float32), "faces": mesh.faces.astype(np.int32)}
        if mesh.colors is not None:
            arrays["colors"] = mesh.colors.astype(np.float32)
        if mesh.labels is not None:
            arrays["labels"] = mesh.labels.astype(np.uint8)
        path = out_dir / "mesh.npz"
        np.savez(path, **arrays)
        return P.MeshResult(mesh_file=str(path), num_vertices=int(mesh.num_vertices), num_faces=int(mesh.num_faces))

    def _do_save_document(self, req, out_dir, progress, cancel):
        raise NotAvailable("portrait documents (.ide3d) are not available yet in this backend")

    def _do_open_document(self, req, out_dir, progress, cancel):
        raise NotAvailable("portrait documents (.ide3d) are not available yet in this backend")

    def _do_sleep(self, req: P.SleepRequest, out_dir, progress, cancel) -> P.SleepResult:
        steps = max(1, int(req.steps))
        for i in range(steps):
            report(progress, i, steps, f"step {i + 1}/{steps}", cancel)
            if req.exit_code >= 0 and i == steps // 2:
                import os

                os._exit(int(req.exit_code))
            time.sleep(max(0.0, req.seconds) / steps)
        report(progress, steps, steps, "done", cancel)
        return P.SleepResult(steps_done=steps)


def run_request(backend: Backend, message: P.RequestMessage, emit: Callable[[Any], None],
                cancel: CancelToken | None = None) -> P.ResponseMessage:
    """Run one request; ``emit`` receives its progress messages and then its response (also returned).

    Every exception becomes an error value: ``cancelled``, ``not_available``, ``bad_request`` (also
    for model problems, which the user fixes in the preferences) or ``backend_error`` with the
    traceback."""
    rid, kind = message.id, message.request.KIND

    def progress(done: int, total: int, text: str = "") -> None:
        emit(P.ProgressMessage(id=rid, done=int(done), total=int(total), message=str(text)))

    try:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        result = backend.handle(message.request, Path(message.out_dir), progress, cancel)
        response = P.ResponseMessage(id=rid, kind=kind, result=result)
    except Cancelled:
        response = P.error_response(rid, kind, "cancelled", f"{kind} was cancelled")
    except NotAvailable as exc:
        response = P.error_response(rid, kind, "not_available", str(exc))
    except (BadRequest, ModelError) as exc:
        response = P.error_response(rid, kind, "bad_request", str(exc))
    except Exception as exc:  # noqa: BLE001 - the worker must survive any handler failure
        first = str(exc).splitlines()[0] if str(exc) else ""
        response = P.error_response(rid, kind, "backend_error", f"{kind} failed: {type(exc).__name__}: {first}",
                                    traceback.format_exc())
    emit(response)
    return response

