# SPDX-License-Identifier: GPL-3.0-or-later
"""A small face-parsing network trained on procedural heads: the project's stand-in for BiSeNet.

It maps an RGB portrait ``[B, 3, R, R]`` in [-1, 1] to 19-class logits ``[B, 19, R, R]``
(ide3d_core.labels order). Training needs no download: every batch is fresh procedural heads with
exact labels (:class:`training.data.ProceduralSource`). It is used for the semantic-consistency metric
(its labels of the generated RGB vs. the generator's own semantic map) and later by inversion.

Architecture: a three-scale U-Net (two 3x3 convs per scale, group norm, SiLU, bilinear upsampling with
skip connections); ``R`` must be divisible by 4. Saved as ``config.json`` + ``segnet.safetensors``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.labels import NUM_CLASSES
from ide3d_core.progress import CancelToken, ProgressFn, report
from ide3d_core.weights_io import CONFIG_FILE, dataclass_from_dict, load_weights, read_config, save_module

FORMAT = "ide3d-segnet"
VERSION = 1
WEIGHTS_FILE = "segnet.safetensors"


@dataclass(frozen=True)
class SegNetConfig:
    """widths: channels at full, 1/2 and 1/4 resolution."""

    widths: tuple[int, int, int] = (32, 64, 128)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive ints, got {self.widths}")


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class SegNet(nn.Module):
    """RGB [B, 3, R, R] in [-1, 1] -> logits [B, 19, R, R] (R divisible by 4)."""

    def __init__(self, config: SegNetConfig = SegNetConfig()) -> None:
        super().__init__()
        self.config = config
        a, b, c = config.widths
        self.enc0, self.enc1, self.enc2 = _block(3, a), _block(a, b), _block(b, c)
        self.dec1, self.dec0 = _block(c + b, b), _block(b + a, a)
        self.head = nn.Conv2d(a, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"SegNet expects [B, 3, R, R] with R divisible by 4, got {tuple(x.shape)}")
        e0 = self.enc0(x)
        e1 = self.enc1(F.avg_pool2d(e0, 2))
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        d1 = self.dec1(torch.cat([up(e2, e1), e1], 1))
        d0 = self.dec0(torch.cat([up(d1, e0), e0], 1))
        return self.head(d0)


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


def save_segnet(net: SegNet, folder: str | os.PathLike) -> Path:
    """Write ``folder/config.json`` and ``folder/segnet.safetensors`` (see :mod:`ide3d_core.weights_io`)."""
    return save_module(net, folder, format=FORMAT, version=VERSION, config=asdict(net.config),
                       weights_file=WEIGHTS_FILE)


def load_segnet(folder: str | os.PathLike, device: torch.device | str = "cpu") -> SegNet:
    """Strict load: unknown config keys or unmatched weights raise ``ValueError``."""
    data = read_config(folder, format=FORMAT, version=VERSION)
    net = SegNet(dataclass_from_dict(SegNetConfig, data, str(Path(folder) / CONFIG_FILE)))
    return load_weights(net, folder, WEIGHTS_FILE).to(device).eval()


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
