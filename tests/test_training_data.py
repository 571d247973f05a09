# SPDX-License-Identifier: GPL-3.0-or-later
"""Dataset folder reading: clear errors naming the file; flip augmentation against the camera model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core.cameras import Camera, orbit_camera
from ide3d_core.labels import ID
from test_training_fixtures import synthetic_sample, write_dataset
from training.data import DatasetError, DatasetFolder, FolderSource, flip_sample


@pytest.fixture
def folder(tmp_path):
    return write_dataset(tmp_path / "ds", n=4, res=16)


def test_a_good_folder_loads_images_masks_and_cameras(folder):
    ds = DatasetFolder(folder)
    assert len(ds) == 4 and ds.resolution == 16
    img, lab, cam = ds.load(1)
    ref_img, ref_lab = synthetic_sample(16, shift=0.02)
    assert np.array_equal(img, ref_img) and np.array_equal(lab, ref_lab)
    labels = json.loads((folder / "images" / "dataset.json").read_text())["labels"]
    assert np.allclose(cam, labels[1][1])


def test_missing_dataset_json_is_named(folder):
    (folder / "images" / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=r"images/dataset\.json: missing"):
        DatasetFolder(folder)


def test_an_image_without_a_label_is_named(folder):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "images" / "00000" / "img00000099.png")
    with pytest.raises(DatasetError, match=r"img00000099\.png: image has no camera label"):
        DatasetFolder(folder)


def test_a_null_or_short_label_is_named(folder):
    meta = folder / "images" / "dataset.json"
    doc = json.loads(meta.read_text())
    doc["labels"][2][1] = doc["labels"][2][1][:24]
    meta.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"img00000002\.png: camera label .* 25 finite numbers"):
        DatasetFolder(folder)
    doc["labels"][2][1] = None
    meta.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"img00000002\.png: missing camera label"):
        DatasetFolder(folder)


def test_a_missing_mask_is_named(folder):
    (folder / "masks" / "00000" / "img00000003.png").unlink()
    with pytest.raises(DatasetError, match=r"masks/00000/img00000003\.png: label mask missing"):
        DatasetFolder(folder)


def test_mismatched_sizes_are_named(folder):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "masks" / "00000" / "img00000001.png")
    with pytest.raises(DatasetError, match=r"masks/00000/img00000001\.png: mask size 8x8 differs"):
        DatasetFolder(folder)
    write_dataset(folder, n=4, res=16)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(folder / "images" / "00000" / "img00000002.png")
    with pytest.raises(DatasetError, match=r"images/00000/img00000002\.png: size 24x24 differs"):
        DatasetFolder(folder)


def test_unknown_label_ids_are_named(folder):
    bad = np.full((16, 16), 19, np.uint8)
    Image.fromarray(bad).save(folder / "masks" / "00000" / "img00000002.png")
    ds = DatasetFolder(folder)  # ids need the pixels: found on read or by validate()
    with pytest.raises(DatasetError, match=r"img00000002\.png: unknown label id 19"):
        ds.validate()


def test_flip_mirrors_the_camera_so_mirrored_points_land_on_mirrored_pixels():
    # Independent truth: Camera.project (pinhole maths) of a point and of its mirror image x -> -x.
    res = 64
    cam = orbit_camera(math.radians(20.0), math.radians(-7.0))
    img, lab = synthetic_sample(res)
    f_img, f_lab, f_cam = flip_sample(img, lab, cam.label())
    mirrored = Camera.from_label(f_cam)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.4, 0.4, (50, 3))
    uv, _ = cam.project(pts, res, res)
    uv_m, _ = mirrored.project(pts * np.array([-1.0, 1.0, 1.0]), res, res)
    np.testing.assert_allclose(uv_m[:, 0], res - uv[:, 0], atol=1e-4)
    np.testing.assert_allclose(uv_m[:, 1], uv[:, 1], atol=1e-4)
    # Pixels are mirrored and the subject's left eye becomes the right eye (and vice versa).
    assert np.array_equal(f_img, img[:, ::-1])
    j, i = np.nonzero(lab == ID["l_eye"])
    assert (f_lab[j, res - 1 - i] == ID["r_eye"]).all()
    j, i = np.nonzero(lab == ID["r_eye"])
    assert (f_lab[j, res - 1 - i] == ID["l_eye"]).all()
    assert (f_lab[lab[:, ::-1] == ID["hair"]] == ID["hair"]).all()


def test_folder_batches_depend_only_on_seed_step_and_rank(folder):
    src = FolderSource(DatasetFolder(folder), 16, seed=3, device=torch.device("cpu"))
    a, b = src.batch(5, 0, 8), src.batch(5, 0, 8)
    assert torch.equal(a.image, b.image) and torch.equal(a.cameras, b.cameras)
    assert not torch.equal(a.image, src.batch(5, 1, 8).image)
    # The batch prepared in the background for step 6 equals a direct load of step 6.
    plain = FolderSource(DatasetFolder(folder), 16, seed=3, device=torch.device("cpu"), prefetch=0, workers=1)
    assert (5 + 1, 0, 8) in src._pending
    assert torch.equal(src.batch(6, 0, 8).image, plain.batch(6, 0, 8).image)
    assert a.image.shape == (8, 3, 16, 16) and a.labels.dtype == torch.int64
    assert a.image.min() >= -1 and a.image.max() <= 1
    # x-flip: some samples come mirrored, each with the mirrored camera (negated entry 3 = -x position).
    xs = json.loads((folder / "images" / "dataset.json").read_text())["labels"]
    known = {round(float(lab[1][3]), 5) for lab in xs}
    seen = {round(float(c), 5) for c in src.batch(7, 0, 32).cameras[:, 3]}
    assert seen - known and {-x for x in seen - known} <= known
