# SPDX-License-Identifier: GPL-3.0-or-later
"""The training loop on the real ``tiny`` generator: smoke run, exact resume, kill and resume."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from test_training_fixtures import one_thread, tiny_config, write_dataset  # noqa: F401 (autouse fixture)
from training import checkpoint as ckpt
from training.data import open_source
from training.loop import TrainingError, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", n=6, res=32)


def _source(dataset: Path, cfg):
    return open_source(str(dataset), 32, cfg.seed, torch.device("cpu"))


def test_smoke_run_writes_finite_losses_a_checkpoint_and_a_loadable_generator(dataset, tmp_path):
    from ide3d_core.networks import load_generator

    cfg = tiny_config(kimg=0.006)  # 3 steps of 2 images: R1, density and both main phases run
    source = open_source("procedural", 32, cfg.seed, torch.device("cpu"))  # heads drawn on the fly
    res = train(cfg, source, tmp_path / "run")
    assert res.finished and res.step == 3 and res.images_seen == 6
    for key in ("loss/G", "loss/D", "D/real_rgb", "D/fake_semantic"):
        assert math.isfinite(res.losses[key]), key
    lines = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [1, 2, 3]
    assert any("reg/r1_semantic" in d for d in lines) and any("reg/density" in d for d in lines)
    # The checkpoint reloads into fresh models and holds exactly the trained EMA weights.
    tensors, state = ckpt.load_checkpoint(res.checkpoint)
    assert state["step"] == 3 and state["images_seen"] == 6
    G = load_generator(res.generator_dir)
    for k, v in G.state_dict().items():
        torch.testing.assert_close(v, tensors[f"G_ema/{k}"].to(v.dtype), rtol=1e-3, atol=1e-3)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(path)
    return {k: v for k, v in tensors.items() if not k.startswith("rng/")}


def test_stopped_and_resumed_run_equals_the_uninterrupted_run(dataset, tmp_path):
    cfg = tiny_config(kimg=0.008, checkpoint_steps=100)  # 4 steps; R1 at 0 and 4, density at 0, 2
    straight = train(cfg, _source(dataset, cfg), tmp_path / "a")
    first = train(cfg, _source(dataset, cfg), tmp_path / "b", stop_at_step=2)
    assert not first.finished and first.step == 2 and first.checkpoint.name == ckpt.checkpoint_name(2)
    second = train(cfg, _source(dataset, cfg), tmp_path / "b", resume=True)
    assert second.finished and second.step == 4
    a, b = _weights(straight.checkpoint), _weights(second.checkpoint)
    assert a.keys() == b.keys()
    for k in a:  # weights, EMA and both optimisers' moments: bit-identical
        assert torch.equal(a[k], b[k]), k


def test_a_new_run_refuses_a_used_folder_and_resume_refuses_other_settings(dataset, tmp_path):
    cfg = tiny_config(kimg=0.002)
    train(cfg, _source(dataset, cfg), tmp_path / "run")
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, _source(dataset, cfg), tmp_path / "run")
    with pytest.raises(TrainingError, match="gamma_rgb"):
        train(cfg.replace(gamma_rgb=5.0), _source(dataset, cfg), tmp_path / "run", resume=True)


def _command(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.commands.train", "--data", str(dataset), "--out", str(out),
            "--quiet", *extra]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = _command(dataset, out, "--config", "tiny", "--batch", "2", "--kimg", "1", "--checkpoint-steps", "1")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    folder = out / "checkpoints"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and len(ckpt.list_checkpoints(folder)) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: possibly mid-write
        proc.wait()
    latest = ckpt.latest_checkpoint(folder)
    assert latest is not None
    _, state = ckpt.load_checkpoint(latest)  # the newest complete checkpoint is never broken
    saved = state["step"]
    assert saved >= 2
    done = subprocess.run(_command(dataset, out, "--resume", "--stop-at-step", str(saved + 1)),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"stopped at step {saved + 1} " in done.stdout
    steps = [json.loads(s)["step"] for s in (out / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == saved + 1


def test_sigterm_stops_after_the_step_with_a_checkpoint(dataset, tmp_path, capsys):
    # In-process: the command's own signal handler turns SIGTERM into a cancel (checkpoint, exit 0).
    from training.commands.train import main

    out = tmp_path / "run"
    log = out / "log.jsonl"

    def send_when_logging() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=send_when_logging, daemon=True)
    killer.start()
    rc = main(["--config", "tiny", "--data", str(dataset), "--out", str(out), "--batch", "2", "--kimg", "1",
               "--checkpoint-steps", "1000", "--quiet"])
    killer.join()
    assert rc == 0
    assert "stopped at step" in capsys.readouterr().out
    _, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))
    assert 1 <= state["step"] < 250
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_bad_settings_fail_before_training_with_one_line_errors(dataset, tmp_path):
    from training.config import TrainConfig

    cfg = tiny_config(batch_size=6, mbstd_group=4)
    with pytest.raises(TrainingError, match="minibatch-stddev group 4"):
        train(cfg, _source(dataset, cfg), tmp_path / "a")
    with pytest.raises(TrainingError, match="renders 32 px"):
        train(tiny_config(), open_source(str(dataset), 16, 0, torch.device("cpu")), tmp_path / "b")
    d = tiny_config().to_dict()
    assert TrainConfig.from_dict(d) == tiny_config()  # JSON round trip (betas list -> tuple)
    with pytest.raises(ValueError, match="unknown keys \\['gama'\\]"):
        TrainConfig.from_dict({**d, "gama": 1.0})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_with_bfloat16_autocast_are_finite_and_resume(tmp_path):
    from training.distributed import DistContext

    ctx = DistContext(device=torch.device("cuda"))
    cfg = tiny_config(batch_size=4, kimg=0.016)  # 4 steps: R1 and density steps included
    source = open_source("procedural", 32, cfg.seed, ctx.device)
    first = train(cfg, source, tmp_path / "run", ctx=ctx, stop_at_step=2)
    res = train(cfg, source, tmp_path / "run", ctx=ctx, resume=True)
    assert first.step == 2 and res.finished and res.step == 4
    assert all(math.isfinite(v) for v in res.losses.values())
    assert next(res.G.parameters()).device.type == "cuda"


def test_neural_rendering_resolution_is_raised_on_schedule(dataset, tmp_path):
    # tiny renders at 16 px; raise it to 32 px within the first 2 images (steps of 2 images).
    cfg = tiny_config(kimg=0.004, neural_resolution_final=32, neural_resolution_fade_kimg=0.002)
    train(cfg, _source(dataset, cfg), tmp_path / "run")
    lines = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [d["schedule/neural_resolution"] for d in lines] == [16.0, 32.0]
