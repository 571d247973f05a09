# SPDX-License-Identifier: GPL-3.0-or-later
"""Job submission: the shape every backend operator shares (build requests, submit them, apply results),
and the request inputs it writes. Naming the portrait in a request is :mod:`.documents`.

An operator mixing in :class:`BackendOperator` implements :meth:`BackendOperator.plan`, returning
``(request, apply)`` pairs; ``apply(scene, result) -> str`` changes Blender data. Then:

* ``execute`` (scripts, ``blender -b``, tests) submits and waits, polling on the main thread;
* ``invoke`` (the UI) runs modally: a window timer polls the backend, the progress bar and header show
  the backend's progress messages, **Esc** cancels. Results are applied from ``poll`` on the main
  thread in both cases. Backend errors come back as values and are shown with ``self.report``.

State lives on the operator *instance* for the duration of one run, never on the class.
"""
import os
import uuid

from . import conversions, runtime
from ._shared import protocol as P
from .errors import UserError

#: Coalesce key of mask edits (Apply Mask Edit and Live Edit): a newer edit supersedes an unfinished one.
MASK_EDIT_KEY = "mask_edit"


def input_path(client, stem: str, ext: str) -> str:
    """A fresh path in the backend client's scratch folder for an input file of a request."""
    folder = client.workdir / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{stem}-{uuid.uuid4().hex[:10]}{ext}")


def view_request(camera_obj, scene, ref: dict, quality: str = "full"):
    """The RenderRequest of ``scene``'s portrait (``ref``: :func:`.documents.scene_portrait_ref`) seen through a
    Blender camera object at the scene's current frame and render size, at ``quality`` ("full" or
    "preview", :class:`~ide3d_core.service.protocol.RenderRequest`)."""
    label, w, h = conversions.camera_label(camera_obj, scene)
    return P.RenderRequest(label=tuple(float(x) for x in label), width=w, height=h, quality=quality,
                           photo=bool(scene.ide3d.show_photo), **ref)


def write_labels(client, ids) -> str:
    path = input_path(client, "labels", ".png")
    conversions.write_label_png(path, ids)
    return path


class BackendOperator:
    """Mixin for ``bpy.types.Operator`` subclasses that talk to the backend."""

    #: Jobs of operators with the same key coalesce: a new run supersedes unfinished ones.
    coalesce_key = None

    def plan(self, context, client) -> list:
        raise NotImplementedError

    # -- running ---------------------------------------------------------------------------------
    def _start(self, context) -> bool:
        self._jobs, self._messages, self._errors = [], [], []
        try:
            client = runtime.client(context)
            plan = self.plan(context, client)
        except (UserError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return False
        scene_name = context.scene.name
        for request, apply in plan:
            self._jobs.append(client.submit(request, self.coalesce_key, self._on_done(scene_name, apply)))
        self._client = client
        return True

    def _on_done(self, scene_name: str, apply):
        import bpy

        def done(job) -> None:
            try:
                if job.ok:
                    scene = bpy.data.scenes.get(scene_name)
                    if scene is None:
                        raise UserError(f"scene {scene_name!r} is gone")
                    self._messages.append(apply(scene, job.result))
                elif job.error.kind != "cancelled":
                    self._errors.append(job.error_text())
            except Exception as exc:  # noqa: BLE001 - a failed apply is reported, never raised into Blender
                self._errors.append(f"could not apply the {job.kind} result: {exc}")
            finally:
                job.cleanup()
        return done

    def _finish(self, context) -> set:
        cancelled = any(j.state == "superseded" or (j.error is not None and j.error.kind == "cancelled")
                        for j in self._jobs)
        state = context.scene.ide3d
        if self._errors:
            state.status = self._errors[0]
            self.report({"ERROR"}, self._errors[0])
            return {"CANCELLED"}
        if cancelled:
            state.status = f"{self.bl_label}: cancelled"
            self.report({"WARNING"}, state.status)
            return {"CANCELLED"}
        state.status = self._messages[-1] if self._messages else f"{self.bl_label}: done"
        self.report({"INFO"}, state.status)
        return {"FINISHED"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        for job in self._jobs:
            self._client.wait(job)
        return self._finish(context)

    def invoke(self, context, event):
        if context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        runtime.keep_polling()  # results still land if this modal run is interrupted (e.g. a file load)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1000)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            for job in self._jobs:
                self._client.cancel(job)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        runtime.poll()
        done = sum(1 for j in self._jobs if j.finished)
        current = next((j for j in self._jobs if not j.finished), None)
        fraction = (done + (current.fraction if current else 0.0)) / max(1, len(self._jobs))
        context.window_manager.progress_update(int(1000 * fraction))
        if context.area is not None:
            text = current.message if current and current.message else "working"
            context.area.header_text_set(f"{self.bl_label}: {text} ({100 * fraction:.0f} %), Esc to cancel")
        if current is not None:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        if context.area is not None:
            context.area.header_text_set(None)
        return self._finish(context)


def frame_path(scene, frame: int) -> str:
    """Output PNG path of ``frame`` from the scene's output settings."""
    path = scene.render.frame_path(frame=frame)
    root, _ = os.path.splitext(path)
    return root + ".png"
