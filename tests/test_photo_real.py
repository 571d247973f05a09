# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo import on real portraits shipped inside registry packages (nothing downloaded):
scikit-image's ``astronaut`` and matplotlib's ``grace_hopper.jpg``.

Independent checks: OpenCV's Haar cascade locates the face (so MediaPipe's landmarks must fall inside its
box); a mirrored photo must give the mirrored yaw; mask classes must sit where anatomy puts them; the
image is composed from known pieces for the several-faces and small-face cases.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ide3d_core.labels import ID, mirror_labels
from ide3d_core.photo import PhotoError, prepare
from ide3d_core.photo.detect import _haar, detect_faces, mediapipe_available

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not mediapipe_available(), reason="MediaPipe (photo extra) not installed")]


@pytest.fixture(scope="module")
def portraits() -> dict[str, np.ndarray]:
    skdata = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        hopper = np.asarray(im.convert("RGB")).copy()
    return {"astronaut": skdata.astronaut(), "hopper": hopper}


@pytest.fixture(scope="module")
def prepared(portraits):
    return {k: prepare(v, size=256) for k, v in portraits.items()}


def _centroid(mask: np.ndarray, ids) -> np.ndarray:
    ys, xs = np.nonzero(np.isin(mask, ids))
    assert len(xs) > 0, ids
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_landmarks_inside_the_haar_box(portraits, name):
    faces = detect_faces(portraits[name])
    assert len(faces) == 1 and faces[0].landmarks.shape == (468, 3) and faces[0].source == "mediapipe"
    boxes = [b for b, _ in _haar(portraits[name])]
    assert boxes, "OpenCV found no face"
    x0, y0, x1, y1 = boxes[0]
    for idx in (1, 33, 263, 13):  # nose tip, eye corners, mouth
        x, y = faces[0].landmarks[idx, :2]
        assert x0 <= x <= x1 and y0 <= y <= y1, (idx, (x, y), boxes[0])


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_pose_near_frontal(prepared, name):
    r = prepared[name]
    assert abs(r.yaw) < 12.0 and abs(r.pitch) < 12.0 and abs(r.roll) < 1e-3, (r.yaw, r.pitch)
    assert r.image.shape == (256, 256, 3) and r.label().shape == (25,)
    assert math.isclose(math.degrees(r.camera.yaw_pitch()[0]), r.yaw, abs_tol=1e-6)


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_mirrored_photo_mirrors_yaw_and_mask(portraits, prepared, name):
    r = prepared[name]
    m = prepare(portraits[name][:, ::-1].copy(), size=256)
    assert abs(m.yaw + r.yaw) < 2.0 and abs(m.pitch - r.pitch) < 2.0, (r.yaw, m.yaw)
    # The subject's left eye is on the image's right in both, and the masks agree after mirroring.
    agree = (mirror_labels(m.mask) == r.mask).mean()
    assert agree > 0.9, agree


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_mask_classes_in_plausible_places(prepared, name):
    mask = prepared[name].mask
    eyes = _centroid(mask, [ID["l_eye"], ID["r_eye"]])
    mouth = _centroid(mask, [ID["u_lip"], ID["l_lip"], ID["mouth"]])
    nose = _centroid(mask, [ID["nose"]])
    assert eyes[1] < nose[1] < mouth[1]
    assert _centroid(mask, [ID["l_eye"]])[0] > _centroid(mask, [ID["r_eye"]])[0]  # subject's left = image right
    assert _centroid(mask, [ID["l_brow"], ID["r_brow"]])[1] < eyes[1]
    assert _centroid(mask, [ID["hair"]])[1] < _centroid(mask, [ID["skin"]])[1]
    assert _centroid(mask, [ID["cloth"]])[1] > mouth[1]
    top_corners = np.concatenate([mask[:16, :16].ravel(), mask[:16, -16:].ravel()])
    assert (top_corners == ID["background"]).mean() > 0.9
    assert (mask[128, 128] in (ID["skin"], ID["nose"]))


