# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit a model's environment background (:mod:`ide3d_core.networks.background`) to a head bank's backdrops.

Only the background network is trained; the field, the super-resolution and the encoders are unchanged,
so a model folder gains a backdrop without retraining anything else. Its codes are the ones the model
meets at inference: the **standard encoder's** prediction from each bank head's 128 px view (the start of
every inversion and of the canonical editor's texture), with Gaussian jitter (``code_noise`` times the
codes' spread) so that the codes the inversion optimisation moves to still give the head's backdrop.

Targets: every view the bank caches (three at 64 px, one at 128 px), pixels whose exact label is the
background and whose 3 x 3 neighbourhood is too (the anti-aliased silhouette mixes head and backdrop), at
their pixel-centre ray directions from the bank's cameras. The loss is L1 in the image range [-1, 1].
``holdout`` bank heads are never trained on and give the reported held-out PSNR of the backdrop.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ide3d_core.cameras import rays_from_labels
from ide3d_core.networks.background import EnvironmentBackground
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class BackgroundFitConfig:
    """Policy of :func:`fit_background` (steps, batch of views, background pixels per view, Adam lr, code
    jitter, held-out heads, seed)."""

    steps: int = 3000
    views: int = 16
    pixels: int = 1024
    lr: float = 2e-3
    code_noise: float = 0.1
    holdout: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.views < 1 or self.pixels < 1 or not self.lr > 0 or self.code_noise < 0:
            raise ValueError(f"invalid background fit policy {self}")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0, got {self.holdout}")


@dataclass(frozen=True)
class BackdropPixels:
    """Background pixels of a bank's views: ``dirs [M, 3]`` unit world directions, ``rgb [M, 3]`` in
    [-1, 1], ``head [M]`` the bank head each pixel belongs to."""

    dirs: torch.Tensor
    rgb: torch.Tensor
    head: torch.Tensor


def backdrop_pixels(images: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor,
                    background_class: int = 0) -> BackdropPixels:
    """``images [N, V, 3, R, R]`` in [-1, 1], ``labels [N, V, R, R]``, ``cameras [N, V, 25]`` -> the pixels
    labelled background whose 3 x 3 neighbourhood is background too."""
    n, v, _, r, _ = images.shape
    bg = (labels.reshape(n * v, 1, r, r) == background_class).float()
    clean = -F.max_pool2d(-bg, 3, stride=1, padding=1) > 0.5  # eroded: no anti-aliased edge pixels
    _, dirs = rays_from_labels(cameras.reshape(n * v, -1).float(), r, r)  # [NV, R*R, 3]
    keep = clean.reshape(n * v, r * r)
    rgb = images.reshape(n * v, 3, r * r).permute(0, 2, 1).float()
    head = torch.arange(n).repeat_interleave(v)[:, None].expand(-1, r * r)
    return BackdropPixels(dirs=dirs[keep], rgb=rgb[keep], head=head[keep])


def merge_pixels(*parts: BackdropPixels) -> BackdropPixels:
    return BackdropPixels(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(BackdropPixels)))


def backdrop_psnr(net: EnvironmentBackground, codes: torch.Tensor, pix: BackdropPixels) -> float:
    """PSNR (dB, peak-to-peak 2) of the network's backdrop over the pixels ``pix`` with ``codes [N, w_dim]``
    (NaN without pixels)."""
    se, count = 0.0, 0
    order = torch.argsort(pix.head, stable=True)
    heads, counts = torch.unique_consecutive(pix.head[order], return_counts=True)
    with torch.no_grad():
        lo = 0
        for h, k in zip(heads.tolist(), counts.tolist()):
            idx = order[lo:lo + k]
            lo += k
            pred = net(pix.dirs[idx][None], codes[h:h + 1])[0]
            se += float((pred - pix.rgb[idx]).square().sum())
            count += pix.rgb[idx].numel()
    if count == 0:
        return float("nan")
    return float(10 * torch.log10(torch.tensor(4.0 / max(se / count, 1e-12))))


