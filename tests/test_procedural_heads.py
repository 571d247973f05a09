# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural heads: seeded determinism, the head box, class coverage, ground-truth meshes, streaming
and the dataset command (folder layout read back with PIL/json and ide3d_core.cameras)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core import cameras as C
from ide3d_core.cli import main as cli_main
from ide3d_core.labels import ID, NAMES, NUM_CLASSES
from training.procedural import (ProceduralStream, head_mesh, render_heads, sample_cameras, sample_heads)
from training.procedural.mesh import head_field


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_heads_and_images():
    a, b, c = sample_heads(4, _gen(1)), sample_heads(4, _gen(1)), sample_heads(4, _gen(2))
    for name in ("centre", "rot", "inv_radii", "planes", "active", "colour1", "param", "light"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.centre, c.centre)
    cams = sample_cameras(4, _gen(0))
    assert torch.equal(cams, sample_cameras(4, _gen(0)))
    ra, rb = render_heads(a, cams, 16), render_heads(b, cams, 16)
    assert torch.equal(ra.image, rb.image) and torch.equal(ra.labels, rb.labels)


def test_index_selects_one_head():
    heads = sample_heads(3, _gen(4))
    one = heads.index(2)
    assert one.batch_size == 1 and torch.equal(one.centre[0], heads.centre[2])
    assert one.traits["hair_style"].shape == (1,)
    with pytest.raises(IndexError):
        heads.index(3)


def test_without_class_removes_that_part_and_reveals_what_was_behind():
    """The hair switched off: no hair pixel is left, every pixel that showed something else is unchanged
    (the first hit of a ray is still the first hit), and some removed hair pixels show the skull behind."""
    heads = sample_heads(6, _gen(11))
    cams = sample_cameras(6, _gen(12))
    a, b = render_heads(heads, cams, 48), render_heads(heads.without_class(ID["hair"]), cams, 48)
    hair = a.labels == ID["hair"]
    assert hair.any() and not (b.labels == ID["hair"]).any()
    assert torch.equal(a.labels[~hair], b.labels[~hair])
    assert (b.labels[hair] != ID["background"]).any()
    assert torch.equal(heads.without_class(ID["hat"]).active | heads.active, heads.active)


def test_heads_fit_in_the_box_and_face_plus_z():
    heads = sample_heads(8, _gen(5))
    lin = torch.linspace(-0.6, 0.6, 19)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    outside = (grid.abs() > 0.5 + 1e-6).any(-1)
    for i in range(heads.batch_size):
        values, _ = head_field(heads.index(i), grid)
        assert (values[outside] < 0).all()
    # eyes and nose in front (+z) of the skull centre, subject's left eye at +x
    names = heads.names
    c = heads.centre
    assert (c[:, names.index("l_eye"), 0] > 0).all() and (c[:, names.index("r_eye"), 0] < 0).all()
    assert (c[:, names.index("nose_tip"), 2] > c[:, names.index("cranium"), 2] + 0.1).all()


