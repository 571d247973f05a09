# SPDX-License-Identifier: GPL-3.0-or-later
"""The exception of the operations layer (standard library only)."""
from __future__ import annotations


class OperationError(ValueError):
    """Input an operation cannot use (out-of-range option, unreadable file, a model without the part the
    operation needs); ``str(exc)`` is one line for the user. The command line prints it as a ``UserError``,
    the service answers it as ``bad_request``."""
