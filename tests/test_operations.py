# SPDX-License-Identifier: GPL-3.0-or-later
"""The operations layer (ide3d_core/operations): one set of limits, the render path against analytic
geometry, the view triplet, and the typed exceptions that replaced message matching."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ide3d_core import cameras, labels
from ide3d_core.operations import OperationError, limits
from ide3d_core.operations.mesh import MeshOptions, check_output

from blender_helpers import SPHERE_HAIR_Y, SPHERE_RADIUS, install_sphere_networks


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=8), "mesh resolution must be in 16..1024"),
    (dict(resolution=2048), "mesh resolution must be in 16..1024"),
    (dict(texture=32), "texture size must be in 64..8192 or 0"),
    (dict(faces=50), "at least 100"),
    (dict(smooth=-1), "smoothing iterations must be >= 0"),
    (dict(level=0.0), "surface level must be positive"),
])
def test_mesh_options_use_the_one_set_of_limits(kwargs, message):
    with pytest.raises(OperationError, match=message):
        MeshOptions(**kwargs)
    assert limits.MESH_RESOLUTION == (16, 1024)
    MeshOptions(resolution=16, texture=0, faces=0)  # the ends of the ranges are allowed


def test_mesh_outputs_are_checked_before_any_work(tmp_path):
    opts = MeshOptions(texture=256)
    with pytest.raises(OperationError, match=".glb, .obj or .ply"):
        check_output(tmp_path / "x.fbx", opts, False)
    with pytest.raises(OperationError, match="vertex colours only"):
        check_output(tmp_path / "x.ply", opts, False)
    with pytest.raises(OperationError, match="label parts need a .glb"):
        check_output(tmp_path / "x.obj", MeshOptions(texture=0), True)
    assert check_output(tmp_path / "x.glb", opts, True) == tmp_path / "x.glb"


def _reference(render_view) -> dict:
    """The stand-in has no field internals for a fast renderer: ask for the generator's own render."""
    import inspect

    return {"quality": "reference"} if "quality" in inspect.signature(render_view).parameters else {}


@pytest.fixture
def sphere(monkeypatch):
    monkeypatch.setitem(sys.modules, "ide3d_core.networks", sys.modules.get("ide3d_core.networks"))
    networks = install_sphere_networks(resolution=64)
    g = networks.Generator({"resolution": 64})
    from ide3d_core.portrait import PortraitState

    return g, PortraitState(g.codes_from_seeds([1]))


def test_render_view_of_any_frame_matches_the_analytic_sphere(sphere, tmp_path):
    """A 48 x 32 frame with a shifted principal point is rendered as the covering square and cropped:
    every pixel keeps its ray (truth: ray-sphere intersection through the frame's own camera)."""
    from ide3d_core.operations.render import render_view, write_view

    g, state = sphere
    cam = cameras.orbit_camera(np.radians(25.0), np.radians(-5.0))
    c2w, k = cameras.unpack_label(cam.label())
    w, h = 48, 32
    k = cameras.intrinsics(k[0, 0] * 64 / w, k[1, 1] * 64 / h, 0.55, 0.45)  # same focal in pixels, shifted
    label = cameras.pack_label(c2w, k)
    view = render_view(g, state, label, w, h, **_reference(render_view))
    assert view.image.shape == (h, w, 3) and view.ids.shape == view.alpha.shape == (h, w)
    o, d = cameras.rays_from_labels(torch.from_numpy(label)[None].double(), h, w)
    o, d = o.reshape(h, w, 3).numpy(), d.reshape(h, w, 3).numpy()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - SPHERE_RADIUS ** 2)
    hit = disc > 0
    y = (o + (-b - np.sqrt(np.clip(disc, 0, None)))[..., None] * d)[..., 1]
    assert 0.1 < hit.mean() < 0.9
    assert ((view.ids != 0) == hit).mean() > 0.98
    assert ((view.ids == labels.ID["hair"]) == (hit & (y > SPHERE_HAIR_Y))).mean() > 0.98
    assert ((view.alpha > 127) == hit).mean() > 0.98

    files = write_view(view, tmp_path / "v.png", alpha=True)
    assert [f.name for f in files] == ["v.png", "v_labels.png", "v_seg.png"]
    assert np.array_equal(np.asarray(Image.open(files[0])), view.rgba)
    assert np.array_equal(np.asarray(Image.open(files[1])), view.ids)
    assert np.array_equal(np.asarray(Image.open(files[2])), labels.colorize(view.ids))


def test_render_view_at_the_native_size_is_the_generator_render(sphere):
    from ide3d_core.images import to_uint8_hwc
    from ide3d_core.operations.render import render_view

    g, state = sphere
    label = cameras.canonical_camera().label()
    view = render_view(g, state, label, **_reference(render_view))
    out = g.render(g.planes(state.ws), torch.from_numpy(label)[None], state.ws)
    assert np.array_equal(view.image, to_uint8_hwc(out.image[0]))
    assert np.array_equal(view.ids, out.semantic[0].argmax(0).numpy().astype(np.uint8))
    with pytest.raises(OperationError, match="render size must be 1..8192"):
        render_view(g, state, label, 0, 10, **_reference(render_view))


def test_image_conversions_round_trip():
    from ide3d_core.images import from_uint8_hwc, to_uint8_hwc, unit_to_uint8

    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = from_uint8_hwc(rgb)
    assert t.shape == (2, 3, 5, 7) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert np.array_equal(to_uint8_hwc(t), rgb)
    assert np.array_equal(to_uint8_hwc(from_uint8_hwc(rgb[0]))[0], rgb[0])
    assert unit_to_uint8(np.array([-0.1, 0.0, 0.5, 1.0, 1.2])).tolist() == [0, 0, 128, 255, 255]


def test_typed_exceptions_instead_of_message_matching(tmp_path):
    from ide3d_core.mesh.extract import LevelNotCrossed, marching_cubes
    from ide3d_core.mesh.grid import DensityGrid
    from ide3d_core.model_loading import ModelError, NoModel, load_base_generator

    with pytest.raises(NoModel) as info:
        load_base_generator(str(tmp_path / "none"), "cpu")
    assert isinstance(info.value, ModelError) and info.value.folder == tmp_path / "none"
    from ide3d_core.mesh.grid import GridConfig

    grid = DensityGrid(np.zeros((4, 4, 4), np.float32), GridConfig(resolution=4))
    with pytest.raises(LevelNotCrossed) as lv:
        marching_cubes(grid, 10.0)
    assert isinstance(lv.value, ValueError) and lv.value.level == 10.0 and lv.value.high == 0.0


def test_the_service_and_the_command_line_find_the_same_face_parser(tmp_path):
    """Photo import's mask source: the model's own SegNet (``<model>/segnet``) for both callers."""
    from ide3d_core.segnet import SegNet, SegNetConfig, save_segnet
    from ide3d_core.service.handlers import Backend

    from blender_helpers import make_tiny_model

    assert Backend(model="config:tiny", device="cpu").face_parser() is None
    model = make_tiny_model(tmp_path / "model")
    torch.manual_seed(0)
    save_segnet(SegNet(SegNetConfig(widths=(8, 8, 8))), model / "segnet")
    parse = Backend(model=str(model), device="cpu").face_parser()
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ids = parse(image)
    assert ids.shape == (32, 32) and ids.dtype == np.uint8 and ids.max() < labels.NUM_CLASSES

    from ide3d_core.commands.model_args import load_parser
    from ide3d_core.segnet import array_parser

    assert np.array_equal(array_parser(load_parser(None, str(model), "cpu"))(image), ids)
