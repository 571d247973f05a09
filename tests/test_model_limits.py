# SPDX-License-Identifier: GPL-3.0-or-later
"""Untrusted model folders: every generator config field typed and bounded, a memory estimate checked
before anything is allocated, and the weights' header checked before the weights are read."""
from __future__ import annotations

import json

import pytest
import torch

from ide3d_core import model_loading as ml
from ide3d_core.networks import CONFIGS, Generator, save_generator
from ide3d_core.networks.config import FIELD_LIMITS, MAX_MODEL_BYTES, ConfigError, GeneratorConfig


def _folder_with(tmp_path, **changes):
    save_generator(Generator("tiny"), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"].update(changes)
    (tmp_path / "config.json").write_text(json.dumps(meta))
    return tmp_path


@pytest.mark.parametrize("name", sorted(FIELD_LIMITS))
def test_every_numeric_field_is_typed_and_bounded(name):
    base = CONFIGS["tiny"].to_dict()
    kind, lo, hi = FIELD_LIMITS[name]
    for bad in ("512", None, True, [1], 10 ** 9 if hi < 10 ** 9 else -1, float("nan")):
        with pytest.raises(ConfigError, match=rf"^generator config: {name} must be an? (integer|number) in \[") as e:
            GeneratorConfig.from_dict({**base, name: bad})
        assert "\n" not in str(e.value)
    if kind is int:
        with pytest.raises(ConfigError, match=name):
            GeneratorConfig.from_dict({**base, name: float(base[name]) + 0.5})


@pytest.mark.parametrize("field,value", [("plane_axes", ["xy", "yz", 3]), ("plane_axes", "xyz"),
                                         ("aggregation", 7), ("sr_channels", [16, "8"]),
                                         ("sr_channels", [16, 10 ** 9]), ("sr_channels", [16])])
def test_non_numeric_fields_are_typed(field, value):
    with pytest.raises(ConfigError, match=field.split("[")[0]):
        GeneratorConfig.from_dict({**CONFIGS["tiny"].to_dict(), field: value})


def test_a_config_must_be_an_object():
    with pytest.raises(ConfigError, match="JSON object"):
        GeneratorConfig.from_dict([1, 2])


def test_parameter_estimate_matches_the_built_generator():
    # Outside truth: the parameter count of the modules actually built from the config.
    for name in ("tiny", "default"):
        cfg = CONFIGS[name]
        real = sum(t.numel() for t in Generator(cfg).state_dict().values()) * 4
        params, act = cfg.memory_estimate()
        assert abs(params - real) / real < 0.01, name
        assert act > 0
    paper = sum(CONFIGS["paper"].memory_estimate())
    assert paper < MAX_MODEL_BYTES  # the paper's model is always accepted


def test_a_config_inside_every_field_limit_can_still_be_refused_for_memory(tmp_path):
    big = dict(channel_max=4096, channel_base=1 << 20, head_channel_max=4096, head_channel_base=1 << 20,
               plane_resolution=2048, shared_resolution=256, semantic_plane_channels=512,
               texture_plane_channels=512, img_resolution=4096, neural_resolution=2048)
    cfg = GeneratorConfig.from_dict({**CONFIGS["tiny"].to_dict(), **big})  # every field in range
    with pytest.raises(ConfigError, match=r"GiB of parameters .* above the 12 GiB limit"):
        cfg.check_memory()
    folder = _folder_with(tmp_path, **big)
    with pytest.raises(ml.ModelError, match="above the 12 GiB limit"):
        ml.load_base_generator(str(folder), "cpu")


@pytest.mark.parametrize("changes,message", [
    ({"channel_max": 10 ** 9}, r"channel_max must be an integer in \[1, 4096\], got 1000000000"),
    ({"w_dim": 10 ** 9}, r"w_dim must be an integer in \[1, 4096\]"),
    ({"plane_resolution": 2 ** 20}, r"plane_resolution must be an integer in \[16, 2048\]"),
    ({"z_dim": "32"}, r"z_dim must be an integer"),
    ({"ray_near": float("inf")}, r"ray_near must be a number"),
])
def test_hostile_model_folders_fail_with_one_line_naming_the_field(tmp_path, changes, message):
    folder = _folder_with(tmp_path, **changes)
    with pytest.raises(ml.ModelError, match=message) as e:
        ml.load_base_generator(str(folder), "cpu")
    assert "\n" not in str(e.value)


def test_config_files_are_bounded_in_size_and_depth(tmp_path):
    save_generator(Generator("tiny"), tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ml.ModelError, match="nested too deeply|at most"):
        ml.load_base_generator(str(tmp_path), "cpu")
    (tmp_path / "config.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(ml.ModelError, match="a config is at most"):
        ml.load_base_generator(str(tmp_path), "cpu")
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ml.ModelError, match="not valid JSON"):
        ml.load_base_generator(str(tmp_path), "cpu")


def test_weights_header_is_checked_before_the_data_is_read(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_generator(Generator("tiny"), tmp_path)
    state = Generator("tiny").state_dict()
    name = sorted(state)[0]
    bad = {k: v.contiguous() for k, v in state.items()}
    bad[name] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "generator.safetensors"))
    import safetensors.torch

    def never(*a, **k):  # the data must not be read when the header already disagrees
        raise AssertionError("load_file called")

    monkeypatch.setattr(safetensors.torch, "load_file", never)
    with pytest.raises(ml.ModelError, match="mis-shaped weights"):
        ml.load_base_generator(str(tmp_path), "cpu")
    (tmp_path / "generator.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(ml.ModelError, match="not a readable safetensors file"):
        ml.load_base_generator(str(tmp_path), "cpu")


def test_encoder_configs_from_a_model_folder_are_bounded_too(tmp_path):
    from ide3d_core.encoders import HybridEncoder, PRESETS, save_encoder

    save_encoder(HybridEncoder(PRESETS["tiny"]), tmp_path / "encoders" / "standard")
    save_generator(Generator("tiny"), tmp_path)
    path = tmp_path / "encoders" / "standard" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["max_channels"] = 10 ** 9
    path.write_text(json.dumps(meta))
    with pytest.raises(ml.ModelError, match=r"max_channels must be a bool, an integer in \[-4096, 4096\]"):
        ml.load_model_encoder(str(tmp_path), "standard", "cpu")
    meta["config"]["max_channels"] = "32"
    path.write_text(json.dumps(meta))
    with pytest.raises(ml.ModelError, match="max_channels"):
        ml.load_model_encoder(str(tmp_path), "standard", "cpu")
