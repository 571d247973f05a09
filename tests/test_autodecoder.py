# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto-decoder recipe on the tiny model: the bank's targets against the exact procedural field, a
few steps that lower the losses, exact resume, and an exported generator whose seeds draw from the prior."""
import json

import numpy as np
import pytest
import torch

from ide3d_core.cameras import canonical_camera
from ide3d_core.networks import Generator, load_generator, save_generator
from ide3d_core.networks.prior import CodePrior
from training.autodecoder.bank import BankSpec, bank_latents, build_bank, load_bank
from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, Trainer, train
from training.autodecoder.prior import export_run

SPEC = BankSpec(size=4, uniform_points=64, surface_points=128, colour_points=64, views=2, low_resolution=16,
                high_resolution=16)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ad")
    save_generator(Generator("tiny"), root / "init")
    build_bank(root / "bank", SPEC)
    return root


def new_run(folder, tiny_dir):
    """A run folder sharing the module's bank (cached once)."""
    folder.mkdir()
    (folder / "bank").symlink_to(tiny_dir / "bank")
    return folder


def cfg_for(root) -> AutoDecoderConfig:
    return AutoDecoderConfig(bank=SPEC, init_from=str(root / "init"), point_batch=64, colour_batch=32, rays=32,
                             sr_interval=2, batch=2, log_steps=1, bf16=False)


def test_bank_targets_match_the_exact_field(tiny_dir):
    from training.procedural import heads_from_latent, median_padded
    from training.procedural.mesh import head_field

    bank = load_bank(tiny_dir / "bank", SPEC)
    assert torch.equal(bank["z"], bank_latents(SPEC))
    heads = heads_from_latent(median_padded(bank["z"]))
    for i in range(SPEC.size):
        v, prim = head_field(heads.index(slice(i, i + 1)), bank["geo_pts"][i])
        assert torch.equal((v > 0).to(torch.uint8), bank["geo_occ"][i])
        assert torch.equal(heads.label[prim].to(torch.uint8), bank["geo_cls"][i])
    # near-surface points straddle the surface; colour points sit just inside it
    surf = bank["geo_occ"][:, SPEC.uniform_points:].float().mean()
    assert 0.25 < float(surf) < 0.75
    v, _ = head_field(heads.index(slice(0, 1)), bank["col_pts"][0])
    assert float((v > -1e-4).float().mean()) > 0.95
    # class balance: the small parts are not a few percent of the surface points
    cls = bank["geo_cls"][:, SPEC.uniform_points:]
    eyes = ((cls == 4) | (cls == 5)).float().mean()
    lab = bank["lab64"][bank["lab64"] > 0]
    assert float(eyes) > 3 * float(((lab == 4) | (lab == 5)).float().mean())


