# SPDX-License-Identifier: GPL-3.0-or-later
"""Keep MediaPipe's native log noise off the user's terminal.

MediaPipe (with its TensorFlow Lite and glog/absl logging) writes from C++ straight to file
descriptor 2, bypassing ``sys.stderr``: on import an ``AttributeError: 'MessageFactory' object has no
attribute 'GetPrototype'`` (a harmless protobuf version probe), then ``INFO: Created TensorFlow Lite
XNNPACK delegate``, ``WARNING: All log messages before absl::InitializeLog()`` and ``W0000 ...
inference_feedback_manager`` lines on the first inference. :func:`native_quiet` sets the libraries'
log-level variables (when the user has not) and points fd 2 at a temporary file for the duration of a
block; if the block raises, what was captured is written back to stderr, so real failures stay visible.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

#: Log-level variables of glog / absl / TensorFlow: errors only.
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "2"}
_LOCK = threading.Lock()


@contextmanager
def native_quiet() -> Iterator[None]:
    """Silence native writes to fd 2 inside the block (see the module docstring). Nesting is fine;
    set ``IDE3D_NATIVE_LOGS=1`` to see everything."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("IDE3D_NATIVE_LOGS") == "1" or not _LOCK.acquire(blocking=False):
        yield  # verbose on request; an enclosing block already redirects
        return
    try:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            failed = False
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                if failed:
                    sink.seek(0)
                    text = sink.read()[-8192:].decode("utf-8", errors="replace")
                    if text.strip():
                        sys.stderr.write(text)
    finally:
        _LOCK.release()
