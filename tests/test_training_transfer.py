# SPDX-License-Identifier: GPL-3.0-or-later
"""Transfer checkpoints (training/transfer.py), ``ide3d train --resume-from/--transfer-out`` and
scripts/gpu_sitting.sh on CPU with ``tiny``; the ``default`` size budget from parameter counts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import checkpoint as ckpt
from training import transfer as tr
from training.commands.train import main as train_main
from training.config import TRAIN_CONFIGS

REPO = Path(__file__).resolve().parents[1]


def _full_checkpoint_shapes(cfg_name: str) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], int, int]:
    """Names, shapes and dtypes of a full checkpoint of ``cfg_name`` after one step, built from the
    networks' state dicts (nothing trained) -> (shapes, G float elements, D float elements)."""
    from ide3d_core.networks import CONFIGS, Generator
    from training.discriminator import DiscriminatorConfig, DualDiscriminator

    cfg = TRAIN_CONFIGS[cfg_name]
    G = Generator(CONFIGS[cfg.generator])
    D = DualDiscriminator(DiscriminatorConfig(resolution=G.img_resolution, channel_base=cfg.d_channel_base,
                                              channel_max=cfg.d_channel_max, cmap_dim=cfg.d_cmap_dim,
                                              mapping_layers=cfg.d_mapping_layers, mbstd_group=cfg.mbstd_group))
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for prefix, module in (("G", G), ("G_ema", G), ("D", D)):
        for k, v in module.state_dict().items():
            shapes[f"{prefix}/{k}"] = (tuple(v.shape), v.dtype)
    for prefix, module in (("opt_G", G), ("opt_D", D)):
        for i, p in enumerate(module.parameters()):
            shapes[f"{prefix}/state/{i}/step"] = ((), torch.float32)
            shapes[f"{prefix}/state/{i}/exp_avg"] = (tuple(p.shape), torch.float32)
            shapes[f"{prefix}/state/{i}/exp_avg_sq"] = (tuple(p.shape), torch.float32)
    shapes["rng/torch_cpu"] = (tuple(torch.get_rng_state().shape), torch.uint8)
    n_g = sum(v.numel() for v in G.state_dict().values() if v.is_floating_point())
    n_d = sum(v.numel() for v in D.state_dict().values() if v.is_floating_point())
    return shapes, n_g, n_d


def test_default_transfer_fits_the_device_limits():
    shapes, n_g, n_d = _full_checkpoint_shapes("default")
    assert n_d < 2.5 * n_g, "the default discriminator should stay near the generator's size"
    moments, shards, total = tr.plan_transfer(shapes)
    # Closed form: float16 G, G_ema and D (every float tensor has dim > 0), plus the RNG state bytes.
    assert total == 2 * (2 * n_g + n_d) + torch.get_rng_state().numel()
    assert not moments  # Adam moments (2 x (G + D) in bfloat16) would not fit the 50 MiB budget
    assert 1 <= len(shards) <= tr.MAX_SHARDS
    size = {k: tr.stored_bytes(s, torch.float16 if d.is_floating_point and s else d) for k, (s, d) in shapes.items()}
    assert all(sum(size[k] for k in names) <= tr.SHARD_BYTES - 64 * 1024 for names in shards)
    assert sorted(k for names in shards for k in names) == sorted(k for k in shapes if not tr.is_moment(k))
    assert total < 48 * tr.MIB
    # The float32 state does not fit (the limits are real): the planner refuses it.
    with pytest.raises(tr.TransferError, match="weights alone"):
        tr.plan_transfer(shapes, dtypes={k: d for k, (s, d) in shapes.items()})


def test_pack_shards_respects_the_limit():
    sizes = {f"t{i}": b for i, b in enumerate([7, 6, 5, 4, 3, 2, 1, 8])}
    shards = tr.pack_shards(sizes, 10)
    assert sorted(k for s in shards for k in s) == sorted(sizes)
    assert all(sum(sizes[k] for k in s) <= 10 for s in shards)
    assert len(shards) == 4  # 36 bytes need at least 4 shards of 10; first-fit decreasing finds 4
    with pytest.raises(tr.TransferError, match="t0"):
        tr.pack_shards({"t0": 11}, 10)


