# SPDX-License-Identifier: GPL-3.0-or-later
"""The folded-modulation twins of the super-resolution and synthesis networks
(:mod:`ide3d_core.fast_networks`) against the reference modules: float32 to float rounding on random
tiny and ``default`` networks (every layer kind: folded, left unfolded, grouped heads, merged outputs),
bfloat16 within the issue-15 bounds (>= 40 dB, >= 99.5 % identical labels) on the bundled model."""
from __future__ import annotations

import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core import fast_networks as fn
from ide3d_core import fast_render as fr
from ide3d_core.model_loading import BUNDLED_MODEL_DIR
from ide3d_core.networks import Generator
from ide3d_core.networks.generator import TriPlanes
from ide3d_core.networks.io import load_generator

needs_model = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="no bundled model")


def _random_generator(config: str) -> Generator:
    G = Generator(config, seed=3).eval().requires_grad_(False)
    with torch.no_grad():  # styles away from 1 and non-zero biases, so every folded factor matters
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return G


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_float32_twins_match_the_reference(config):
    G = _random_generator(config)
    cfg = G.config
    with torch.no_grad():
        ws = G.codes_from_seeds([0, 1], truncation_psi=0.8)
        ref = G.planes(ws)
        sem, tex = fn.synthesize(G.synthesis, ws)
        torch.testing.assert_close(sem, ref.semantic, rtol=1e-4, atol=1e-4 * float(ref.semantic.abs().max()))
        torch.testing.assert_close(tex, ref.texture, rtol=1e-4, atol=1e-4 * float(ref.texture.abs().max()))
        h = cfg.neural_resolution
        g = torch.Generator().manual_seed(1)
        feats = torch.rand(2, cfg.feature_channels, h, h, generator=g) * 2 - 1
        logp = torch.log_softmax(3 * torch.randn(2, cfg.num_classes, h, h, generator=g), 1)
        w_sr = ws[:, cfg.num_shape_ws + cfg.num_head_ws:]
        img_ref, seg_ref = G.superresolution(feats, logp, w_sr)
        img, seg = fn.superresolve(G.superresolution, feats, logp, w_sr)
    assert img.shape == img_ref.shape and seg.shape == seg_ref.shape and img.is_contiguous()
    torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seg, seg_ref, rtol=1e-4, atol=1e-4)


def test_both_layer_kinds_are_used():
    # The default config's 8 and 16 px shape layers stay unfolded (weight larger than the activations),
    # the 32 px and texture-head layers are folded: both branches of fold_or_apply are under test above.
    G = _random_generator("default")
    f = fn.fold_synthesis(G.synthesis, G.codes_from_seeds([0])[0])
    kinds = {type(layer).__name__ for block in f.shape_blocks for layer in block}
    assert kinds == {"FoldedConv", "ModulatedApply"}
    assert f.head_conv.weight.shape[0] == 3 * G.config.head_channels(G.config.shared_resolution)


@needs_model
def test_bfloat16_frames_within_bounds_over_cameras():
    G = load_generator(BUNDLED_MODEL_DIR).requires_grad_(False)
    with torch.no_grad():
        ws = G.codes_from_seeds([5], truncation_psi=0.7)
        ref_planes = G.planes(ws)
        planes = fn.planes(G, ws, torch.bfloat16)
        for yaw, pitch in [(0.0, 0.0), (0.7, 0.2), (-1.2, -0.2), (2.6, 0.1)]:
            c = torch.from_numpy(C.stack_labels([C.orbit_camera(yaw, pitch)]))
            ref = G.render(ref_planes, c, ws, neural_resolution=32)
            out = fr.render_fast(G, TriPlanes(planes.semantic, planes.texture), c, ws, neural_resolution=32,
                                 settings=fr.FastRenderSettings(network_dtype="bfloat16"))
            same = float((ref.semantic.argmax(1) == out.semantic.argmax(1)).float().mean())
            assert fr.psnr(ref.image, out.image) >= 40.0, (yaw, pitch)
            assert same >= 0.995, (yaw, pitch, same)


def test_bad_inputs_raise():
    G = Generator("tiny").eval()
    with pytest.raises(ValueError, match="fast networks run in"):
        fn.fold([G.superresolution.conv00], torch.zeros(G.config.w_dim), torch.float16)
    with pytest.raises(ValueError, match="super-resolution codes"):
        fn.fold_superresolution(G.superresolution, torch.zeros(3, G.config.w_dim))
    with pytest.raises(ValueError, match="network_dtype"):
        fr.FastRenderSettings(network_dtype="half")
    with pytest.raises(ValueError, match="ws must be"):
        fn.planes(G, torch.zeros(1, 2, G.config.w_dim))


def test_a_semantic_logit_bias_shifts_both_twins_by_exactly_its_offsets():
    """``semantic_logit_bias`` (a logit adjustment, scripts/fit_semantic_bias.py) adds its per-class offsets
    to the super-resolved logits of the reference module and of the fast twin alike; weight files are the
    same with or without it, and a bias of the wrong length is refused."""
    import dataclasses

    from ide3d_core.networks.config import ConfigError

    G = _random_generator("tiny")
    k = G.config.num_classes
    offsets = tuple(float(v) for v in torch.linspace(-2.0, 3.0, k))
    B = Generator(dataclasses.replace(G.config, semantic_logit_bias=offsets)).eval().requires_grad_(False)
    B.load_state_dict(G.state_dict())  # strict: the bias is no weight
    cfg, h = G.config, G.config.neural_resolution
    g = torch.Generator().manual_seed(2)
    feats = torch.rand(1, cfg.feature_channels, h, h, generator=g) * 2 - 1
    logp = torch.log_softmax(3 * torch.randn(1, k, h, h, generator=g), 1)
    w_sr = G.codes_from_seeds([0])[:, cfg.num_shape_ws + cfg.num_head_ws:]
    with torch.no_grad():
        _, plain = G.superresolution(feats, logp, w_sr)
        _, biased = B.superresolution(feats, logp, w_sr)
        _, fast = fn.superresolve(B.superresolution, feats, logp, w_sr)
    expected = plain + torch.tensor(offsets).view(1, k, 1, 1)
    torch.testing.assert_close(biased, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="semantic_logit_bias"):
        dataclasses.replace(G.config, semantic_logit_bias=(1.0, 2.0))
    with pytest.raises(ConfigError, match="semantic_logit_bias"):
        dataclasses.replace(G.config, semantic_logit_bias=(float("nan"),) * k)
