# SPDX-License-Identifier: GPL-3.0-or-later
"""Exceptions of the backend service; :func:`ide3d_core.service.handlers.run_request` turns each into an
error value of its own kind (``not_available``, ``bad_request``)."""
from ide3d_core.model_loading import ModelError  # noqa: F401 (re-export: the model could not be found or loaded)


class NotAvailable(Exception):
    """The feature is not part of this backend build yet."""


class BadRequest(Exception):
    """The request itself is wrong (bad file, wrong shape, bad value, no trained editor)."""

