# SPDX-License-Identifier: GPL-3.0-or-later
"""Model specs ("" bundled | "config:NAME" | folder), devices and loading in one place."""
from __future__ import annotations

import pytest
import torch

from ide3d_core import model_loading as ml
from ide3d_core.encoders import HybridEncoder, config_for_generator, save_encoder
from ide3d_core.networks import Generator, save_generator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_generator(Generator("tiny", seed=2), folder)
    return folder


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_specs_name_folders(tmp_path):
    assert ml.model_folder("") == ml.BUNDLED_MODEL_DIR
    assert ml.BUNDLED_MODEL_DIR.parts[-3:] == ("ide3d_core", "models", "default")
    assert ml.model_folder("config:tiny") is None and ml.config_name("config:tiny") == "tiny"
    (tmp_path / "config.json").write_text("{}")
    assert ml.model_folder(str(tmp_path / "config.json")) == tmp_path  # a file stands for its folder
    assert ml.model_folder(str(tmp_path)) == tmp_path
    assert "bundled" in ml.describe("") and ml.describe("config:tiny") == "config:tiny"


def test_untrained_config_is_seed_zero_frozen_and_warns():
    warnings = []
    g = ml.load_base_generator("config:tiny", "cpu", warn=warnings.append)
    assert _same_weights(g, Generator("tiny", seed=0))
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    assert len(warnings) == 1 and "UNTRAINED" in warnings[0]
    with pytest.raises(ml.ModelError, match="unknown generator config 'nope'"):
        ml.load_base_generator("config:nope", "cpu")


def test_folder_loads_its_weights_and_bad_folders_fail_in_one_line(model_dir, tmp_path):
    g = ml.load_base_generator(str(model_dir / "generator.safetensors"), torch.device("cpu"))
    assert _same_weights(g, Generator("tiny", seed=2)) and not _same_weights(g, Generator("tiny", seed=0))
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in g.parameters())
    with pytest.raises(ml.ModelError, match="no model at"):
        ml.load_base_generator(str(tmp_path / "nowhere"), "cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    (broken / "generator.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ml.ModelError, match="could not load the model") as err:
        ml.load_base_generator(str(broken), "cpu")
    assert "\n" not in str(err.value)


def test_encoders_are_found_beside_the_model(model_dir, tmp_path):
    assert ml.load_model_encoder("config:tiny", "standard", "cpu") is None
    assert ml.load_model_encoder(str(model_dir), "canonical", "cpu") is None  # none written yet
    g = Generator("tiny", seed=2)
    enc = HybridEncoder(config_for_generator(g, "tiny", canonical=True), g.mapping.w_avg, seed=5)
    save_encoder(enc, tmp_path / "encoders" / "canonical")
    found = ml.load_model_encoder("config:tiny", "canonical", "cpu", encoders=tmp_path / "encoders")
    assert found.config.canonical and _same_weights(found, enc)
    (tmp_path / "encoders" / "canonical" / "encoder.safetensors").write_bytes(b"junk")
    with pytest.raises(ml.ModelError, match="could not load the canonical encoder"):
        ml.load_model_encoder("", "canonical", "cpu", encoders=tmp_path / "encoders")


def test_devices():
    assert ml.resolve_device("cpu") == torch.device("cpu")
    assert ml.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ml.ModelError, match="unknown device 'gpu0'"):
        ml.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ml.ModelError, match="no CUDA device"):
            ml.resolve_device("cuda")
