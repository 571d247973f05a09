# SPDX-License-Identifier: GPL-3.0-or-later
"""Backend results -> Blender data. Called only on the main thread, from a job's ``on_done``.

Each function takes the scene and a result dataclass of the protocol and returns a one-line summary.
"""
import shutil

import bpy
import numpy as np

from . import conversions, documents, properties, runtime
from ._shared import labels
from .properties import IMAGE_NAMES, MESH_NAME


def portrait(scene, result, refresh_mask: bool = True, quality: str = "full") -> str:
    """Store the portrait's document and codes on the scene, keep its document file in the user folder,
    refresh the canonical preview and (unless ``refresh_mask`` is False: live painting) the mask image,
    and re-render the camera views already shown (:func:`refresh_views`, at ``quality``)."""
    with open(result.document_file, "rb") as f:
        document = f.read()
    properties.set_ws(scene, np.load(result.ws_file), result.num_shape_ws)
    documents.set_document(scene, document, result.portrait_id, result.revision, result.history, result.current)
    documents.document_file(scene, runtime.documents_folder())
    documents.prune_documents(runtime.documents_folder(), result.portrait_id)
    conversions.image_from_array(IMAGE_NAMES["canonical"], conversions.load_png(result.image_file)[..., :3])
    if refresh_mask:
        ids = conversions.load_label_png(result.labels_file)
        conversions.image_from_array(IMAGE_NAMES["mask"], labels.colorize(ids))
    kinds = ", ".join(result.history[: result.current + 1])
    summary = f"portrait ready (edit {result.current + 1} of {len(result.history)}: {kinds})"
    try:
        views = refresh_views(scene, quality)
    except Exception as exc:  # noqa: BLE001 - the portrait is applied; a failed preview refresh is a note
        summary += f"; views not refreshed: {exc}"
    else:
        summary += f"; re-rendering {views} camera view{'s' if views != 1 else ''}" if views else ""
    return summary + "".join(f"; note: {n}" for n in result.notes)


def refresh_views(scene, quality: str = "full") -> int:
    """Re-render, for the portrait's current state, every camera view of ``scene`` that Render From Active
    Camera made before (its image exists). One job per camera with the coalesce key ``view:<camera>``
    (a newer state supersedes an unfinished render); results land on a later poll. ``quality``: the
    RenderRequest's ("preview" while Live Edit paints; the full render follows when painting pauses).
    Returns the count."""
    from . import jobs

    cams = [o for o in scene.objects if o.type == "CAMERA" and bpy.data.images.get(view_image_names(o.name)[0])]
    if not cams:
        return 0
    client = runtime.client(bpy.context)
    ref = documents.scene_portrait_ref(scene)
    for obj in cams:
        client.submit(jobs.view_request(obj, scene, ref, quality), f"view:{obj.name}",
                      _view_done(scene.name, obj.name, scene.ide3d.set_background))
    runtime.keep_polling()
    return len(cams)


def _view_done(scene_name: str, camera_name: str, set_background: bool):
    def done(job) -> None:
        try:
            scene = bpy.data.scenes.get(scene_name)
            if scene is None:
                return
            if job.ok:
                view(scene, camera_name, set_background, job.result)
            elif job.error.kind != "cancelled":
                scene.ide3d.status = f"view {camera_name} not refreshed: {job.error_text()}"
        except Exception as exc:  # noqa: BLE001 - never raise into Blender
            print(f"IDE-3D: view {camera_name} not refreshed: {exc}")
        finally:
            job.cleanup()
    return done


def view_image_names(camera_name: str) -> tuple[str, str]:
    return f"IDE-3D View {camera_name}", f"IDE-3D View {camera_name} Labels"


def view(scene, camera_name: str, set_background: bool, result) -> str:
    """Neural render (RGBA: alpha is the neural opacity) and colourised semantic map from a camera into
    images; optionally the camera's background image."""
    rgb_name, labels_name = view_image_names(camera_name)
    img = conversions.image_from_array(rgb_name, conversions.load_png(result.image_file))
    conversions.image_from_array(labels_name, labels.colorize(conversions.load_label_png(result.labels_file)))
    cam_obj = bpy.data.objects.get(camera_name)
    if set_background and cam_obj is not None and cam_obj.type == "CAMERA":
        cam = cam_obj.data
        cam.show_background_images = True
        bg = next((b for b in cam.background_images if b.image == img), None) or cam.background_images.new()
        bg.image = img
        bg.alpha = 1.0
    return f"rendered {result.width} x {result.height} from {camera_name}"


def frame_file(path: str, result) -> str:
    shutil.copyfile(result.image_file, path)
    return path


def mesh(scene, parts_by_label: bool, result) -> str:
    """The head mesh into object :data:`MESH_NAME`: vertex colours, labels and, when the result has a
    texture, its UVs and the texture image (packed into the .blend) as the materials' Base Color."""
    data = np.load(result.mesh_file)
    texture = None
    if result.texture_file:
        if "uv" not in data:
            raise ValueError(f"{result.mesh_file} has a texture but no uv array")
        texture = conversions.image_from_png(conversions.TEXTURE_IMAGE_NAME, result.texture_file)
    obj = conversions.mesh_object(MESH_NAME, data["vertices"], data["faces"], data.get("colors"),
                                  data.get("labels"), scene.collection, parts_by_label=parts_by_label,
                                  mask_image=bpy.data.images.get(IMAGE_NAMES["mask"]),
                                  uv=data["uv"] if texture is not None else None, texture_image=texture)
    size = f", {texture.size[0]} px texture" if texture is not None else ""
    return f"imported {obj.name}: {len(data['vertices'])} vertices, {len(data['faces'])} faces{size}"


def exported(scene, result) -> str:
    return (f"exported {result.files[0]}: {result.num_vertices} vertices, {result.num_faces} faces"
            + (f" (+ {len(result.files) - 1} files)" if len(result.files) > 1 else ""))
