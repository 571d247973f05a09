# SPDX-License-Identifier: GPL-3.0-or-later
"""The project's conventions and message protocol, as the add-on sees them.

An installed extension carries verbatim copies of ``ide3d_core/cameras.py`` (with its sibling
``camera_blender.py``, whose names it re-exports), ``ide3d_core/labels.py``,
``ide3d_core/service/protocol.py`` (with its sibling ``protocol_requests.py``) and
``ide3d_core/atomic_file.py`` in ``_vendor/`` (written by ``ide3d addon build``); running from the
repository, the originals are used. Nothing in the add-on re-derives a flip, a palette or a message
layout: it imports them from here.
"""
try:
    from ._vendor import atomic_file, cameras, labels, protocol  # noqa: F401
except ImportError:  # running from the repository
    from ide3d_core import atomic_file, cameras, labels  # noqa: F401
    from ide3d_core.service import protocol  # noqa: F401
