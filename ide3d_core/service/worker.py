# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m ide3d_core.service.worker``: the backend process the Blender add-on starts and owns.

It speaks :mod:`ide3d_core.service.protocol` over stdin/stdout. stdout carries protocol lines only:
anything else that prints (libraries, warnings) is redirected to stderr, which the client writes to a
log file. A reader thread receives requests and cancel messages while the main thread runs one
request at a time, so a cancel reaches a running request at its next progress step and a queued
request that was cancelled (for example a superseded live mask edit) is answered without running.

The process exits when stdin closes (the add-on quit or died) or on a shutdown message.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading

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


def _read_stdin(stdin, jobs: "queue.Queue", tokens: dict[int, CancelToken], lock: threading.Lock) -> None:
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = P.decode(line)
        except P.ProtocolError as exc:
            print(f"[worker] ignoring a bad line: {exc}", file=sys.stderr, flush=True)
            continue
        if isinstance(msg, P.RequestMessage):
            with lock:
                tokens[msg.id] = CancelToken()
            jobs.put(msg)
        elif isinstance(msg, P.CancelMessage):
            with lock:
                token = tokens.get(msg.id)
            if token is not None:
                token.cancel()
        elif isinstance(msg, P.ShutdownMessage):
            break
    jobs.put(None)


def serve(backend: Backend, stdin, stdout) -> int:
    """Serve requests from ``stdin`` until it closes or a shutdown message arrives."""
    emit = _Writer(stdout)
    emit(P.HelloMessage(protocol=P.PROTOCOL_VERSION, pid=os.getpid(), python=sys.executable))
    jobs: queue.Queue = queue.Queue()
    tokens: dict[int, CancelToken] = {}
    lock = threading.Lock()
    reader = threading.Thread(target=_read_stdin, args=(stdin, jobs, tokens, lock), daemon=True)
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