def test_several_faces_largest_first_and_face_index(portraits):
    import cv2

    hopper = portraits["hopper"]
    small = cv2.resize(hopper, (hopper.shape[1] * 2 // 3, hopper.shape[0] * 2 // 3), interpolation=cv2.INTER_AREA)
    canvas = np.full((hopper.shape[0], hopper.shape[1] + small.shape[1], 3), 255, np.uint8)
    canvas[:, : hopper.shape[1]] = hopper
    canvas[: small.shape[0], hopper.shape[1]:] = small
    r = prepare(canvas, size=128)
    assert len(r.faces) == 2 and r.face_index == 0
    assert any("found 2 faces" in w for w in r.warnings)
    assert r.faces[0].box[0] < hopper.shape[1] < r.faces[1].box[0]
    r1 = prepare(canvas, size=128, face_index=1)
    assert r1.face_index == 1 and not any("found 2 faces" in w for w in r1.warnings)
    with pytest.raises(PhotoError, match="face 5 requested but 2 found"):
        prepare(canvas, size=128, face_index=5)


def test_small_face_in_a_large_photo_uses_the_haar_fallback(portraits):
    import cv2

    hopper = portraits["hopper"]
    small = cv2.resize(hopper, (128, 150), interpolation=cv2.INTER_AREA)
    canvas = np.full((1200, 1600, 3), 235, np.uint8)
    canvas[700:850, 1100:1228] = small
    r = prepare(canvas, size=128)
    assert r.faces[0].landmarks is not None
    x, y = r.faces[0].landmarks[1, :2]  # nose tip inside the pasted picture
    assert 1100 < x < 1228 and 700 < y < 850
    assert any("pixels wide" in w for w in r.warnings)


def test_opencv_only_path(portraits):
    r = prepare(portraits["hopper"], size=128, use_mediapipe=False)
    assert r.faces[0].source == "haar" and r.mask_source == "box" and r.yaw == 0.0
    assert any("no landmarks" in w for w in r.warnings)
    assert _centroid(r.mask, [ID["skin"]])[1] > 30


def test_user_mask_is_warped_with_the_photo(portraits):
    hopper = portraits["hopper"]
    user = np.zeros(hopper.shape[:2], np.uint8)
    user[:, hopper.shape[1] // 2:] = ID["hair"]  # right half of the photo
    r = prepare(hopper, size=128, mask=user)
    assert r.mask_source == "user"
    # Where the aligned pixel comes from the photo's right half, the label must be hair.
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    src = (np.stack([xx, yy], -1).reshape(-1, 2) - r.matrix[:, 2]) @ np.linalg.inv(r.matrix[:, :2]).T
    right = (src[:, 0] > hopper.shape[1] / 2 + 2).reshape(128, 128)
    left = (src[:, 0] < hopper.shape[1] / 2 - 2).reshape(128, 128)
    assert (r.mask[right] == ID["hair"]).all() and (r.mask[left] == 0).all()
    with pytest.raises(PhotoError, match="mask is 10x10"):
        prepare(hopper, size=128, mask=np.zeros((10, 10), np.uint8))
    with pytest.raises(PhotoError, match="not a label mask"):
        prepare(hopper, size=128, mask=np.full(hopper.shape[:2], 200, np.uint8))


def test_extreme_pose_warns_with_the_yaw(monkeypatch):
    """A face whose landmarks are the template seen at yaw 60: a warning quoting the estimate."""
    from ide3d_core.cameras import orbit_camera
    from ide3d_core.photo import detect as detect_mod, pipeline
    from ide3d_core.photo.pose import TEMPLATE_INDICES, template_world

    uv, _ = orbit_camera(math.radians(60.0), 0.0).project(template_world(), 512, 512)
    lm = np.zeros((468, 3))
    lm[:, :2] = uv.mean(0)
    lm[TEMPLATE_INDICES, :2] = uv
    face = detect_mod.Face(np.array([150.0, 150, 350, 350]), lm, 1.0, "mediapipe")
    monkeypatch.setattr(pipeline, "detect_faces", lambda rgb, use_mediapipe=True: [face])
    r = prepare(np.full((512, 512, 3), 128, np.uint8), size=128, mask=np.zeros((128, 128), np.uint8))
    assert abs(r.yaw - 60.0) < 0.5
    assert any("yaw +60" in w and "beyond the model's range" in w for w in r.warnings), r.warnings


def test_cli_writes_every_step(tmp_path, monkeypatch, portraits):
    from PIL import Image

    from ide3d_core import cli
    from ide3d_core.commands import prepare as cmd

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("ide3d_core.commands.prepare",))
    photo = tmp_path / "hopper.png"
    Image.fromarray(portraits["hopper"]).save(photo)
    assert cli.main(["prepare", str(photo), "--out", str(tmp_path / "out"), "--size", "128"]) == 0
    for name in cmd.FILES:
        assert (tmp_path / "out" / name).is_file(), name
    info = json.loads((tmp_path / "out" / "camera.json").read_text())
    assert len(info["label"]) == 25 and set(info["timings_ms"]) >= {"load", "detect", "align", "mask"}
    labels = np.asarray(Image.open(tmp_path / "out" / "04_labels.png"))
    assert labels.shape == (128, 128) and labels.max() < 19
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    assert cli.main(["prepare", str(bad), "--out", str(tmp_path / "o2")]) == 2


def test_progress_reports_every_step_and_cancel_stops(portraits):
    from ide3d_core.photo.pipeline import STEPS
    from ide3d_core.progress import CancelToken, Cancelled

    seen = []
    r = prepare(portraits["hopper"], size=64, progress=lambda done, total, msg: seen.append((done, total, msg)))
    assert seen == [(i + 1, len(STEPS), s) for i, s in enumerate(STEPS)] and set(r.timings) == set(STEPS)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        prepare(portraits["hopper"], size=64, cancel=token)
