# SPDX-License-Identifier: GPL-3.0-or-later
"""The adversarial super-resolution polish on the tiny model: it changes the super-resolution only,
keeps the checkpoint's step, and a second sitting resumes the discriminator it left."""
import pytest
import torch

from ide3d_core.networks import Generator, save_generator
from ide3d_core.progress import CancelToken
from training.autodecoder.bank import BankSpec, build_bank
from training.autodecoder.loop import AutoDecoderConfig, train
from training.autodecoder.sr_adversarial import (STATE_FILE, AdversarialPolishConfig, DiscriminatorStateError,
                                                 PatchDiscriminator, discriminator_input, feature_matching,
                                                 polish_superresolution_adversarial, r1_patch)
from training.checkpoint import latest_checkpoint, load_checkpoint

SPEC = BankSpec(size=4, uniform_points=64, surface_points=128, colour_points=64, views=2, low_resolution=16,
                high_resolution=16)
CFG = AdversarialPolishConfig(batch=2, channels=(8, 16), r1_interval=2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sradv")
    save_generator(Generator("tiny"), root / "init")
    run = root / "run"
    build_bank(run / "bank", SPEC)
    cfg = AutoDecoderConfig(bank=SPEC, init_from=str(root / "init"), point_batch=64, colour_batch=32, rays=32,
                            sr_interval=2, batch=2, log_steps=1, bf16=False)
    train(run, cfg, max_steps=2)
    return run


def polish(run, steps: int, cfg=CFG) -> dict:
    """A sitting of exactly ``steps`` polish steps (cancelled by its progress callback)."""
    cancel = CancelToken()

    def progress(done, total, message):
        if message.startswith("adversarial") and done >= steps:
            cancel.cancel()

    return polish_superresolution_adversarial(run, minutes=5.0, cfg=cfg, progress=progress, cancel=cancel)


def test_polish_changes_only_the_super_resolution_and_resumes_its_discriminator(tiny_run):
    before, state0 = load_checkpoint(latest_checkpoint(tiny_run / "checkpoints"))
    first = polish(tiny_run, 3)
    after, state1 = load_checkpoint(latest_checkpoint(tiny_run / "checkpoints"))
    assert first["steps"] == 3 and state1["step"] == state0["step"] == 2
    assert first["target_resolution"] == 32  # the tiny model's output, not the bank's 16 px view
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("G/superresolution.") for k in changed), sorted(changed)[:5]
    assert any("rgb" in k for k in changed)  # the image head itself learnt

    saved, info = load_checkpoint(tiny_run / STATE_FILE)
    assert info["steps"] == 3 and info["checkpoint_step"] == 2
    fresh = PatchDiscriminator(6, CFG.channels, CFG.seed)
    assert not torch.equal(saved["D/layers.0.weight"], fresh.layers[0].weight)  # the discriminator trained

    second = polish(tiny_run, 2)
    assert second["steps"] == 2 and second["total_steps"] == 5
    saved2, info2 = load_checkpoint(tiny_run / STATE_FILE)
    assert info2["steps"] == 5
    # resumed, not restarted: two more Adam steps from the saved weights stay close to them, much closer
    # than the saved weights are to a fresh start
    moved = (saved2["D/layers.0.weight"] - saved["D/layers.0.weight"]).abs().max()
    assert moved < (saved["D/layers.0.weight"] - fresh.layers[0].weight).abs().max()

    with pytest.raises(DiscriminatorStateError):  # another architecture is refused, not silently reset
        polish(tiny_run, 1, AdversarialPolishConfig(batch=2, channels=(8, 16, 16)))


def test_discriminator_parts_against_hand_computed_values():
    img = torch.zeros(2, 3, 8, 8)
    low = torch.full((2, 3, 4, 4), 0.5)
    x = discriminator_input(img, low)
    assert x.shape == (2, 6, 8, 8) and torch.all(x[:, 3:] == 0.5)  # a constant upsamples to itself
    feats = [torch.ones(2, 4, 4, 4), torch.zeros(2, 8, 2, 2)]
    assert float(feature_matching(feats, [f + 0.25 for f in feats])) == pytest.approx(0.25)
    # one 4x4 stride-2 convolution of constant weight c (bias 10 keeps the leaky ReLU linear) read out
    # by a 3x3 convolution with only its centre tap: d sum(logits) / dx = c x the number of windows that
    # cover the pixel, per axis [1, 2, 2, 2, 2, 2, 2, 1] on 8 px (padding 1), so R1 = 6 c^2 (1+6*4+1)^2 / 16
    # per patch (4 x 4 logits)
    d = PatchDiscriminator(6, (1,), seed=1)
    c = 0.01
    with torch.no_grad():
        d.layers[0].weight.fill_(c)
        d.layers[0].bias.fill_(10.0)
        d.out.weight.zero_()
        d.out.weight[0, 0, 1, 1] = 1.0
    assert float(r1_patch(d, x).detach()) == pytest.approx(6 * c**2 * 26**2 / 16, rel=1e-5)
    logits, hidden = PatchDiscriminator(6, (4, 8), seed=0)(torch.zeros(1, 6, 16, 16))
    assert logits.shape == (1, 1, 4, 4) and [h.shape[1] for h in hidden] == [4, 8]
