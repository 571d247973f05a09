# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend service the Blender add-on talks to.

* :mod:`.protocol`  typed, versioned JSON-line messages (standard library only; the add-on ships a copy).
* :mod:`.handlers`  requests -> backend functions (:class:`~.handlers.Backend`), errors as values.
* :mod:`.worker`    ``python -m ide3d_core.service.worker``: the process the add-on starts and owns.
* :mod:`.inprocess` the same service called synchronously in the caller's process (tests, ``blender -b``).
"""