def test_training_lowers_the_losses_and_resumes_exactly(tiny_dir, tmp_path):
    cfg = cfg_for(tiny_dir)
    run_a = new_run(tmp_path / "a", tiny_dir)
    train(run_a, cfg, max_steps=4)
    run_b = new_run(tmp_path / "b", tiny_dir)
    train(run_b, cfg, max_steps=2)
    train(run_b, None, max_steps=4)  # a new sitting: resumes from the checkpoint
    from training.checkpoint import latest_checkpoint, load_checkpoint

    ta, _ = load_checkpoint(latest_checkpoint(run_a / "checkpoints"))
    tb, _ = load_checkpoint(latest_checkpoint(run_b / "checkpoints"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert json.loads((run_b / CONFIG_FILE).read_text())["bank"]["size"] == SPEC.size

    # on one fixed batch, steps lower the point losses
    bank = load_bank(tiny_dir / "bank", SPEC)
    tr = Trainer(tmp_path / "c", cfg, bank)
    first, _ = tr.losses(1)
    for _ in range(30):
        tr.opt.zero_grad(), tr.opt_codes.zero_grad()
        loss, _ = tr.losses(1)
        loss.backward()
        tr.opt.step(), tr.opt_codes.step()
    last, _ = tr.losses(1)
    assert float(last.detach()) < 0.8 * float(first.detach())


def test_export_draws_new_heads_from_the_prior(tiny_dir, tmp_path):
    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=2)
    out = export_run(run, tmp_path / "model", dim=2, components=1)
    G = load_generator(out)
    assert isinstance(G.mapping, CodePrior) and G.config.code_prior_dim == 2
    with torch.no_grad():
        ws = G.codes_from_seeds([0, 1, 2])
        assert torch.equal(ws, G.codes_from_seeds([0, 1, 2]))
        assert not torch.allclose(ws[0], ws[1])
        # the mean code of the export is the mean of the learned codes (float16 weights)
        from training.autodecoder.prior import run_codes

        _, codes, _ = run_codes(run)
        assert np.allclose(G.mapping.mean.numpy(), codes.mean(0).numpy(), atol=2e-3)
        out_img = G(ws, G.canonical_labels(3)).image
        assert out_img.shape == (3, 3, 32, 32) and torch.isfinite(out_img).all()


def test_encoder_bank_pairs_exact_renders_with_learned_codes(tiny_dir, tmp_path):
    from training.autodecoder.loop import codes_to_ws
    from training.autodecoder.prior import run_codes
    from training.encoders import EncoderTrainingPolicy, concat_banks, render_autodecoder_bank
    from training.procedural import heads_from_latent, median_padded, render_heads

    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=1)
    G = Generator("tiny")
    bank = render_autodecoder_bank(G, run, views=1, resolution=16, canonical=True, policy=EncoderTrainingPolicy())
    _, codes, _ = run_codes(run)
    assert torch.equal(bank.ws, codes_to_ws(codes.float(), G))
    front = torch.from_numpy(canonical_camera().label()).expand(SPEC.size, 25)
    exact = render_heads(heads_from_latent(median_padded(bank_latents(SPEC))), front, 16)
    assert torch.equal(bank.masks[:, 0], exact.labels.to(torch.uint8))
    both = concat_banks(bank, bank)
    assert len(both) == 2 * SPEC.size


def test_super_resolution_polish_changes_only_the_super_resolution(tiny_dir, tmp_path):
    from training.autodecoder.sr_polish import polish_superresolution
    from training.checkpoint import latest_checkpoint, load_checkpoint

    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=2)
    before, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    summary = polish_superresolution(run, minutes=0.05, batch=2)
    after, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert summary["steps"] > 0 and state["step"] == 2
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("G/superresolution.") for k in changed), sorted(changed)[:5]
    assert summary["target_resolution"] == 32  # the tiny model's output, not the bank's 16 px view


def test_output_views_are_the_bank_heads_exact_renders_from_the_bank_cameras(tiny_dir):
    """At the bank's own high resolution the output views must reproduce its 128-px-slot view exactly
    (same head, same camera, same renderer); at another resolution they are new renders of it."""
    from training.autodecoder.output_views import build_output_views, load_output_views

    bank = load_bank(tiny_dir / "bank", SPEC)
    r = SPEC.high_resolution
    build_output_views(tiny_dir / "bank", SPEC, bank["cam128"], r)
    views = load_output_views(tiny_dir / "bank", SPEC, r)
    assert torch.equal(views["img"], bank["img128"]) and torch.equal(views["lab"], bank["lab128"])
    assert load_output_views(tiny_dir / "bank", SPEC, 24) is None
    with pytest.raises(ValueError):
        build_output_views(tiny_dir / "bank", SPEC, bank["cam128"][:2], 24)


def test_a_new_run_can_start_from_an_exported_model(tiny_dir, tmp_path):
    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=1)
    out = export_run(run, tmp_path / "model", dim=2, components=1)
    bank = load_bank(tiny_dir / "bank", SPEC)
    tr = Trainer(tmp_path / "next", AutoDecoderConfig(**{**cfg_for(tiny_dir).__dict__, "init_from": str(out)}), bank)
    start = load_generator(out)
    with torch.no_grad():
        ws = start.mapping(bank["z"][:, :start.z_dim], start.canonical_labels(SPEC.size))
    assert torch.allclose(tr.codes.codes[:, 0], ws[:, 0]) and torch.allclose(tr.codes.codes[:, 1], ws[:, -1])
    assert not isinstance(tr.G.mapping, CodePrior)  # training keeps one checkpoint layout
    for (k, a), b in zip(tr.G.synthesis.state_dict().items(), start.synthesis.state_dict().values()):
        assert torch.equal(a, b), k


