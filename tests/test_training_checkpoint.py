# SPDX-License-Identifier: GPL-3.0-or-later
"""Checkpoint files: atomic replacement, broken files never chosen, exact optimiser round trips."""
from __future__ import annotations

import os

import pytest
import torch

from training import checkpoint as ckpt


def _net_and_opt(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.99))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    return net, opt


def _save(path, net, opt, step):
    t = ckpt.module_tensors(net, "net")
    ot, doc = ckpt.optimizer_tensors(opt, "opt")
    return ckpt.save_checkpoint(path, {**t, **ot}, {"step": step, "opt": doc})


def test_module_and_optimiser_round_trip_exactly(tmp_path):
    net, opt = _net_and_opt(0)
    path = _save(tmp_path / ckpt.checkpoint_name(3), net, opt, 3)
    net2, opt2 = _net_and_opt(1)
    tensors, state = ckpt.load_checkpoint(path)
    ckpt.load_module(net2, tensors, "net")
    ckpt.load_optimizer(opt2, tensors, state["opt"], "opt")
    assert state["step"] == 3
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    # The next optimiser step is identical too (moments and step counts restored).
    x = torch.randn(5, 3)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).square().mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_strict_loading_names_the_mismatch(tmp_path):
    net, opt = _net_and_opt(0)
    path = _save(tmp_path / ckpt.checkpoint_name(1), net, opt, 1)
    tensors, _ = ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        ckpt.load_module(torch.nn.Linear(3, 4), tensors, "net")
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 1))
    with pytest.raises(ckpt.CheckpointError, match=r"net/0\.(weight|bias): shape \(4"):
        ckpt.load_module(other, tensors, "net")


def test_latest_skips_temporary_and_broken_files_and_pruning_keeps_the_newest(tmp_path):
    net, opt = _net_and_opt(0)
    for step in (10, 20, 30):
        _save(tmp_path / ckpt.checkpoint_name(step), net, opt, step)
    # A write killed mid-way leaves only a temporary file; a damaged newest file is passed over.
    (tmp_path / ".checkpoint-00000040.safetensors.abc.tmp").write_bytes(b"\0" * 100)
    newest = tmp_path / ckpt.checkpoint_name(30)
    newest.write_bytes(newest.read_bytes()[:200])
    assert ckpt.latest_checkpoint(tmp_path).name == ckpt.checkpoint_name(20)
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load_checkpoint(newest)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(30)]
    assert not list(tmp_path.glob("*.tmp"))


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path, monkeypatch):
    net, opt = _net_and_opt(0)
    path = _save(tmp_path / "c.safetensors", net, opt, 1)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        _save(path, net, opt, 2)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    with pytest.raises(ckpt.CheckpointError, match="not a training checkpoint"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        ckpt.load_checkpoint(tmp_path / "plain.safetensors")
