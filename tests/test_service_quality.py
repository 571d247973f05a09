# SPDX-License-Identifier: GPL-3.0-or-later
"""Render quality in the service (issue 15): ``quality="full"`` (the fast renderer) gives the reference
render's picture, ``"preview"`` the same frame from cheaper rays, an unknown quality is a bad request;
a live mask edit at preview quality answers like a full one. In-process service, tiny model."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_helpers import make_tiny_model
from ide3d_core import cameras as C
from ide3d_core.service import protocol as P
from ide3d_core.service.inprocess import InProcessService

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _ok(service, request, out_dir: Path):
    reply = P.decode(service.call(P.encode(P.RequestMessage(1, request, str(out_dir))))[-1])
    assert reply.ok, reply.error
    return reply.result


def _ref(res) -> dict:
    return dict(portrait_id=res.portrait_id, revision=res.revision, document_file=res.document_file)


def test_render_qualities(model, tmp_path):
    service = InProcessService(model=str(model), device="cpu")
    new = _ok(service, P.NewPortraitRequest(seed=5, truncation=0.7), tmp_path / "new")
    cam = C.orbit_camera(math.radians(25), math.radians(-5))
    render = dict(label=tuple(float(x) for x in cam.label()), width=48, height=30, **_ref(new))
    views = {q: _ok(service, P.RenderRequest(**render, quality=q), tmp_path / q)
             for q in ("reference", "full", "preview")}
    img = {q: np.asarray(Image.open(v.image_file)).astype(np.float64) for q, v in views.items()}
    ids = {q: np.asarray(Image.open(v.labels_file)) for q, v in views.items()}
    assert img["full"].shape == img["preview"].shape == (30, 48, 4)
    mse = np.mean((img["full"][..., :3] - img["reference"][..., :3]) ** 2)
    assert mse == 0 or 10 * math.log10(255 ** 2 / mse) >= 40.0
    assert np.mean(ids["full"] == ids["reference"]) >= 0.995
    bad = P.decode(service.call(P.encode(P.RequestMessage(2, P.RenderRequest(**render, quality="ultra"),
                                                          str(tmp_path / "bad"))))[-1])
    assert not bad.ok and bad.error.kind == "bad_request" and "quality" in bad.error.message


def test_live_mask_edit_at_preview_quality(model, tmp_path):
    service = InProcessService(model=str(model), device="cpu")
    new = _ok(service, P.NewPortraitRequest(seed=2, truncation=0.7), tmp_path / "new")
    ids = np.asarray(Image.open(new.labels_file)).copy()
    r = ids.shape[0]
    ids[: r // 3, : r // 2] = 13
    mask = tmp_path / "mask.png"
    Image.fromarray(ids).save(mask)
    pre = _ok(service, P.MaskEditRequest(labels_file=str(mask), live=True, quality="preview", **_ref(new)),
              tmp_path / "pre")
    full = _ok(service, P.MaskEditRequest(labels_file=str(mask), live=True, quality="full", **_ref(pre)),
               tmp_path / "full")
    # the refine replaces the live record with the same codes; one record for the painting session
    np.testing.assert_array_equal(np.load(pre.ws_file), np.load(full.ws_file))
    assert len(full.history) == len(pre.history) == 2
    assert Path(full.image_file).is_file() and Path(pre.image_file).is_file()