def test_learning_rate_schedule_decays_by_step_and_can_be_set_on_an_existing_run(tiny_dir, tmp_path):
    import dataclasses
    import math

    from training.autodecoder.loop import lr_factor

    cfg = dataclasses.replace(cfg_for(tiny_dir), decay_start=10, decay_steps=20, decay_floor=0.1)
    assert lr_factor(0, cfg) == 1.0 and lr_factor(10, cfg) == 1.0
    assert math.isclose(lr_factor(20, cfg), 0.55)  # half-way down the half cosine
    assert math.isclose(lr_factor(30, cfg), 0.1) and math.isclose(lr_factor(500, cfg), 0.1)
    assert lr_factor(10**6, dataclasses.replace(cfg, decay_start=0)) == 1.0

    # an existing run takes a new schedule from the command line; its optimisers then follow the step
    from ide3d_core.cli import main

    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=2)
    assert main(["train-autodecoder", "--out", str(run), "--steps", "4", "--decay-start", "2", "--decay-steps",
                 "1", "--decay-floor", "0.25"]) == 0
    saved = AutoDecoderConfig.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    assert (saved.decay_start, saved.decay_steps, saved.decay_floor) == (2, 1, 0.25)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["lr_factor"] for r in rows[-2:]] == [1.0, 0.25]

    # a config written before the schedule existed still loads, with a constant rate
    old = {k: v for k, v in cfg_for(tiny_dir).to_dict().items() if k not in ("decay_start", "decay_steps",
                                                                          "decay_floor")}
    assert AutoDecoderConfig.from_dict(old).decay_start == 0


def test_a_non_finite_batch_is_skipped_and_only_a_run_of_them_stops_training(tiny_dir, tmp_path):
    from training.autodecoder.loop import MAX_SKIPPED_IN_A_ROW

    tr = Trainer(tmp_path / "run", cfg_for(tiny_dir), load_bank(tiny_dir / "bank", SPEC))
    real = tr.losses
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    tr.losses = lambda step: (torch.tensor(float("nan")), {"ray_semantic": float("nan")})
    assert tr.train_step() == {"skipped": 1.0} and tr.step == 1
    assert all(torch.equal(before[k], v) for k, v in tr.G.state_dict().items())  # no update
    tr.losses = real
    assert "loss" in tr.train_step() and tr.skipped_in_a_row == 0 and tr.step == 2
    tr.losses = lambda step: (torch.tensor(float("inf")), {})
    for _ in range(MAX_SKIPPED_IN_A_ROW):
        tr.train_step()
    with pytest.raises(FloatingPointError, match="in a row"):
        tr.train_step()


def test_a_restarted_run_can_take_its_codes_from_the_models_standard_encoder(tiny_dir, tmp_path):
    import dataclasses

    from ide3d_core.encoders import HybridEncoder, config_for_generator, save_encoder

    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg_for(tiny_dir), max_steps=1)
    out = export_run(run, tmp_path / "model", dim=2, components=1)
    bank = load_bank(tiny_dir / "bank", SPEC)
    cfg = dataclasses.replace(cfg_for(tiny_dir), init_from=str(out), init_codes="encoder")
    with pytest.raises(ValueError, match="encoders/standard"):
        Trainer(tmp_path / "a", cfg, bank)  # no encoder in the folder: one clear line

    G = load_generator(out)
    w_avg = torch.randn(G.w_dim)
    enc = HybridEncoder(config_for_generator(G, "tiny"), w_avg=w_avg)
    with torch.no_grad():  # heads that predict nothing: every code is the encoder's average code, exactly
        enc.texture.head.weight.zero_(), enc.texture.head.bias.zero_()
        enc.semantic.head.weight.zero_(), enc.semantic.head.bias.zero_()
    save_encoder(enc, out / "encoders" / "standard")
    codes = Trainer(tmp_path / "b", cfg, bank).codes.codes
    assert torch.allclose(codes, w_avg.expand(SPEC.size, 2, -1))

    enc = HybridEncoder(config_for_generator(G, "tiny"), w_avg=w_avg, seed=3)  # a head-dependent prediction
    save_encoder(enc, out / "encoders" / "standard")
    codes = Trainer(tmp_path / "c", cfg, bank).codes.codes
    with torch.no_grad():
        ws, _ = enc(bank["img128"].float(), bank["lab128"].long())
    k = G.num_shape_ws
    assert torch.allclose(codes[:, 0], ws[:, :k].mean(1), atol=1e-6)
    assert torch.allclose(codes[:, 1], ws[:, k:].mean(1), atol=1e-6)
    assert not torch.allclose(codes[0], codes[1])
    with pytest.raises(ValueError, match="init_codes"):
        dataclasses.replace(cfg, init_codes="random")


