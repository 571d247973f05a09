# SPDX-License-Identifier: GPL-3.0-or-later
"""The latent-driven procedural heads and the supervised distillation objective."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.config import TRAIN_CONFIGS
from training.data import ProceduralSource
from training.loop import train
from training.procedural import LATENT_DRAWS, heads_from_latent
from training.procedural.anatomy import GLASSES_P, HAIR_STYLE_P, HAT_P, MOUTH_OPEN_P


def test_latent_heads_follow_the_declared_probabilities():
    """z ~ N(0, I) must give the trait frequencies the anatomy module declares (independent truth:
    its probability tables), so distilling heads_from_latent teaches the real data distribution."""
    z = torch.randn(3000, LATENT_DRAWS, generator=torch.Generator().manual_seed(3))
    traits = heads_from_latent(z).traits
    for name, probs in (("hair_style", HAIR_STYLE_P), ("hat", HAT_P), ("glasses", GLASSES_P)):
        freq = np.bincount(traits[name].numpy(), minlength=len(probs)) / len(z)
        np.testing.assert_allclose(freq, np.asarray(probs) / sum(probs), atol=0.03, err_msg=name)
    assert abs(traits["mouth_open"].float().mean().item() - MOUTH_OPEN_P) < 0.03


def test_each_latent_coordinate_drives_its_own_draw():
    z = torch.randn(4, 512, generator=torch.Generator().manual_seed(0))
    a, b = heads_from_latent(z), heads_from_latent(z.clone())
    assert torch.equal(a.centre, b.centre) and torch.equal(a.colour1, b.colour1)
    z2 = z.clone()
    z2[:, 0] = -z2[:, 0] + 3.0          # the first draw is the hair style
    assert not torch.equal(heads_from_latent(z2).traits["hair_style"], a.traits["hair_style"])
    z3 = z.clone()
    z3[:, LATENT_DRAWS:] = 7.0           # coordinates past the draws are ignored
    assert torch.equal(heads_from_latent(z3).centre, a.centre)
    with pytest.raises(ValueError, match="z must be"):
        heads_from_latent(torch.zeros(2, LATENT_DRAWS - 1))


def test_distillation_lowers_every_loss_and_resumes(tmp_path):
    torch.set_num_threads(1)
    cfg = TRAIN_CONFIGS["tiny-distill"].replace(kimg=0.24, log_steps=10, checkpoint_steps=30)
    src = ProceduralSource(32, 0, torch.device("cpu"))
    first = train(cfg, src, tmp_path / "run", stop_at_step=30)
    assert first.step == 30 and first.checkpoint.exists()
    done = train(cfg, src, tmp_path / "run", resume=True)
    assert done.step == 60 and done.finished
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "distill/density_bce" in r]
    for key in ("distill/density_bce", "distill/semantic_ce", "distill/colour_l1"):
        assert rows[-1][key] < rows[0][key], key
    assert "loss/D" not in rows[-1]       # no discriminator step in this objective
    assert (tmp_path / "run" / "generator" / "config.json").exists()


def test_init_from_starts_a_run_from_saved_weights(tmp_path):
    """``--init-from`` (continue the bundled model when its run folder is gone): step 0 of the new run
    exports exactly the weights it was given (float16 round trip)."""
    from ide3d_core.cli import main
    from ide3d_core.networks import Generator, load_generator, save_generator

    torch.set_num_threads(1)
    src = Generator("tiny", seed=5)
    save_generator(src, tmp_path / "gen", dtype=torch.float16)
    rc = main(["train", "--config", "tiny-distill", "--data", "procedural", "--out", str(tmp_path / "run"),
               "--init-from", str(tmp_path / "gen"), "--stop-at-step", "0", "--quiet"])
    assert rc == 0
    a, b = load_generator(tmp_path / "gen"), load_generator(tmp_path / "run" / "generator")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert (tmp_path / "run" / "init_from.json").exists()
    rc = main(["train", "--config", "tiny-distill", "--data", "procedural", "--out", str(tmp_path / "run2"),
               "--init-from", str(tmp_path / "nowhere"), "--stop-at-step", "0", "--quiet"])
    assert rc == 2
