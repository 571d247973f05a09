# SPDX-License-Identifier: GPL-3.0-or-later
"""Flush-to-zero for the duration of a block: ``with flush_denormals(): ...``.

On x86 CPUs an operation on a denormal float (magnitude below 1.2e-38) takes a microcode assist of about
a hundred cycles. The fast renderer meets many: the bundled decoders' class logits span hundreds of
units, so softmax terms and the products of compositing weights with tiny probabilities underflow into
that range (measured: about 7 % of a 256 px fast frame on one core). Inside the block the calling
thread treats denormal inputs as zero and flushes denormal results to zero
(``torch.set_flush_denormal``); only values below 1.2e-38 change.

*Decision:* scoped and restored, never left on: a process-wide switch is hidden global state (see
``ops/_native.py`` on ``-ffast-math``). The state before the block is read by a probe (``1e-39 * 0.5``
is zero only when flushing), so a caller who had it on keeps it on. Only the calling thread is
switched (torch's intra-op worker threads keep their state): with one thread, the whole computation.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def flushing() -> bool:
    """Whether the calling thread flushes denormals now (a float32 probe)."""
    return bool((torch.full((1,), 1e-39, dtype=torch.float32) * 0.5)[0] == 0)


@contextmanager
def flush_denormals(enabled: bool = True):
    """Flush denormals to zero in the calling thread inside the block; the previous state after it."""
    changed = False
    if enabled and not flushing():
        changed = bool(torch.set_flush_denormal(True))
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)
