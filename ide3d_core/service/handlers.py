# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests of :mod:`ide3d_core.service.protocol` mapped onto backend functions.

:class:`Backend` owns the loaded generator (one model, one device, chosen when the worker starts) and
answers one request at a time; :func:`run_request` wraps a call into progress and response messages,
turning every failure into an error *value*. The worker process and the in-process mode both use it.

Requests on portraits (new, open, invert, render, edits, undo/redo, mesh) live in
:mod:`.portrait_handlers`, on the session of :mod:`.session`. Features whose backend modules are not in
this build answer ``not_available`` with a one-line reason. torch is imported lazily, so importing this
module is cheap.
"""
from __future__ import annotations

import importlib
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ide3d_core import model_loading
from ide3d_core.progress import Cancelled, CancelToken, ProgressFn, report
from ide3d_core.operations import OperationError
from ide3d_core.service import protocol as P
from ide3d_core.service.errors import BadRequest, ModelError, NotAvailable
from ide3d_core.service.portrait_handlers import PortraitHandlers
from ide3d_core.service.session import PortraitSession


def _networks():
    try:
        networks = importlib.import_module("ide3d_core.networks")
    except ImportError as exc:
        raise NotAvailable(f"the generator (ide3d_core.networks) is not available yet in this backend: {exc}") from None
    return networks


class Backend(PortraitHandlers):
    """The service's state: the model spec, the device, the lazily loaded generator and encoders, and
    the portrait session.

    Args:
        model: ``""`` for the bundled model, ``"config:NAME"`` for a randomly initialised generator of
            ``CONFIGS[NAME]`` (tests, demos), else a folder written by ``save_generator``.
        device: ``"auto"`` (CUDA when available), ``"cuda"``, ``"mps"`` (Apple GPU) or ``"cpu"``.
    """

    def __init__(self, model: str = "", device: str = "auto") -> None:
        if device not in ("auto", "cuda", "mps", "cpu"):
            raise ValueError(f"device must be auto, cuda, mps or cpu, got {device!r}")
        self.model_spec = model
        self.device_name = device
        self._generator: Any = None
        self._fingerprint: str | None = None
        self._encoders: dict[str, Any] = {}
        self.session = PortraitSession()

    # -- resources -----------------------------------------------------------------------------
    def device(self):
        try:
            return model_loading.resolve_device(self.device_name)
        except model_loading.ModelError as exc:
            raise BadRequest(str(exc)) from None

    def model_description(self) -> str:
        return model_loading.describe(self.model_spec)

    def generator(self):
        if self._generator is None:
            _networks()  # NotAvailable when this build has no generator
            self._generator = model_loading.load_base_generator(self.model_spec, self.device())
        return self._generator

    def model_folder(self) -> Path | None:
        """The model's folder (None for ``config:NAME`` generators)."""
        return model_loading.model_folder(self.model_spec)

    def fingerprint(self) -> str:
        """:func:`ide3d_core.portrait.generator_fingerprint` of the base model (computed once)."""
        if self._fingerprint is None:
            from ide3d_core.portrait import generator_fingerprint

            self._fingerprint = generator_fingerprint(self.generator())
        return self._fingerprint

    def face_parser(self):
        """The model's face parser (``<model>/segnet``) as a photo-pipeline parser (``(S, S, 3) uint8 ->
        (S, S) ids``, :func:`ide3d_core.segnet.array_parser`), or None: the mask source ``ide3d invert``
        uses for the same model."""
        if "segnet" not in self._encoders:
            net = model_loading.load_model_segnet(self.model_spec, self.device())
            if net is not None:
                from ide3d_core.segnet import array_parser

                net = array_parser(net)
            self._encoders["segnet"] = net
        return self._encoders["segnet"]

    def encoder(self, which: str):
        """The ``which`` ("standard" | "canonical") encoder of the model (``<model>/encoders/<which>``,
        written by ``ide3d train-encoders``), or None when the model has none."""
        if which not in self._encoders:
            self._encoders[which] = model_loading.load_model_encoder(self.model_spec, which, self.device())
        return self._encoders[which]

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
    except (BadRequest, ModelError, OperationError) as exc:
        response = P.error_response(rid, kind, "bad_request", str(exc))
    except Exception as exc:  # noqa: BLE001 - the worker must survive any handler failure
        first = str(exc).splitlines()[0] if str(exc) else ""
        response = P.error_response(rid, kind, "backend_error", f"{kind} failed: {type(exc).__name__}: {first}",
                                    traceback.format_exc())
    emit(response)
    return response

