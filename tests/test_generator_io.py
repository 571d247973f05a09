# SPDX-License-Identifier: GPL-3.0-or-later
"""Generator save/load: config JSON + safetensors, bit-exact round trip, strict loading."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ide3d_core.networks import Generator, load_generator, save_generator


@pytest.fixture()
def trained_like():
    """A tiny generator whose weights and w_avg differ from a fresh one (so loading must restore them)."""
    G = Generator("tiny", seed=3)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        G.mapping.w_avg.normal_(generator=torch.Generator().manual_seed(4))
    return G


def test_float32_round_trip_is_bit_exact(tmp_path, trained_like):
    save_generator(trained_like, tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", "generator.safetensors"]
    G2 = load_generator(tmp_path / "g")
    assert G2.config == trained_like.config
    sd1, sd2 = trained_like.state_dict(), G2.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    ws = trained_like.codes_from_seeds([1])
    c = trained_like.canonical_labels(1)
    with torch.no_grad():
        assert torch.equal(trained_like(ws, c).image, G2(ws, c).image)


def test_float16_save(tmp_path, trained_like):
    save_generator(trained_like, tmp_path / "h", dtype=torch.float16)
    raw = load_file(str(tmp_path / "h" / "generator.safetensors"))
    assert all(v.dtype == torch.float16 for v in raw.values())
    G2 = load_generator(tmp_path / "h")
    w = trained_like.mapping.embed.weight
    assert G2.mapping.embed.weight.dtype == torch.float32
    assert torch.equal(G2.mapping.embed.weight, w.half().float())


def test_strict_loading(tmp_path, trained_like):
    folder = tmp_path / "g"
    save_generator(trained_like, folder)
    meta = json.loads((folder / "config.json").read_text())

    meta_bad = {**meta, "config": {**meta["config"], "colour": 3}}
    (folder / "config.json").write_text(json.dumps(meta_bad))
    with pytest.raises(ValueError, match="unknown keys"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps({**meta, "format": "eg3d"}))
    with pytest.raises(ValueError, match="not an ide3d-generator"):
        load_generator(folder)
    (folder / "config.json").write_text(json.dumps(meta))

    tensors = load_file(str(folder / "generator.safetensors"))
    save_file({**tensors, "extra.weight": torch.zeros(1)}, str(folder / "generator.safetensors"))
    with pytest.raises(ValueError, match="unexpected weights"):
        load_generator(folder)
    missing = dict(tensors)
    missing.pop("mapping.w_avg")
    save_file(missing, str(folder / "generator.safetensors"))
    with pytest.raises(ValueError, match="missing weights"):
        load_generator(folder)
    wrong = {**tensors, "mapping.w_avg": torch.zeros(3)}
    save_file(wrong, str(folder / "generator.safetensors"))
    with pytest.raises(ValueError, match="mis-shaped"):
        load_generator(folder)
    with pytest.raises(ValueError, match="config.json missing"):
        load_generator(tmp_path / "nothing")
