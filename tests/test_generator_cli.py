# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d generate`` end to end on the tiny config: files, label encoding, codes."""
import argparse

import numpy as np
import pytest
from PIL import Image

from ide3d_core import labels
from ide3d_core.cli import UserError
from ide3d_core.commands import generate
from ide3d_core.commands.generate import parse_seeds
from ide3d_core.networks import Generator, save_generator


def main(argv):
    """``ide3d`` with only this sub-command registered (independent of the other command modules),
    with the dispatcher's error contract: UserError -> exit code 2."""
    parser = argparse.ArgumentParser(prog="ide3d")
    generate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError:
        return 2


def test_generate_is_registered_in_the_cli():
    from ide3d_core.cli import COMMAND_MODULES

    assert "ide3d_core.commands.generate" in COMMAND_MODULES


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]
    for bad in ("a", "3-1", "-2", ""):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_generate_untrained_tiny(tmp_path, capsys):
    rc = main(["generate", "--config", "tiny", "--seeds", "0-1", "--yaw", "0", "30", "--pitch", "5",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert "UNTRAINED" in capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "seed0000_ws.npy" in names and "seed0001_yaw+30_pitch+5_seg.png" in names
    assert len(names) == 2 * (1 + 2 * 3)
    img = Image.open(tmp_path / "seed0001_yaw+30_pitch+5.png")
    assert img.mode == "RGB" and img.size == (32, 32)
    ids = np.asarray(Image.open(tmp_path / "seed0001_yaw+30_pitch+5_labels.png"))
    assert ids.ndim == 2 and ids.max() < 19
    seg = np.asarray(Image.open(tmp_path / "seed0001_yaw+30_pitch+5_seg.png"))
    assert np.array_equal(seg, labels.colorize(ids))
    ws = np.load(tmp_path / "seed0001_ws.npy")
    G = Generator("tiny", seed=0)
    assert np.allclose(ws, G.codes_from_seeds([1], truncation_psi=0.7)[0].detach().numpy(), atol=1e-6)


def test_generate_from_saved_model_and_errors(tmp_path):
    save_generator(Generator("tiny", seed=2), tmp_path / "m")
    assert main(["generate", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert (tmp_path / "o" / "seed0000_yaw+0_pitch+0_labels.png").is_file()
    assert main(["generate", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert main(["generate", "--model", str(tmp_path / "m"), "--config", "tiny",
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["generate", "--seeds", "x", "--out", str(tmp_path / "o")]) == 2


def test_generate_without_a_model_fails_like_every_command(tmp_path, monkeypatch, capsys):
    """No bundled model and no --model: an error naming --model (no silent untrained fallback)."""
    from ide3d_core import model_loading
    from ide3d_core.cli import main as ide3d

    monkeypatch.setattr(model_loading, "BUNDLED_MODEL_DIR", tmp_path / "stripped")
    for argv in (["generate", "--out", str(tmp_path / "o")],
                 ["mesh", "--seed", "1", "--out", str(tmp_path / "h.glb")]):
        assert ide3d(argv) == 2
        err = capsys.readouterr().err
        assert "no model at" in err and "pass --model" in err, err
