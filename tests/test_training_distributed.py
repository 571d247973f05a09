# SPDX-License-Identifier: GPL-3.0-or-later
"""Two gloo processes train together for a few steps and end with identical replicas."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from test_training_fixtures import tiny_config, write_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from training.data import open_source
    from training.distributed import init_distributed, shutdown
    from training.loop import train

    ctx = init_distributed("cpu")
    try:
        cfg = tiny_config(batch_size=4, kimg=0.008, checkpoint_steps=100)  # 2 steps (regs at 0), 2 per rank
        source = open_source(data, 32, cfg.seed, ctx.device)
        first = source.batch(0, rank, 2)
        res = train(cfg, source, Path(out) / "run", ctx=ctx)
        # Each rank keeps its own copy of the networks; they must agree bit for bit.
        state = {f"{name}/{k}": v.detach().contiguous()
                 for name, net in (("G", res.G), ("G_ema", res.G_ema), ("D", res.D))
                 for k, v in net.state_dict().items()}
        state["data/first_batch"] = first.image
        save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    finally:
        shutdown(ctx)


@pytest.mark.slow
def test_two_gloo_processes_hold_identical_weights(tmp_path):
    data = write_dataset(tmp_path / "data", n=6, res=32)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert not torch.equal(a.pop("data/first_batch"), b.pop("data/first_batch"))  # ranks saw other data
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # ... and they did train: the weights moved away from the common initialisation.
    from ide3d_core.networks import CONFIGS, Generator

    init = Generator(CONFIGS["tiny"], seed=0).state_dict()
    assert any(not torch.equal(init[k], a[f"G/{k}"]) for k in init)
