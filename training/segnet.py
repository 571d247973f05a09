# SPDX-License-Identifier: GPL-3.0-or-later
"""Training the face parser (:class:`ide3d_core.segnet.SegNet`) on procedural heads.

Training needs no download: every batch is fresh procedural heads with exact labels
(:class:`training.data.ProceduralSource`). The model, its config and its strict save/load live in the core
(:mod:`ide3d_core.segnet`), which inference uses without importing training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ide3d_core.progress import CancelToken, ProgressFn, report
from ide3d_core.segnet import SegNet, SegNetConfig, load_segnet, save_segnet  # noqa: F401 (training's names)


@dataclass(frozen=True)
class SegNetTraining:
    """Policy of :func:`train_segnet`: steps, batch, resolution of the procedural images, Adam lr, seed."""

    steps: int = 2000
    batch_size: int = 16
    resolution: int = 128
    lr: float = 2e-3
    seed: int = 0


def train_segnet(policy: SegNetTraining, device: torch.device, config: SegNetConfig = SegNetConfig(),
                 progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> SegNet:
    """Train a :class:`SegNet` with cross-entropy on fresh procedural heads (cosine-decayed Adam)."""
    from training.data import ProceduralSource

    gen = torch.Generator().manual_seed(policy.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        net = SegNet(config).to(device)
    source = ProceduralSource(policy.resolution, policy.seed, device)
    opt = torch.optim.Adam(net.parameters(), lr=policy.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(policy.steps, 1))
    for step in range(policy.steps):
        batch = source.batch(step, 0, policy.batch_size)
        loss = F.cross_entropy(net(batch.image), batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        report(progress, step + 1, policy.steps, f"loss {loss.item():.3f}" if progress else "", cancel)
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m training.segnet --out DIR [--steps N] [--resolution R] [--batch B] [--device D]``."""
    import argparse

    from ide3d_core.progress import TqdmProgress

    ap = argparse.ArgumentParser(prog="python -m training.segnet",
                                 description="Train the SegNet face parser on procedural heads.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=SegNetTraining.steps)
    ap.add_argument("--batch", type=int, default=SegNetTraining.batch_size)
    ap.add_argument("--resolution", type=int, default=SegNetTraining.resolution)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    policy = SegNetTraining(args.steps, args.batch, args.resolution, seed=args.seed)
    with TqdmProgress("segnet") as bar:
        net = train_segnet(policy, torch.device(args.device), progress=bar)
    print(f"[segnet] saved to {save_segnet(net, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
