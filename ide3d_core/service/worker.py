# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m ide3d_core.service.worker``: the backend process the Blender add-on starts and owns.

It speaks :mod:`ide3d_core.service.protocol` over stdin/stdout. stdout carries protocol lines only:
anything else that prints (libraries, warnings) is redirected to stderr, which the client writes to a
log file. A reader thread receives requests and cancel messages while the main thread runs one
request at a time, so a cancel reaches a running request at its next progress step and a queued
request that was cancelled (for example a superseded live mask edit) is answered without running.

The process exits when stdin closes (the add-on quit or died) or on a shutdown message. It never goes
silent: the reader survives any bytes (non-UTF-8, over-long lines, deep nesting, ids of the wrong
type), and every line it rejects that carries a request id is answered with a ``bad_request`` error
of that id (for example a request of a newer add-on with an unknown field or protocol version).
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from typing import Iterator  # noqa: F401 (annotations)

from ide3d_core.progress import CancelToken
from ide3d_core.service import protocol as P
from ide3d_core.service.handlers import Backend, run_request


class _Writer:
    """Thread-safe writer of protocol lines to the original stdout."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, message) -> None:
        line = P.encode(message) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _lines(stdin) -> "Iterator[tuple[str, str | None]]":
    """``(line, problem)`` for each line of ``stdin``: ``problem`` is None for a usable text line, else
    why it cannot be used (not UTF-8, longer than ``P.MAX_LINE_CHARS``: its remainder is skipped), and
    ``line`` is then its first 4096 characters, enough to find a request id. No input stops this.
    Reads the binary buffer when there is one (the process's stdin), else the text stream (tests)."""
    raw = getattr(stdin, "buffer", None)
    read = raw.readline if raw is not None else stdin.readline
    newline = b"\n" if raw is not None else "\n"
    limit = P.MAX_LINE_CHARS + 1
    while True:
        line = read(limit)
        if not line:
            return
        problem = None
        if len(line) >= limit and not line.endswith(newline):
            while True:  # skip the rest of an over-long line
                rest = read(limit)
                if not rest or rest.endswith(newline):
                    break
            problem = f"a line over the {P.MAX_LINE_CHARS}-character limit"
        if raw is not None:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line[:4096].decode("utf-8", errors="replace")
                problem = problem or "a line that is not UTF-8 text"
        else:
            text = line
        yield (text[:4096] if problem else text), problem


def _reject(emit, line: str, reason: str) -> None:
    """Answer a line :func:`P.decode` refused: an error response when it carries a request id."""
    info = P.peek(line)
    print(f"[worker] rejected a line: {reason}", file=sys.stderr, flush=True)
    if info["id"] is not None and info["type"] in ("request", None):
        emit(P.error_response(info["id"], info["kind"] or "", "bad_request",
                              f"the backend rejected the request: {reason}"))


def _read_stdin(stdin, jobs: "queue.Queue", tokens: dict[int, CancelToken], lock: threading.Lock,
                emit=None) -> None:
    """Receive messages until stdin closes or a shutdown arrives; never dies on bad input (a line
    it cannot use is answered by :func:`_reject`). Puts None into ``jobs`` when it ends, however it
    ends, so the worker exits rather than waits forever."""
    try:
        for line, problem in _lines(stdin):
            try:
                if problem is not None:
                    raise P.ProtocolError(problem)
                line = line.strip()
                if not line:
                    continue
                msg = P.decode(line)
            except P.ProtocolError as exc:
                if emit is not None:
                    _reject(emit, line, str(exc))
                else:
                    print(f"[worker] ignoring a bad line: {exc}", file=sys.stderr, flush=True)
                continue
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not kill the reader
                if emit is not None:
                    _reject(emit, line, f"{type(exc).__name__}: {exc}"[:200])
                continue
            if isinstance(msg, P.RequestMessage):
                with lock:
                    duplicate = msg.id in tokens
                    if not duplicate:
                        tokens[msg.id] = CancelToken()
                if duplicate:  # answering it would also answer the running request of that id
                    print(f"[worker] ignoring request {msg.id}: its id is already in use", file=sys.stderr, flush=True)
                    continue
                jobs.put(msg)
            elif isinstance(msg, P.CancelMessage):
                with lock:
                    token = tokens.get(msg.id)
                if token is not None:
                    token.cancel()
            elif isinstance(msg, P.ShutdownMessage):
                break
    finally:
        jobs.put(None)


def serve(backend: Backend, stdin, stdout) -> int:
    """Serve requests from ``stdin`` until it closes or a shutdown message arrives."""
    emit = _Writer(stdout)
    emit(P.HelloMessage(protocol=P.PROTOCOL_VERSION, pid=os.getpid(), python=sys.executable))
    jobs: queue.Queue = queue.Queue()
    tokens: dict[int, CancelToken] = {}
    lock = threading.Lock()
    reader = threading.Thread(target=_read_stdin, args=(stdin, jobs, tokens, lock, emit), daemon=True)
    reader.start()
    while True:
        msg = jobs.get()
        if msg is None:
            return 0
        with lock:
            token = tokens[msg.id]
        try:
            run_request(backend, msg, emit, token)
        finally:
            with lock:
                tokens.pop(msg.id, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ide3d_core.service.worker", description=__doc__)
    parser.add_argument("--model", default="", help="model folder, config:NAME, or empty for the bundled model")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    # Keep the protocol stream clean: fd 1 becomes stderr for everything but our own writer.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(Backend(model=args.model, device=args.device), sys.stdin, proto)


if __name__ == "__main__":
    sys.exit(main())
