# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's own exception (imports nothing, so every module may use it)."""


class UserError(Exception):
    """Something the user must fix first (no portrait yet, no camera...); reported as one line."""
