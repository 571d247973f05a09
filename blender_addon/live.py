# SPDX-License-Identifier: GPL-3.0-or-later
"""Live mask editing: while "Live Edit" is on, painted strokes reach the canonical editor as they land.

A timer (every :data:`INTERVAL` seconds, only while some scene has ``live_edit`` on) reads the
canonical mask image, decodes it to label ids (palette snapping without writing the image back, so a
stroke in progress is never rewritten under the brush) and, when the ids differ from the last ones sent,
submits a *live* mask edit with Apply Mask Edit's coalesce key (``jobs.MASK_EDIT_KEY``): a newer stroke supersedes an
unfinished edit (latest request wins; the client drops stale results). The backend replaces the
session's own history record instead of stacking one per stroke, so one Undo returns to the state
before painting started. Strokes are sent at ``quality="preview"`` (the canonical view and the camera
views re-render with cheaper rays); the first tick that finds the mask unchanged sends the same edit at
full quality, so the views refine as soon as painting pauses.

A result updates the portrait (document, codes, canonical preview) but never the mask being painted.
An error (e.g. a model without a canonical editor) is shown in the status line and switches Live Edit
off, so a failing backend is not asked again on every stroke. In background mode there are no timers;
scripts and tests call :func:`tick` themselves.
"""
import hashlib

import bpy

from . import apply, conversions, documents, jobs, runtime
from ._shared import labels, protocol as P
from .errors import UserError
from .properties import IMAGE_NAMES

#: Seconds between two looks at the mask while Live Edit is on.
INTERVAL = 0.25
#: ``live_fingerprint`` = mask fingerprint + this while the last send was a preview: the next tick that
#: finds the mask unchanged (painting paused) sends the same edit at full quality.
PREVIEW_SUFFIX = "+preview"


def mask_ids():
    """(H, W) uint8 label ids of the canonical mask image (decoded, the image left as painted), or None."""
    img = bpy.data.images.get(IMAGE_NAMES["mask"])
    if img is None:
        return None
    return labels.decode_colors(conversions.array_from_image(img)[..., :3])


def fingerprint(ids) -> str:
    return "" if ids is None else hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()


def start(scene) -> None:
    """Live Edit switched on (:class:`IDE3D_OT_live_edit`): remember the mask as it is now (nothing is sent
    until it changes) and start the timer."""
    scene.ide3d.live_fingerprint = fingerprint(mask_ids())
    if not bpy.app.background and not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=INTERVAL)


def tick(context=None) -> list:
    """Send the mask of every live scene whose mask changed since the last send; returns the jobs."""
    context = context or bpy.context
    live = [s for s in bpy.data.scenes if s.ide3d.live_edit and s.ide3d.has_portrait]
    ids = mask_ids() if live else None  # one mask image for the file: decoded once per tick
    if ids is None:
        return []
    fp = fingerprint(ids)
    sent = []
    for scene in live:
        state = scene.ide3d
        if fp == state.live_fingerprint:
            continue  # unchanged since a full-quality edit
        idle = state.live_fingerprint == fp + PREVIEW_SUFFIX  # unchanged since a preview: refine
        quality = "full" if idle else "preview"
        state.live_fingerprint = fp if idle else fp + PREVIEW_SUFFIX
        try:
            client = runtime.client(context)
            ref = documents.scene_portrait_ref(scene)
            req = P.MaskEditRequest(labels_file=jobs.write_labels(client, ids), mode=state.mask_mode.lower(),
                                    live=True, quality=quality, **ref)
        except (UserError, ValueError, OSError) as exc:
            _stop(scene, str(exc))
            continue
        sent.append(client.submit(req, jobs.MASK_EDIT_KEY, _on_done(scene.name, quality)))
    if sent:
        runtime.keep_polling()
    return sent


def _on_done(scene_name: str, quality: str = "full"):
    def done(job) -> None:
        scene = bpy.data.scenes.get(scene_name)
        try:
            if scene is None:
                return
            if job.ok:
                scene.ide3d.status = "live: " + apply.portrait(scene, job.result, refresh_mask=False,
                                                               quality=quality)
            elif job.error.kind != "cancelled":
                _stop(scene, job.error_text())
        except Exception as exc:  # noqa: BLE001 - never raise into Blender's timer
            _stop(scene, f"could not apply the live edit: {exc}")
        finally:
            job.cleanup()
    return done


def _stop(scene, message: str) -> None:
    scene.ide3d.status = f"Live Edit stopped: {message}"
    scene.ide3d.live_edit = False


def _timer():
    try:
        tick()
    except Exception as exc:  # noqa: BLE001 - a timer that raises is unregistered silently by Blender
        print(f"IDE-3D live edit: {exc}")
    return INTERVAL if any(s.ide3d.live_edit for s in bpy.data.scenes) else None


class IDE3D_OT_live_edit(bpy.types.Operator):
    """Switch Live Edit on or off: while on, painted strokes reach the canonical editor as they land"""
    bl_idname = "ide3d.live_edit"
    bl_label = "Live Edit"

    def execute(self, context):
        state = context.scene.ide3d
        if not state.live_edit and not state.has_portrait:
            self.report({"ERROR"}, "no portrait yet: make one with New Portrait first")
            return {"CANCELLED"}
        state.live_edit = not state.live_edit
        if state.live_edit:
            start(context.scene)
        state.status = f"Live Edit {'on' if state.live_edit else 'off'}"
        return {"FINISHED"}


def register():
    bpy.utils.register_class(IDE3D_OT_live_edit)


def unregister():
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    bpy.utils.unregister_class(IDE3D_OT_live_edit)
