# SPDX-License-Identifier: GPL-3.0-or-later
"""One way to do each thing: the operations both the command line and the worker service call.

Each operation takes already-loaded resources (a generator, encoders, a portrait) plus plain options,
validates the options against :mod:`.limits`, runs the core procedures with a progress callback and a
cancel token, and returns a value. Bad input raises :class:`OperationError` (one line), which the
command line turns into ``UserError`` and the service into a ``bad_request`` value; nothing here prints,
parses arguments or knows about messages.

=====================  ==========================================  =====================================
operation              module                                       used by
=====================  ==========================================  =====================================
invert photos          :func:`.invert.invert_photos`                ``ide3d invert``, service ``invert``
render a view          :func:`.render.render_view`                  ``ide3d render``, service ``render``
write a view's files   :func:`.render.write_view`                   ``ide3d render``, service
build a head mesh      :func:`.mesh.build_mesh`                     ``ide3d mesh``, service ``mesh`` and
                                                                    ``export_mesh`` (the add-on's Export)
write a head mesh      :func:`.mesh.write_mesh`                     ``ide3d mesh``, service ``export_mesh``
=====================  ==========================================  =====================================

Editing (mask edit, restyle, global style, undo/redo) is :mod:`ide3d_core.editing` itself: both callers
already go through it. Submodules import torch; this package's ``__init__`` imports only the
standard-library modules :mod:`.errors` and :mod:`.limits`, so lower layers (``ide3d_core.mesh``) may read
the limits without a cycle.
"""
from ide3d_core.operations.errors import OperationError
from ide3d_core.operations import limits

__all__ = ["OperationError", "limits"]
