# SPDX-License-Identifier: GPL-3.0-or-later
"""The service called synchronously inside the caller's process (tests and ``blender -b`` scripts).

Messages still go through :func:`~ide3d_core.service.protocol.encode`/``decode``, so in-process mode
exercises exactly the contract the worker process serves.
"""
from __future__ import annotations

from typing import Callable

from ide3d_core.progress import CancelToken
from ide3d_core.service import protocol as P
from ide3d_core.service.handlers import Backend, run_request


class InProcessService:
    """Runs request lines one at a time and returns the reply lines.

    Args:
        model, device: as :class:`~ide3d_core.service.handlers.Backend`.
    """

    def __init__(self, model: str = "", device: str = "auto") -> None:
        self.backend = Backend(model=model, device=device)

    def call(self, request_line: str, on_line: Callable[[str], None] | None = None,
             cancel: CancelToken | None = None) -> list[str]:
        """Handle one encoded :class:`~ide3d_core.service.protocol.RequestMessage`.

        Returns the encoded progress and response lines, in order; ``on_line`` also receives each one
        as it is produced."""
        message = P.decode(request_line)
        if not isinstance(message, P.RequestMessage):
            raise P.ProtocolError(f"expected a request, got {type(message).__name__}")
        lines: list[str] = []

        def emit(msg) -> None:
            line = P.encode(msg)
            lines.append(line)
            if on_line is not None:
                on_line(line)

        run_request(self.backend, message, emit, cancel)
        return lines