def test_symmetric_heads_are_mirror_symmetric():
    heads = sample_heads(6, _gen(6), symmetric=True)
    names = heads.names
    for left, right in (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"), ("l_earring", "r_earring")):
        i, j = names.index(left), names.index(right)
        flip = torch.tensor([-1.0, 1.0, 1.0])
        assert torch.allclose(heads.centre[:, i] * flip, heads.centre[:, j], atol=1e-6)
        assert torch.equal(heads.active[:, i], heads.active[:, j])
    assert torch.all(heads.light[:, 0] == 0)


def test_every_class_appears_over_a_few_heads():
    heads = sample_heads(24, _gen(0))
    cams = sample_cameras(24, _gen(1))
    r = render_heads(heads, cams, 48, antialias=1)
    present = set(torch.unique(r.labels).tolist())
    missing = [NAMES[i] for i in range(NUM_CLASSES) if i not in present]
    assert not missing, missing


@pytest.mark.parametrize("isosurface", ["auto", "tetrahedra"])  # tetrahedra: the PyMCubes-less fallback
def test_head_mesh_matches_rendered_depth_and_labels(isosurface):
    import trimesh

    head = sample_heads(1, _gen(2))
    mesh = head_mesh(head, resolution=48, isosurface=isosurface)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 1000
    assert mesh.is_watertight and mesh.volume > 0  # closed, faces wound outward
    labels = mesh.vertex_attributes["label"]
    assert labels.shape == (len(mesh.vertices),)
    assert {ID["skin"], ID["hair"], ID["nose"], ID["neck"], ID["cloth"]} <= set(labels.tolist())
    assert np.abs(mesh.vertices).max() <= 0.5 + 1e-9
    # rays of the canonical camera: the mesh surface lies where the renderer says (within ~1 voxel)
    cam = C.canonical_camera()
    res = 24
    r = render_heads(head, torch.from_numpy(cam.label()[None]), res, antialias=1)
    origins, dirs = cam.rays(res, res)
    fg = np.argwhere(r.labels[0].numpy() > 0)[::7]
    o, d = origins[fg[:, 0], fg[:, 1]], dirs[fg[:, 0], fg[:, 1]]
    first = np.array([_first_hit(mesh.vertices[mesh.faces], oi, di) for oi, di in zip(o, d)])
    depth = r.depth[0, 0].numpy()[fg[:, 0], fg[:, 1]]
    hit = np.isfinite(first)
    assert hit.mean() > 0.95
    assert np.median(np.abs(first[hit] - depth[hit])) < 0.01
    # the label of the mesh vertex nearest to the rendered hit is the rendered label (mostly)
    pts = o + depth[:, None] * d
    nearest = np.argmin(((mesh.vertices[None] - pts[:, None]) ** 2).sum(-1), 1)
    agree = (labels[nearest] == r.labels[0].numpy()[fg[:, 0], fg[:, 1]]).mean()
    assert agree > 0.85, agree


def _first_hit(tris, o, d):
    """Distance to the nearest triangle along a ray (Moller-Trumbore, numpy), inf if none."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    pv = np.cross(d, e2)
    det = (e1 * pv).sum(1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tv = o - tris[:, 0]
    u = (tv * pv).sum(1) * inv
    qv = np.cross(tv, e1)
    v = (qv @ d) * inv
    t = (qv * e2).sum(1) * inv
    good = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return t[good].min() if good.any() else np.inf


def test_stream_gives_fresh_batches():
    stream = ProceduralStream(2, 16, seed=3, poses=C.PoseDistribution())
    a, b = next(stream), next(stream)
    assert a.image.shape == (2, 3, 16, 16) and a.cameras.shape == (2, 25)
    assert not torch.equal(a.cameras, b.cameras)
    again = next(ProceduralStream(2, 16, seed=3))
    assert torch.equal(again.image, a.image)


def test_dataset_command_writes_a_valid_folder(tmp_path):
    out = tmp_path / "ds"
    rc = cli_main(["dataset", "procedural", "--count", "5", "--resolution", "16", "--seed", "4",
                   "--out", str(out), "--batch-size", "3"])
    assert rc == 0
    meta = json.loads((out / "images" / "dataset.json").read_text())
    assert len(meta["labels"]) == 5
    names = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert names == sorted(n for n, _ in meta["labels"]) and names[0] == "00000/img00000000.png"
    for name, label in meta["labels"]:
        assert len(label) == 25
        cam = C.Camera.from_label(label)
        assert abs(np.linalg.norm(cam.position) - C.CANONICAL_RADIUS) < 1e-4
        yaw, pitch = cam.yaw_pitch()
        assert abs(yaw) <= math.radians(60) + 1e-6 and abs(pitch) <= math.radians(30) + 1e-6
        img = np.asarray(Image.open(out / "images" / name))
        mask = np.asarray(Image.open(out / "masks" / name))
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8
        assert mask.shape == (16, 16) and mask.max() < NUM_CLASSES and (mask > 0).any()
        assert (out / "masks_color" / name).exists()
    # the same seed renders the same first image again
    rc = cli_main(["dataset", "procedural", "--count", "1", "--resolution", "16", "--seed", "4",
                   "--out", str(tmp_path / "again"), "--batch-size", "3", "--no-color-masks"])
    assert rc == 0
    first = np.asarray(Image.open(tmp_path / "again" / "masks" / "00000/img00000000.png"))
    assert np.array_equal(first, np.asarray(Image.open(out / "masks" / "00000/img00000000.png")))
    assert not (tmp_path / "again" / "masks_color").exists()


def test_dataset_command_rejects_bad_input(tmp_path, capsys):
    assert cli_main(["dataset", "procedural", "--count", "0", "--resolution", "16", "--out", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err
