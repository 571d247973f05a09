# SPDX-License-Identifier: GPL-3.0-or-later
"""The generator adapters and the ``ide3d mesh`` command, on the tiny generator."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from ide3d_core.cli import UserError
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.grid import GridConfig, sample_density_grid

networks = pytest.importorskip("ide3d_core.networks")
trimesh = pytest.importorskip("trimesh")
from ide3d_core.mesh.generator_field import GeneratorField, GeneratorRenderer  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    g = networks.Generator(networks.CONFIGS["tiny"], seed=0).eval().requires_grad_(False)
    ws = g.codes_from_seeds([5])
    return g, ws, GeneratorField(g, ws)


def test_field_matches_generator_query(tiny):
    g, ws, field = tiny
    pts = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    sigma, logits, rgb = field.query(pts)
    ref = g.query(g.planes(ws), pts[None])
    torch.testing.assert_close(sigma, ref.sigma[0, :, 0])
    torch.testing.assert_close(logits, ref.semantic[0])
    torch.testing.assert_close(rgb, (ref.features[0, :, :3] + 1) / 2)
    torch.testing.assert_close(field.density(pts), sigma)


def test_backbone_runs_once_and_chunks_agree(tiny):
    g, ws, _ = tiny
    calls = []
    hook = g.synthesis.register_forward_hook(lambda *a: calls.append(1))
    try:
        field = GeneratorField(g, ws)
        assert len(calls) == 1
        small = sample_density_grid(field, GridConfig(resolution=16, chunk=200))
        big = sample_density_grid(field, GridConfig(resolution=16, chunk=1 << 20))
        assert len(calls) == 1
    finally:
        hook.remove()
    np.testing.assert_allclose(small.density, big.density, rtol=1e-5, atol=1e-6)


def test_mesh_lies_on_the_level_set_of_the_field(tiny):
    """Frames for a random model: the extracted vertices, evaluated in the field in the model world,
    have the density of the level (and would not if an axis were swapped or flipped)."""
    g, ws, field = tiny
    grid = sample_density_grid(field, GridConfig(resolution=48, block=0))
    inner = grid.density[1:-1, 1:-1, 1:-1]
    level = float(np.quantile(inner, 0.6))
    mesh = marching_cubes(grid, level)
    # keep vertices away from the zeroed border layer
    interior = (np.abs(mesh.vertices) < 0.5 - 2 * grid.config.spacing).all(1)
    v = torch.from_numpy(mesh.vertices[interior])
    err = (field.density(v) - level).abs()
    spread = float(inner.std())
    assert float(err.median()) < 0.05 * spread
    wrong = field.density(v[:, [2, 1, 0]] * torch.tensor([1.0, 1.0, -1.0]))
    assert float((wrong - level).abs().median()) > 4 * float(err.median())
    # block-sparse sampling of the same field gives the same surface
    sparse = marching_cubes(sample_density_grid(field, GridConfig(resolution=48, block=6), level), level)
    np.testing.assert_array_equal(sparse.faces, mesh.faces)
    np.testing.assert_allclose(sparse.vertices, mesh.vertices, atol=1e-5)


def test_renderer_adapter_shapes(tiny):
    g, ws, field = tiny
    views = GeneratorRenderer(field).render(g.canonical_labels(2).numpy())
    assert views.rgb.shape == (2, 3, g.img_resolution, g.img_resolution)
    assert views.depth.shape == views.opacity.shape == (2, 1, g.neural_resolution, g.neural_resolution)
    assert 0 <= float(views.rgb.min()) and float(views.rgb.max()) <= 1
    torch.testing.assert_close(views.rgb[0], views.rgb[1])


def _run(argv):
    from ide3d_core.commands import mesh

    parser = argparse.ArgumentParser()
    mesh.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mesh", *argv])
    return args.func(args)


def test_cli_seed_and_portrait(tmp_path, tiny):
    g = tiny[0]
    out = tmp_path / "head.glb"
    level = "0.17"  # inside the untrained tiny model's density range
    common = ["--model", "config:tiny", "--resolution", "32", "--faces", "500", "--level", level, "--quiet"]
    assert _run(["--seed", "5", "--texture", "64", "--parts", "--out", str(out), *common]) == 0
    scene = trimesh.load(out, force="scene")
    assert len(scene.geometry) >= 1 and sum(len(x.faces) for x in scene.geometry.values()) <= 500

    from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_fingerprint, save_portrait

    ws = g.codes_from_seeds([5], truncation_psi=0.7)
    portrait = Portrait(camera=g.canonical_labels(1)[0].numpy(), generator_config={},
                        base_fingerprint=generator_fingerprint(g),
                        history=(EditRecord("invert", {}, PortraitState(ws)),))
    doc = save_portrait(portrait, tmp_path / "p.ide3d")
    ply = tmp_path / "head.ply"
    assert _run(["--portrait", str(doc), "--texture", "0", "--out", str(ply), *common]) == 0
    assert _run(["--seed", "5", "--texture", "0", "--out", str(tmp_path / "same.ply"), *common]) == 0
    assert ply.read_bytes() == (tmp_path / "same.ply").read_bytes()  # same codes, same mesh


@pytest.mark.parametrize("argv, message", [
    (["--seed", "1", "--out", "x.fbx"], ".glb, .obj or .ply"),
    (["--seed", "1", "--out", "x.ply"], "vertex colours only"),
    (["--seed", "1", "--out", "x.obj", "--parts"], "label parts need a .glb"),
    (["--seed", "1", "--out", "x.glb", "--model", "config:nope"], "unknown generator config"),
    (["--seed", "1", "--out", "x.glb", "--model", "/nonexistent"], "no model at"),
    (["--seed", "1", "--out", "x.glb", "--model", "config:tiny", "--resolution", "16", "--quiet"],
     "not crossed"),
    (["--portrait", "missing.ide3d", "--out", "x.glb"], "no portrait file"),
])
def test_cli_user_errors(tmp_path, argv, message):
    argv = [a if not a.startswith("x.") else str(tmp_path / a) for a in argv]
    with pytest.raises(UserError, match=message):
        _run(argv)
