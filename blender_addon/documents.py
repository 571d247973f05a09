# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait document, as the scene keeps it and as requests name it: document I/O only.

The portrait itself is its ``.ide3d`` document (codes, edit history, restyle, tuned weights): its bytes
are the scene's ID property ``scene["ide3d_document"]`` (:data:`DOCUMENT_KEY`), so the .blend alone
restores it (bpy 4.5 cuts bytes at the first NUL when they *replace* an existing ID property's value,
so the property is deleted and created anew each time); ``portrait_id`` and ``revision`` name it in
backend requests. A copy lives as a file in the extension's user folder (``document_path``,
:func:`document_file`), rewritten from the bytes whenever it is missing (a reopened .blend, another
machine), and the worker loads it when its session does not hold that revision (a restarted worker).

Job submission is :mod:`.jobs`; the scene's other state is :mod:`.properties`.
"""
import os

from . import runtime
from ._shared import atomic_file
from .errors import UserError

#: The scene ID property holding the portrait document's bytes.
DOCUMENT_KEY = "ide3d_document"


def set_document(scene, document: bytes, portrait_id: str, revision: str, history, current: int) -> None:
    """Store a portrait document's bytes and identity on the scene."""
    state = scene.ide3d
    if DOCUMENT_KEY in scene:
        del scene[DOCUMENT_KEY]  # replacing the value in place would cut it at the first NUL byte
    scene[DOCUMENT_KEY] = bytes(document)
    state.portrait_id, state.revision = portrait_id, revision
    state.history, state.history_current = ",".join(history), int(current)


def get_document(scene) -> bytes | None:
    state = scene.ide3d
    if not state.has_portrait or DOCUMENT_KEY not in scene or not state.portrait_id:
        return None
    return bytes(scene[DOCUMENT_KEY])


def history(scene) -> tuple[list[str], int]:
    """(kinds of the edit records, cursor) of the scene's portrait."""
    state = scene.ide3d
    return [k for k in state.history.split(",") if k], int(state.history_current)


def document_file(scene, folder: str) -> str | None:
    """The path of the scene portrait's document in ``folder``, written there from the bytes in the
    .blend when it is missing; None without a portrait. Sets ``document_path``."""
    data = get_document(scene)
    if data is None:
        return None
    state = scene.ide3d
    path = os.path.join(folder, f"{state.portrait_id}-{state.revision}.ide3d")
    if not os.path.isfile(path) or os.path.getsize(path) != len(data):
        atomic_file.write_atomic(path, data)
    if state.document_path != path:
        state.document_path = path
    return path


def prune_documents(folder: str, portrait_id: str, keep: int = 8) -> list[str]:
    """Delete all but the ``keep`` newest document files of ``portrait_id`` in ``folder``; returns the
    deleted paths. Older revisions are kept a while because requests already queued may name them;
    any revision the .blend (or Blender's undo) brings back is rewritten from its bytes."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(portrait_id + "-") and n.endswith(".ide3d")]
    except OSError:
        return []
    paths = sorted((os.path.join(folder, n) for n in names), key=os.path.getmtime, reverse=True)
    removed = []
    for path in paths[keep:]:
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def portrait_ref(context) -> dict:
    """The fields naming the context scene's portrait in a request: see :func:`scene_portrait_ref`."""
    return scene_portrait_ref(context.scene)


def scene_portrait_ref(scene) -> dict:
    """The fields naming ``scene``'s portrait in a request (``protocol.PORTRAIT_REF_FIELDS``): its id,
    revision and document file (rewritten from the .blend when missing); UserError without a portrait."""
    path = document_file(scene, runtime.documents_folder())
    if path is None:
        raise UserError("no portrait yet: make one with New Portrait first")
    state = scene.ide3d
    return dict(portrait_id=state.portrait_id, revision=state.revision, document_file=path)