def _train(args: list[str]) -> int:
    return train_main(["--data", "procedural", "--device", "cpu", "--quiet", *args])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("transfer")
    assert _train(["--config", "tiny", "--out", str(root / "run"), "--stop-at-step", "2",
                   "--transfer-out", str(root / "t")]) == 0
    return root


def test_transfer_round_trip_matches_the_full_checkpoint(tiny_run):
    full, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tiny_run / "run" / "checkpoints"))
    tensors, tstate, info = tr.load_transfer(tiny_run / "t")
    assert info.has_moments and info.step == state["step"] == 2 and info.images_seen == 8
    assert set(tensors) == set(full)
    for k, v in full.items():
        assert tensors[k].dtype == v.dtype and tensors[k].shape == v.shape, k
        if not v.is_floating_point() or v.dim() == 0:
            assert torch.equal(tensors[k], v), k  # RNG state, Adam step counts: exact
        else:  # float16 weights: relative 2^-11; bfloat16 moments: relative 2^-8
            rel = 2.0 ** -8 if tr.is_moment(k) else 2.0 ** -11
            assert torch.allclose(tensors[k], v, rtol=rel, atol=1e-7 if tr.is_moment(k) else 6e-8), k
    assert tstate["config"] == state["config"]


def test_resume_from_transfer_without_moments(tiny_run, tmp_path, capsys):
    t = tmp_path / "t"
    info = tr.export_run(tiny_run / "run", t, budget_bytes=int(0.6 * tr.MIB))
    assert not info.has_moments and info.total_bytes <= 0.6 * tr.MIB
    assert _train(["--out", str(tmp_path / "run"), "--resume-from", str(t), "--stop-at-step", "3"]) == 0
    out = capsys.readouterr().out
    assert "Adam is re-initialised" in out and "stopped at step 3 (12 images)" in out
    # A config mismatch is refused with a one-line error.
    assert _train(["--config", "default", "--out", str(tmp_path / "run"), "--resume-from", str(t)]) == 2


def test_export_is_generational_and_corruption_is_detected(tiny_run, tmp_path):
    t = tmp_path / "t"
    first = tr.export_run(tiny_run / "run", t)
    second = tr.export_run(tiny_run / "run", t)
    assert second.generation == first.generation + 1
    names = sorted(p.name for p in t.iterdir())
    assert names == sorted([tr.MANIFEST] + [f"t0002-{i + 1}-of-{len(second.shard_bytes)}.safetensors"
                                            for i in range(len(second.shard_bytes))])
    shard = next(t.glob("t0002-1-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(tr.TransferError, match=shard.name):
        tr.load_transfer(t)
    with pytest.raises(tr.TransferError, match="missing"):
        tr.transfer_info(tmp_path / "nothing")


def _sitting(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_sitting.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_gpu_sitting_script_on_cpu(tiny_run, tmp_path):
    dry = _sitting("--dry-run", "--bench", "--minutes", "5", env_extra={})
    assert dry.returncode == 0 and "--config default" in dry.stdout and "bench_training.py" in dry.stdout
    assert _sitting("--dry-run", "--minutes", "9", env_extra={}).returncode == 2  # would pass 10 minutes
    out = tmp_path / "out"
    done = _sitting("--device", "cpu", "--steps", "3", "--minutes", "1", "--carry", str(tiny_run / "t"),
                    "--out", str(out), env_extra={"SITTING_RUN": str(tmp_path / "run")})
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and "samples.png" in files and "log_tail.txt" in files
    assert tr.transfer_info(out / "transfer").step == 3
    assert "resuming from transfer checkpoint" in (out / "log_tail.txt").read_text()