def test_a_run_resumes_after_its_starting_model_gains_a_background(tiny_dir, tmp_path):
    """A run names its starting model folder (the bundled model, for the shipped runs). When that folder's
    generator later gains an environment background (``ide3d train-background``), the run must still
    resume from its checkpoint: the loop trains the field and the super-resolution, never the background,
    so its generator has none whatever the starting model has."""
    import dataclasses

    init = tmp_path / "init"
    save_generator(Generator("tiny"), init)
    cfg = dataclasses.replace(cfg_for(tiny_dir), init_from=str(init))
    run = new_run(tmp_path / "run", tiny_dir)
    train(run, cfg, max_steps=2)
    with_bg = Generator(dataclasses.replace(load_generator(init).config, background_hidden=8))
    with_bg.load_state_dict(load_generator(init).state_dict(), strict=False)
    save_generator(with_bg, init)  # the starting model gains a background after the run began
    train(run, None, max_steps=3)  # resumes
    from training.checkpoint import latest_checkpoint, load_checkpoint

    tensors, meta = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert meta["step"] == 3
    assert not any(k.startswith("G.background.") for k in tensors)
    # and its export has no background either (not one with freshly initialised weights)
    exported = load_generator(export_run(run, tmp_path / "exported", dim=2, components=1))
    assert exported.config.background_hidden == 0
    assert not any(k.startswith("background.") for k in exported.state_dict())


def test_a_bank_built_in_parts_equals_one_built_at_once(tiny_dir, tmp_path, monkeypatch):
    """Several processes build one bank chunk by chunk (a GPU sitting's CPU cores): a chunk depends only on
    the spec and its number, so any split gives the files one process writes."""
    import training.autodecoder.bank as bank_module

    whole = load_bank(tiny_dir / "bank", SPEC)  # one chunk
    monkeypatch.setattr(bank_module, "CHUNK", 2)  # 2 chunks of the 4-head spec
    build_bank(tmp_path / "parts", SPEC, chunks=[1])
    build_bank(tmp_path / "parts", SPEC, chunks=[0])
    parts = load_bank(tmp_path / "parts", SPEC)
    assert whole.keys() == parts.keys()
    for k in whole:
        assert torch.equal(whole[k], parts[k]), k
    with pytest.raises(ValueError, match="chunk 2"):
        build_bank(tmp_path / "parts", SPEC, chunks=[2])


def test_several_super_resolution_heads_a_step(tiny_dir, tmp_path):
    """``sr_heads`` > 1 (a GPU sitting's big batches): the SR losses average over that many heads and the
    step still lowers them; more than the batch is refused."""
    import dataclasses

    cfg = dataclasses.replace(cfg_for(tiny_dir), sr_interval=1, sr_heads=2)
    tr = Trainer(tmp_path / "c", cfg, load_bank(tiny_dir / "bank", SPEC))
    first = tr.losses(0)[1]["sr_image"]
    for _ in range(15):
        tr.opt.zero_grad(), tr.opt_codes.zero_grad()
        tr.losses(0)[0].backward()
        tr.opt.step(), tr.opt_codes.step()
    assert tr.losses(0)[1]["sr_image"] < first
    with pytest.raises(ValueError, match="sr_heads"):
        dataclasses.replace(cfg, sr_heads=3)


def test_bf16_autocast_only_where_it_is_native(tiny_dir, tmp_path, monkeypatch):
    """``bf16`` in a run's config is honoured only on devices with native bf16: on an AVX2-only CPU (AMD
    Zen 3) oneDNN's emulated bf16 made a step about 40 times slower than float32."""
    import dataclasses

    import training.autodecoder.loop as loop

    cfg = dataclasses.replace(cfg_for(tiny_dir), bf16=True)
    bank = load_bank(tiny_dir / "bank", SPEC)
    monkeypatch.setattr(loop, "bf16_is_native", lambda device: False)
    assert Trainer(tmp_path / "a", cfg, bank).bf16 is False
    monkeypatch.setattr(loop, "bf16_is_native", lambda device: True)
    assert Trainer(tmp_path / "b", cfg, bank).bf16 is True
    assert Trainer(tmp_path / "c", dataclasses.replace(cfg, bf16=False), bank).bf16 is False
