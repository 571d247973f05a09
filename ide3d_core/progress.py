# SPDX-License-Identifier: GPL-3.0-or-later
"""Progress reporting and cancellation shared by every long procedure.

A procedure takes ``progress`` (a callable ``(done, total, message) -> None`` or None) and ``cancel``
(a :class:`CancelToken` or None) and calls :func:`check` between steps. Nothing here is global: each
caller owns its token.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

ProgressFn = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised inside a procedure when its cancel token was set."""


class CancelToken:
    """A thread-safe flag a caller sets to ask a running procedure to stop at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


def report(progress: Optional[ProgressFn], done: int, total: int, message: str = "",
           cancel: Optional[CancelToken] = None) -> None:
    """Call the progress callback (if any), then raise :class:`Cancelled` if asked to stop."""
    if progress is not None:
        progress(done, total, message)
    if cancel is not None:
        cancel.raise_if_cancelled()


class TqdmProgress:
    """A progress callback drawing a tqdm bar (for the command line). Use as a context manager."""

    def __init__(self, desc: str, disable: bool = False) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, desc=desc, disable=disable, dynamic_ncols=True)

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
