# SPDX-License-Identifier: GPL-3.0-or-later
"""Several photos of one head through ``operations.invert_photos``: ``ide3d invert A B C`` (square crops with
masks/cameras per photo) and the photo pipeline (a photo without a face is skipped; none usable is an error)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core import labels as L
from ide3d_core.cli import main
from ide3d_core.portrait import load_portrait
from test_portrait_fixtures import label, make_generator


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three exact renders (yaw -30, 0, +30) of one procedural head, their palette masks and cameras."""
    from training.procedural import render_heads, sample_heads

    d = tmp_path_factory.mktemp("mv")
    heads = sample_heads(1, torch.Generator().manual_seed(4), "cpu")
    for y in (-30, 0, 30):
        r = render_heads(heads, label(float(y)), 32)
        img = ((r.image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(d / f"y{y}.png")
        Image.fromarray(L.colorize(r.labels[0].numpy().astype(np.uint8))).save(d / f"y{y}_mask.png")
        (d / f"y{y}.json").write_text(json.dumps({"label": [float(v) for v in label(float(y))[0]]}))
    return d


def test_cli_inverts_several_photos_into_one_portrait(photos, capsys):
    d = photos
    common = ["--model", "config:tiny", "--quiet", "--steps", "2", "--tune-steps", "1", "--fixed-camera"]
    assert main(["invert", str(d / "y-30.png"), str(d / "y0.png"), str(d / "y30.png"),
                 "--mask", str(d / "y-30_mask.png"), str(d / "y0_mask.png"), "-",
                 "--camera", str(d / "y-30.json"), str(d / "y0.json"), str(d / "y30.json"),
                 "--out", str(d / "p.ide3d"), *common]) == 0
    out = capsys.readouterr().out
    assert "view y0.png:" in out and "(primary)" in out
    p = load_portrait(d / "p.ide3d")
    assert len(p.source_views) == 3 and p.delta is not None
    # the primary (most frontal) photo is the document's source view, with its camera and mask
    assert np.array_equal(p.source_image, np.array(Image.open(d / "y0.png")))
    assert np.allclose(p.camera, label(0.0)[0].numpy())
    assert [v.params["name"] for v in p.source_views] == ["y-30.png", "y0.png", "y30.png"]
    assert p.source_views[2].mask is None and p.source_views[0].mask is not None
    assert np.allclose(p.source_views[0].camera, label(-30.0)[0].numpy())
    views = p.history[0].params["views"]
    assert [v["mask_source"] for v in views] == ["given", "given", "self"]
    assert abs(sum(v["weight"] for v in views) - 1.0) < 1e-3


def test_cli_per_photo_options_must_match(photos, capsys):
    d = photos
    assert main(["invert", str(d / "y0.png"), str(d / "y30.png"), "--mask", str(d / "y0_mask.png"),
                 "--model", "config:tiny", "--out", str(d / "x.ide3d")]) == 2
    assert "--mask takes one entry per photo (2), got 1" in capsys.readouterr().err
    assert main(["invert", str(d / "y0.png"), str(d / "y30.png"), "--yaw", "10",
                 "--model", "config:tiny", "--out", str(d / "x.ide3d")]) == 2
    assert "--yaw/--pitch describe one photo" in capsys.readouterr().err


def test_photo_pipeline_skips_a_photo_without_a_face(tmp_path):
    cbook = pytest.importorskip("matplotlib.cbook")
    from ide3d_core.inversion import InversionPolicy
    from ide3d_core.operations import OperationError
    from ide3d_core.operations.invert import PhotoInput, invert_photos

    face = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    g = make_generator()
    policy = InversionPolicy(optimise_steps=1, tune_steps=0)
    seen = []
    out = invert_photos(g, [PhotoInput(face), PhotoInput(tmp_path / "wall.png")], policy=policy,
                        progress=lambda d, t, m: seen.append(m))
    assert out.skipped == [("wall.png", "no face found")] and "wall.png: no face found; photo skipped" in out.notes
    assert out.portrait.source_views == () and out.portrait.history[0].params["skipped"][0]["name"] == "wall.png"
    assert any(m.startswith("photo: 2/2 wall.png") for m in seen) and seen[-1].startswith("inversion: ")
    with pytest.raises(OperationError, match="no usable photo"):
        invert_photos(g, [PhotoInput(tmp_path / "wall.png")] * 2, policy=policy)
    with pytest.raises(OperationError, match="no face found"):
        invert_photos(g, [PhotoInput(tmp_path / "wall.png")], policy=policy)
