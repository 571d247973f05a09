# SPDX-License-Identifier: GPL-3.0-or-later
"""IDE-3D Portrait Studio: the neural backend (cameras, labels, networks, renderer, editing, mesh)."""

__version__ = "0.1.0"
