# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train-encoders | invert | edit | restyle | render`` end to end on the tiny generator."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core import labels as L
from ide3d_core.cli import main
from ide3d_core.portrait import load_portrait
from test_portrait_fixtures import label, make_generator


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["train-encoders", "--model", "config:tiny", "--out", str(d / "enc"), "--steps", "1",
                 "--preset", "tiny", "--batch", "1", "--quiet"]) == 0
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(1, torch.Generator().manual_seed(4), "cpu")  # a photo with an exact mask
    r = render_heads(heads, label(15.0), 32)
    img = ((r.image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    ids = r.labels[0].numpy().astype(np.uint8)
    Image.fromarray(img).save(d / "photo.png")
    Image.fromarray(L.colorize(ids)).save(d / "photo_mask.png")  # palette colours, decoded on read
    return d


def test_invert_render_edit_restyle_undo(workspace):
    d = workspace
    common = ["--model", "config:tiny", "--quiet"]
    assert main(["invert", str(d / "photo.png"), "--mask", str(d / "photo_mask.png"), "--steps", "2",
                 "--tune-steps", "2", "--encoders", str(d / "enc"), "--out", str(d / "p.ide3d"), *common]) == 0
    p = load_portrait(d / "p.ide3d")
    assert p.source_image.shape == (32, 32, 3) and p.delta is not None and p.source_mask is not None
    assert main(["render", str(d / "p.ide3d"), "--canonical", "--out", str(d / "front.png"), *common]) == 0
    labels = np.array(Image.open(d / "front_labels.png"))
    seg = np.array(Image.open(d / "front_seg.png"))
    assert labels.shape == (32, 32) and np.array_equal(L.colorize(labels), seg)
    painted = labels.copy()
    painted[4:12, 8:24] = L.ID["hair"]
    Image.fromarray(L.colorize(painted)).save(d / "painted.png")
    assert main(["edit", str(d / "p.ide3d"), "--mask", str(d / "painted.png"), "--encoders", str(d / "enc"),
                 "--out", str(d / "q.ide3d"), *common]) == 0
    q = load_portrait(d / "q.ide3d")
    g = make_generator()
    assert torch.equal(q.ws[:, g.num_shape_ws:], p.ws[:, g.num_shape_ws:]) and len(q.history) == 2
    assert q.history[-1].params["refine"]["steps"] == 20  # refined by default (the tiny model may keep no residual)
    assert main(["edit", str(d / "p.ide3d"), "--mask", str(d / "painted.png"), "--encoders", str(d / "enc"),
                 "--refine-steps", "0", "--out", str(d / "q0.ide3d"), *common]) == 0
    q0 = load_portrait(d / "q0.ide3d")  # the editor alone: the same codes, no residual
    assert q0.history[-1].params["refine"] is None and q0.state.shape_residual is None and torch.equal(q0.ws, q.ws)
    assert main(["restyle", str(d / "q.ide3d"), "--regions", "hair,cloth", "--style-seed", "7",
                 "--out", str(d / "r.ide3d"), *common]) == 0
    r = load_portrait(d / "r.ide3d")
    assert r.state.restyle.classes == (L.ID["hair"], L.ID["cloth"])
    assert main(["render", str(d / "r.ide3d"), "--yaw", "30", "--pitch", "-5", "--orbit", "3",
                 "--out", str(d / "orbit.png"), *common]) == 0
    assert all((d / f"orbit_{i:03d}{s}.png").is_file() for i in range(3) for s in ("", "_labels", "_seg"))
    assert main(["render", str(d / "r.ide3d"), "--out", str(d / "src.png"), *common]) == 0
    assert main(["edit", str(d / "r.ide3d"), "--undo", "--out", str(d / "u.ide3d")]) == 0
    # without a mask, the project's parser (training/segnet.py) labels the photo
    from training.segnet import SegNet, SegNetConfig, save_segnet
    save_segnet(SegNet(SegNetConfig(widths=(8, 8, 8))), d / "segnet")
    assert main(["invert", str(d / "photo.png"), "--steps", "0", "--tune-steps", "0", "--parser", str(d / "segnet"),
                 "--out", str(d / "parsed.ide3d"), *common]) == 0
    assert load_portrait(d / "parsed.ide3d").history[0].params["mask_source"] == "parser"
    # the camera of `ide3d prepare` (camera.json "label") is taken as is
    import json
    cam = label(15.0)[0].numpy()
    (d / "camera.json").write_text(json.dumps({"label": [float(v) for v in cam]}))
    assert main(["invert", str(d / "photo.png"), "--mask", str(d / "photo_mask.png"), "--camera", str(d / "camera.json"),
                 "--steps", "0", "--tune-steps", "0", "--out", str(d / "cam.ide3d"), *common]) == 0
    assert np.array_equal(load_portrait(d / "cam.ide3d").camera, cam)
    assert torch.equal(load_portrait(d / "u.ide3d").ws, q.ws)


def test_clear_errors(workspace, tmp_path, capsys):
    d = workspace
    common = ["--model", "config:tiny", "--quiet"]
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "small.png")
    assert main(["invert", str(d / "photo.png"), "--mask", str(tmp_path / "small.png"),
                 "--out", str(tmp_path / "x.ide3d"), *common]) == 2
    assert "must be 32x32" in capsys.readouterr().err
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    assert main(["invert", str(d / "photo.png"), "--mask", str(tmp_path / "noise.png"),
                 "--out", str(tmp_path / "x.ide3d"), *common]) == 2
    assert "no recognisable labels" in capsys.readouterr().err
    (tmp_path / "bad.ide3d").write_bytes(b"hello")
    assert main(["render", str(tmp_path / "bad.ide3d"), "--out", str(tmp_path / "v.png"), *common]) == 2
    assert "not an .ide3d portrait" in capsys.readouterr().err
    assert main(["restyle", str(tmp_path / "bad.ide3d"), "--regions", "beard", "--style-seed", "1",
                 "--out", str(tmp_path / "y.ide3d"), *common]) == 2
    assert "unknown class 'beard'" in capsys.readouterr().err
    assert main(["invert", str(d / "photo.png"), "--lpips", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "x.ide3d"), *common]) == 2
    assert "no LPIPS weights" in capsys.readouterr().err
    assert main(["edit", str(d / "photo.png"), "--mask", str(d / "photo_mask.png"), "--refine-steps", "-1",
                 "--out", str(tmp_path / "z.ide3d"), *common]) == 2
    assert "--refine-steps must be >= 0" in capsys.readouterr().err


def test_train_encoders_continues_from_saved_encoders(workspace, tmp_path):
    """``--init DIR`` starts from DIR's weights (0 steps: the same weights come back out) and refuses a
    folder without the encoder asked for."""
    from ide3d_core.encoders import load_encoder

    d = workspace
    assert main(["train-encoders", "--model", "config:tiny", "--init", str(d / "enc"), "--out", str(tmp_path / "again"),
                 "--steps", "0", "--which", "canonical", "--quiet"]) == 0
    a, b = load_encoder(d / "enc" / "canonical"), load_encoder(tmp_path / "again" / "canonical")
    assert a.config == b.config
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert main(["train-encoders", "--model", "config:tiny", "--init", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "x"), "--steps", "0", "--quiet"]) != 0
    assert main(["train-encoders", "--model", "config:tiny", "--truncation", "1.5", "--out", str(tmp_path / "y"),
                 "--steps", "0", "--quiet"]) != 0
