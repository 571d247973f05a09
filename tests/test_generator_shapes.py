# SPDX-License-Identifier: GPL-3.0-or-later
"""Generator shapes, dtypes, code layout and sizes for every configuration."""
import dataclasses

import pytest
import torch

from ide3d_core.networks import CONFIGS, Generator, GeneratorConfig


def expected_shapes(cfg: GeneratorConfig, b: int, h: int) -> dict:
    H = cfg.img_resolution
    return {"image": (b, 3, H, H), "image_raw": (b, 3, h, h), "semantic": (b, 19, H, H),
            "semantic_raw": (b, 19, h, h), "depth": (b, 1, h, h), "opacity": (b, 1, h, h),
            "features_raw": (b, 32, h, h)}


@pytest.mark.parametrize("name,neural", [("tiny", None), ("default", None), ("paper", None),
                                         ("paper", 128)])
def test_shapes_on_meta_device(name, neural):
    """Shapes of every output at full size (meta tensors: no arithmetic, so the paper model is free)."""
    cfg = CONFIGS[name]
    with torch.device("meta"):
        G = Generator(cfg)
    b = 2
    ws = torch.empty(b, G.num_ws, G.w_dim, device="meta")
    planes = G.planes(ws)
    p = cfg.plane_resolution
    assert planes.semantic.shape == (b, 3, cfg.semantic_plane_channels, p, p)
    assert planes.texture.shape == (b, 3, cfg.texture_plane_channels, p, p)
    out = G.render(planes, torch.empty(b, 25, device="meta"), ws, neural_resolution=neural)
    h = neural or cfg.neural_resolution
    for key, shape in expected_shapes(cfg, b, h).items():
        assert getattr(out, key).shape == shape, key
        assert getattr(out, key).dtype == torch.float32, key
    f = G.query(planes, torch.empty(b, 7, 3, device="meta"))
    assert (f.sigma.shape, f.semantic.shape, f.features.shape) == ((b, 7, 1), (b, 7, 19), (b, 7, 32))


def test_code_layout_of_the_paper_config():
    with torch.device("meta"):
        G = Generator(CONFIGS["paper"])
    assert (G.z_dim, G.w_dim, G.c_dim) == (512, 512, 25)
    assert (G.num_ws, G.num_shape_ws, G.num_texture_ws) == (18, 8, 10)
    assert (G.img_resolution, G.neural_resolution) == (512, 64)
    cfg = G.config
    assert cfg.shared_resolution == 64 and cfg.channels(64) == 64  # 64 x 64 x 64 shared map
    assert cfg.plane_resolution == 256 and cfg.texture_plane_channels == 32  # 256 x 256 x 32 heads
    assert (cfg.coarse_samples, cfg.fine_samples, cfg.ray_near, cfg.ray_far) == (48, 48, 2.25, 3.3)
    assert cfg.plane_axes == ("xy", "yz", "xz")


def test_default_config_ships_under_40_mb_in_float16():
    cfg = CONFIGS["default"]
    assert (cfg.img_resolution, cfg.neural_resolution) == (256, 64)
    with torch.device("meta"):
        n = sum(p.numel() for p in Generator(cfg).parameters())
    assert n * 2 < 40e6


@pytest.mark.parametrize("aggregation", ["mean", "sum", "concat"])
def test_real_forward_tiny(aggregation):
    cfg = dataclasses.replace(CONFIGS["tiny"], aggregation=aggregation)
    G = Generator(cfg)
    ws = G.codes_from_seeds([0, 1])
    out = G(ws, G.canonical_labels(2))
    for key, shape in expected_shapes(cfg, 2, cfg.neural_resolution).items():
        t = getattr(out, key)
        assert t.shape == shape and t.dtype == torch.float32 and torch.isfinite(t).all(), key
    assert (out.opacity >= 0).all() and (out.opacity <= 1 + 1e-6).all()
    assert (out.depth >= cfg.ray_near - 1e-5).all() and (out.depth <= cfg.ray_far + 1e-5).all()
    assert out.features_raw.abs().max() <= 1.0
    assert torch.equal(out.image_raw, out.features_raw[:, :3])
    # semantic_raw is a log-distribution (composited probabilities + background).
    assert torch.allclose(out.semantic_raw.exp().sum(1), torch.ones(2, 16, 16), atol=1e-4)


@pytest.mark.slow
def test_real_forward_default_batch_one():
    G = Generator("default").eval()
    with torch.no_grad():
        ws = G.codes_from_seeds([3])
        out = G(ws, G.canonical_labels(1))
    assert out.image.shape == (1, 3, 256, 256) and torch.isfinite(out.image).all()
    assert out.semantic.shape == (1, 19, 256, 256) and torch.isfinite(out.semantic).all()


def test_config_validation_and_json_round_trip():
    for cfg in CONFIGS.values():
        assert GeneratorConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        GeneratorConfig.from_dict({**CONFIGS["tiny"].to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="plane_axes"):
        dataclasses.replace(CONFIGS["tiny"], plane_axes=("xy", "yz", "ab"))
    with pytest.raises(ValueError, match="aggregation"):
        dataclasses.replace(CONFIGS["tiny"], aggregation="max")
    with pytest.raises(ValueError, match="unknown generator config"):
        Generator("huge")
    G = Generator("tiny")
    with pytest.raises(ValueError, match="ws must be"):
        G.planes(torch.zeros(1, 3, G.w_dim))