def fit_background(net: EnvironmentBackground, codes: torch.Tensor, pix: BackdropPixels,
                   cfg: BackgroundFitConfig = BackgroundFitConfig(), progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None, minutes: float | None = None) -> dict:
    """Train ``net`` in place on the backdrop pixels of the bank heads with ``codes [N, w_dim]``.

    Heads ``N - holdout ..`` are held out. Stops after ``cfg.steps`` or ``minutes``; raises
    :class:`ide3d_core.progress.Cancelled` when ``cancel`` is set (the network keeps its last step).
    Returns ``{"steps", "seconds", "loss", "train_psnr", "holdout_psnr"}``."""
    n = codes.shape[0]
    if cfg.holdout >= n:
        raise ValueError(f"holdout {cfg.holdout} leaves no bank head to train on ({n} heads)")
    gen = torch.Generator().manual_seed(cfg.seed)
    train_ids = torch.arange(n - cfg.holdout)
    is_train = pix.head < n - cfg.holdout
    train = BackdropPixels(pix.dirs[is_train], pix.rgb[is_train], pix.head[is_train])
    held = BackdropPixels(pix.dirs[~is_train], pix.rgb[~is_train], pix.head[~is_train])
    # pixels of each training head, to draw a step's pixels head by head
    order = torch.argsort(train.head, stable=True)
    counts = torch.bincount(train.head, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    spread = codes[train_ids].std(0, keepdim=True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    t0, loss_v, step = time.perf_counter(), float("nan"), 0
    net.train()
    for step in range(1, cfg.steps + 1):
        lr = cfg.lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step - 1) / cfg.steps)).item())
        for g in opt.param_groups:
            g["lr"] = max(lr, 0.02 * cfg.lr)
        heads = train_ids[torch.randint(len(train_ids), (cfg.views,), generator=gen)]
        heads = heads[counts[heads] > 0]
        if len(heads) == 0:
            continue
        pick = starts[heads, None] + (torch.rand(len(heads), cfg.pixels, generator=gen)
                                      * counts[heads, None]).long()
        idx = order[pick]
        w = codes[heads] + cfg.code_noise * spread * torch.randn(len(heads), codes.shape[1], generator=gen)
        pred = net(train.dirs[idx], w)
        loss = (pred - train.rgb[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if step % 50 == 0 or step == cfg.steps:
            report(progress, step, cfg.steps, f"environment background: L1 {loss_v:.4f}", cancel)
        elif cancel is not None:
            cancel.raise_if_cancelled()
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            break
    net.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "loss": loss_v,
            "train_psnr": backdrop_psnr(net, codes, train), "holdout_psnr":
            backdrop_psnr(net, codes, held) if cfg.holdout else float("nan")}


def generator_with_background(G0, hidden: int):
    """A copy of generator ``G0`` with an environment background (``G0``'s own when it has one, else a new
    one of width ``hidden``); every other weight is ``G0``'s."""
    from ide3d_core.networks.generator import Generator

    cfg = G0.config if G0.background is not None else dataclasses.replace(G0.config, background_hidden=hidden)
    G = Generator(cfg)
    missing, unexpected = G.load_state_dict(G0.state_dict(), strict=False)
    if unexpected or any(not k.startswith("background.") for k in missing):
        raise ValueError(f"generator weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return G.eval()


def bank_backdrops(bank: dict[str, torch.Tensor]) -> BackdropPixels:
    """Backdrop pixels of every cached view of a bank (the 64 px views and the 128 px one)."""
    low = backdrop_pixels(bank["img64"].float(), bank["lab64"], bank["cam64"])
    high = backdrop_pixels(bank["img128"].float()[:, None], bank["lab128"][:, None], bank["cam128"][:, None])
    return merge_pixels(low, high)


def fit_background_folder(model, bank_dir, out, cfg: BackgroundFitConfig = BackgroundFitConfig(), hidden: int = 64,
                          progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                          minutes: float | None = None) -> dict:
    """Fit the environment background of the model folder ``model`` on the bank ``bank_dir`` (a run's
    ``bank``; its spec is read from the run's configuration beside it, else the default) and write the
    model folder ``out`` (a copy of ``model`` with the new generator, float16, and
    ``background_fit.json``). Returns the fit's figures."""
    import json
    import shutil
    from pathlib import Path

    from ide3d_core.atomic_file import write_atomic
    from ide3d_core.encoders import load_encoder
    from ide3d_core.networks.io import load_generator, save_generator
    from training.autodecoder.bank import load_bank
    from training.autodecoder.loop import bank_spec_beside, codes_to_ws, encoder_group_codes

    model, bank_dir, out = Path(model), Path(bank_dir), Path(out)
    bank = load_bank(bank_dir, bank_spec_beside(bank_dir))
    G = generator_with_background(load_generator(model), hidden)
    encoder = load_encoder(model / "encoders" / "standard")
    groups = encoder_group_codes(encoder, bank["img128"], bank["lab128"], G.num_shape_ws)
    codes = G.background_code(codes_to_ws(groups, G))  # [N, w_dim]
    pix = bank_backdrops(bank)
    stats = fit_background(G.background, codes, pix, cfg, progress, cancel, minutes)
    stats.update(bank=str(bank_dir), heads=int(codes.shape[0]), pixels=int(pix.dirs.shape[0]),
                 hidden=G.config.background_hidden, policy=dataclasses.asdict(cfg))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model, tmp)
    save_generator(G, tmp, dtype=torch.float16)
    write_atomic(tmp / "background_fit.json", (json.dumps(stats, indent=2) + "\n").encode())
    tmp.rename(out)
    return stats
