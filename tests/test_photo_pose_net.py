# SPDX-License-Identifier: GPL-3.0-or-later
"""The procedural pose net (ide3d_core/photo/pose_net.py) against exact ground-truth cameras.

* Held-out procedural heads (seed not used by scripts/train_pose_net.py, which draws from seeds 1000 and
  2000) rendered by ``training.procedural.render_heads`` at known orbit cameras (yaw -40..40 step 10,
  pitch -10/0/+10), through ``prepare(..., domain="procedural")`` end to end: yaw and pitch within
  5 degrees of the camera that rendered them, and the returned camera equals ``orbit_camera`` of them.
* Mirror images: the mirrored view's truth is the negated yaw; prepare on the mirrored photo must return
  the negated yaw within 2 degrees (the crop of a mirrored photo is not exactly the mirrored crop).
* Format: strict save/load round trip, shipped weights under 2 MB.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ide3d_core.cameras import orbit_camera, orbit_labels
from ide3d_core.photo.pose_net import (DEFAULT_FOLDER, WEIGHTS_FILE, PoseNet, PoseNetConfig, default_pose_net_available,
                                       estimate_pose, load_pose_net, save_pose_net)

pytestmark = pytest.mark.timeout(120)

#: Not a seed of scripts/train_pose_net.py (1000 training, 2000 held out there).
TEST_SEED = 31337
YAWS = np.arange(-40.0, 41.0, 10.0)
PITCHES = (-10.0, 0.0, 10.0)


def test_save_load_round_trip_is_exact_and_strict(tmp_path):
    torch = pytest.importorskip("torch")
    cfg = PoseNetConfig(resolution=32, channels=(8, 16), hidden=16)
    torch.manual_seed(0)
    net = PoseNet(cfg).eval()
    save_pose_net(net, tmp_path / "n", dtype=torch.float32)
    back = load_pose_net(tmp_path / "n")
    assert back.config == cfg
    img = (np.arange(32 * 32 * 3) % 251).astype(np.uint8).reshape(32, 32, 3)
    assert estimate_pose(net, img) == estimate_pose(back, img)
    # mirror symmetry of the estimator holds for any weights: yaw odd, pitch even
    y0, p0 = estimate_pose(net, img)
    y1, p1 = estimate_pose(net, img[:, ::-1].copy())
    assert abs(y0 + y1) < 1e-4 and abs(p0 - p1) < 1e-4
    cfg_text = (tmp_path / "n" / "config.json").read_text().replace('"hidden"', '"hiddn"')
    (tmp_path / "n" / "config.json").write_text(cfg_text)
    with pytest.raises(ValueError, match="unknown config keys"):
        load_pose_net(tmp_path / "n")
    with pytest.raises(ValueError, match="resolution"):
        PoseNet(PoseNetConfig(resolution=48))


def test_shipped_weights_small():
    assert default_pose_net_available(), "ide3d_core/photo/templates/pose_net is missing"
    assert (DEFAULT_FOLDER / WEIGHTS_FILE).stat().st_size < 2 * 1024 * 1024
    assert load_pose_net().config.resolution >= 32


def test_procedural_heads_yaw_pitch_within_5_degrees():
    torch = pytest.importorskip("torch")
    procedural = pytest.importorskip("training.procedural")
    from ide3d_core.photo.detect import mediapipe_available
    from ide3d_core.photo.pipeline import prepare

    if not mediapipe_available():
        pytest.skip("MediaPipe not installed")
    torch.set_num_threads(2)
    angles = np.array([(y, p) for y in YAWS for p in PITCHES])
    heads = procedural.sample_heads(len(angles), torch.Generator().manual_seed(TEST_SEED))
    r = procedural.render_heads(heads, torch.from_numpy(orbit_labels(np.radians(angles))), 128, antialias=2)
    imgs = ((r.image.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    errs, mirror = [], []
    for k, (img, (yaw, pitch)) in enumerate(zip(imgs, angles)):
        p = prepare(img, size=128, domain="procedural")
        errs.append((p.yaw - yaw, p.pitch - pitch))
        want = orbit_camera(math.radians(p.yaw), math.radians(p.pitch))
        assert np.allclose(p.camera.cam2world, want.cam2world, atol=1e-6)
        if k % 3 == 1:  # pitch 0 row: mirrored photo through the whole pipeline
            m = prepare(img[:, ::-1].copy(), size=128, domain="procedural")
            mirror.append((p.yaw, m.yaw, m.pitch - p.pitch))
    err = np.array(errs)
    report = np.round(np.concatenate([angles, err], 1), 1).tolist()
    print("yaw, pitch, yaw error, pitch error:", report)
    print("mirror (yaw, mirrored yaw, pitch change):", np.round(mirror, 2).tolist())
    assert np.abs(err[:, 0]).max() <= 5.0, report
    assert np.abs(err[:, 1]).max() <= 5.0, report
    for yaw, yaw_m, dp in mirror:
        assert abs(yaw + yaw_m) <= 2.0 and abs(dp) <= 2.0, mirror


def test_parser_mask_for_the_procedural_domain(tmp_path):
    """``prepare(parser=)`` takes the mask from the parser run on the aligned image; a malformed parser
    output is a clear error; ``ide3d prepare --parser DIR`` loads a SegNet folder and says so."""
    torch = pytest.importorskip("torch")
    procedural = pytest.importorskip("training.procedural")
    from ide3d_core.photo.detect import mediapipe_available
    from ide3d_core.photo.pipeline import prepare

    if not mediapipe_available():
        pytest.skip("MediaPipe not installed")
    heads = procedural.sample_heads(1, torch.Generator().manual_seed(TEST_SEED + 1))
    r = procedural.render_heads(heads, torch.from_numpy(orbit_labels(np.radians([[15.0, 5.0]]))), 128, antialias=2)
    img = ((r.image[0].permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    seen = []

    def parser(aligned):
        seen.append(aligned.copy())
        return (aligned[..., 0] > 128).astype(np.uint8) * 13

    p = prepare(img, size=128, domain="procedural", parser=parser)
    assert p.mask_source == "parser" and np.array_equal(seen[0], p.image)
    assert np.array_equal(p.mask, (p.image[..., 0] > 128).astype(np.uint8) * 13)
    with pytest.raises(ValueError, match="parser must return"):
        prepare(img, size=128, domain="procedural", parser=lambda a: np.zeros((64, 64), np.uint8))
    from ide3d_core.cli import main
    from training.segnet import SegNet, SegNetConfig, save_segnet

    save_segnet(SegNet(SegNetConfig(widths=(4, 8, 8))), tmp_path / "segnet")
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "head.png")
    assert main(["prepare", str(tmp_path / "head.png"), "--domain", "procedural", "--size", "128",
                 "--parser", str(tmp_path / "segnet"), "--out", str(tmp_path / "out")]) == 0
