# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit a model's environment background (:mod:`ide3d_core.networks.background`) to a head bank's backdrops.

Only the background network is trained; the field, the super-resolution and the encoders are unchanged,
so a model folder gains a backdrop without retraining anything else. The shared patterns are learned with
a free mixing matrix per bank head (:func:`fit_background`); the map from codes to mixings is then a
ridge regression on the codes the model meets at inference, the **standard encoder's** prediction from
each bank head's 128 px view. Inversion does not rely on that map: it solves each portrait's mixing from
its views (:mod:`ide3d_core.inversion.backdrop`), which :func:`one_view_psnr` measures on held-out heads.

Targets: every view the bank caches (three at 64 px, one at 128 px), pixels whose exact label is the
background and whose 3 x 3 neighbourhood is too (the anti-aliased silhouette mixes head and backdrop), at
their pixel-centre ray directions from the bank's cameras. The loss is L1 in the image range [-1, 1].
``holdout`` bank heads are never trained on: their backdrops solved from the 128 px view and scored on the
three 64 px views give ``holdout_one_view_psnr`` (the inversion's case), from their codes alone
``code_holdout_psnr``.

*Decision (measured, docs/generator.md "Environment background"):* the first design fitted the patterns
and the code map together on the encoder's (jittered) codes. The codes carry almost nothing of a backdrop,
so the patterns learned little (20 dB on held-out heads); with free per-head mixings the same network
gives 28.6 dB on held-out heads' unseen views, solved from one view.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from ide3d_core.inversion.backdrop import clean_background
from ide3d_core.networks.background import EnvironmentBackground, mix_patterns, solve_mixing
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class BackgroundFitConfig:
    """Policy of :func:`fit_background`: steps, heads per step (``views``), background pixels per head, Adam
    lr of the patterns and of the per-head mixings, the ridge of the code-to-mixing regression (times the
    number of heads), the pull of a one-view solve toward the code's mixing (``solve_strength``, as in
    inversion), held-out heads, seed."""

    steps: int = 3000
    views: int = 16
    pixels: int = 1024
    lr: float = 2e-3
    mixing_lr: float = 1e-2
    code_ridge: float = 1.0
    solve_strength: float = 1e-4
    holdout: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.views < 1 or self.pixels < 1 or not self.lr > 0 or not self.mixing_lr > 0:
            raise ValueError(f"invalid background fit policy {self}")
        if self.holdout < 0 or self.code_ridge < 0 or self.solve_strength < 0:
            raise ValueError(f"holdout, code_ridge and solve_strength must be >= 0 in {self}")


@dataclass(frozen=True)
class BackdropPixels:
    """Background pixels of a bank's views: ``dirs [M, 3]`` unit world directions, ``rgb [M, 3]`` in
    [-1, 1], ``head [M]`` the bank head each pixel belongs to."""

    dirs: torch.Tensor
    rgb: torch.Tensor
    head: torch.Tensor


def backdrop_pixels(images: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor) -> BackdropPixels:
    """``images [N, V, 3, R, R]`` in [-1, 1], ``labels [N, V, R, R]``, ``cameras [N, V, 25]`` -> the pixels
    labelled background whose 3 x 3 neighbourhood is background too (inversion's own selection,
    :func:`ide3d_core.inversion.backdrop.clean_background`)."""
    n, v, _, r, _ = images.shape
    keep, dirs = clean_background(labels.reshape(n * v, r, r), cameras.reshape(n * v, -1))
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

    Two parts (the module docstring of :mod:`ide3d_core.networks.background` says why):

    1. the shared patterns, jointly with a free mixing matrix per training head (an auto-decoder: the
       codes play no part, so the patterns are whatever explains every head's backdrop);
    2. the code-to-mixing map ``net.mix``: ridge regression of the learned mixings on the codes (what a
       generated head's backdrop is; inversion solves its own, :mod:`ide3d_core.inversion.backdrop`).

    Heads ``N - holdout ..`` are held out. Stops after ``cfg.steps`` or ``minutes``; raises
    :class:`ide3d_core.progress.Cancelled` when ``cancel`` is set (the network keeps its last step).
    Returns ``{"steps", "seconds", "loss", "train_psnr"}`` (train: the learned mixings) and
    ``"code_train_psnr"``, ``"code_holdout_psnr"`` (mixings from the codes)."""
    n = codes.shape[0]
    if cfg.holdout >= n:
        raise ValueError(f"holdout {cfg.holdout} leaves no bank head to train on ({n} heads)")
    gen = torch.Generator().manual_seed(cfg.seed)
    n_train = n - cfg.holdout
    is_train = pix.head < n_train
    train = BackdropPixels(pix.dirs[is_train], pix.rgb[is_train], pix.head[is_train])
    held = BackdropPixels(pix.dirs[~is_train], pix.rgb[~is_train], pix.head[~is_train])
    # pixels of each training head, to draw a step's pixels head by head
    order = torch.argsort(train.head, stable=True)
    counts = torch.bincount(train.head, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    with torch.no_grad():
        mixings = torch.nn.Parameter(net.mixing(codes[:n_train]).float().clone())  # [n_train, 3, K + 1]
    shared = [p for name, p in net.named_parameters() if not name.startswith("mix.")]
    opt = torch.optim.Adam([{"params": shared, "base": cfg.lr}, {"params": [mixings], "base": cfg.mixing_lr}],
                           lr=cfg.lr, betas=(0.9, 0.99))
    t0, loss_v, step = time.perf_counter(), float("nan"), 0
    net.train()
    for step in range(1, cfg.steps + 1):
        decay = max(0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step - 1) / cfg.steps)).item()), 0.02)
        for g in opt.param_groups:
            g["lr"] = g["base"] * decay
        heads = torch.randint(n_train, (cfg.views,), generator=gen)
        heads = heads[counts[heads] > 0]
        if len(heads) == 0:
            continue
        pick = starts[heads, None] + (torch.rand(len(heads), cfg.pixels, generator=gen)
                                      * counts[heads, None]).long()
        idx = order[pick]
        pred = mix_patterns(net.patterns_of(train.dirs[idx]), mixings[heads])
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
    learned = mixings.detach()
    set_code_map(net, codes[:n_train], learned, cfg.code_ridge)
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "loss": loss_v,
            "train_psnr": mixing_psnr(net, learned, train),
            "code_train_psnr": backdrop_psnr(net, codes, train),
            "code_holdout_psnr": backdrop_psnr(net, codes, held) if cfg.holdout else float("nan")}


def set_code_map(net: EnvironmentBackground, codes: torch.Tensor, mixings: torch.Tensor, ridge: float) -> None:
    """Set ``net.mix`` to the ridge regression of ``mixings [N, 3, K + 1]`` on ``codes [N, w_dim]`` (centred;
    penalty ``ridge * N`` on the weights), so that ``net.mixing(codes)`` predicts them."""
    x = codes.double()
    y = mixings.reshape(mixings.shape[0], -1).double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    a = xc.T @ xc + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(a, xc.T @ yc).T  # [3 (K + 1), w_dim]
    b = my - w @ mx
    with torch.no_grad():
        net.mix.weight.copy_((w / net.mix.weight_gain).to(net.mix.weight.dtype))
        net.mix.bias.copy_((b / net.mix.lr_mult).to(net.mix.bias.dtype))


def mixing_psnr(net: EnvironmentBackground, mixings: torch.Tensor, pix: BackdropPixels) -> float:
    """PSNR (dB, peak-to-peak 2) of the backdrops ``mixings [N, 3, K + 1]`` over the pixels ``pix``."""
    with torch.no_grad():
        m = mixings[pix.head]  # [P, 3, K + 1]
        pred = torch.einsum("pk,pck->pc", net.patterns_of(pix.dirs), m[..., :-1]) + m[..., -1]
    return _psnr(float((pred - pix.rgb).square().mean()))


def one_view_psnr(net: EnvironmentBackground, codes: torch.Tensor, seen: BackdropPixels, unseen: BackdropPixels,
                  strength: float) -> float:
    """What inversion gets: each head's mixing solved from its ``seen`` pixels (towards its code's mixing,
    :func:`~ide3d_core.networks.background.solve_mixing`), scored on its ``unseen`` pixels (PSNR, dB; NaN
    without pixels)."""
    se, count = 0.0, 0
    with torch.no_grad():
        for h in torch.unique(unseen.head).tolist():
            s, u = seen.head == h, unseen.head == h
            if int(s.sum()) < 16:
                continue
            m = solve_mixing(net.patterns_of(seen.dirs[s]), seen.rgb[s], net.mixing(codes[h:h + 1])[0].float(),
                             strength)
            pred = mix_patterns(net.patterns_of(unseen.dirs[u])[None], m[None])[0]
            se += float((pred - unseen.rgb[u]).square().sum())
            count += unseen.rgb[u].numel()
    return _psnr(se / count) if count else float("nan")


def _psnr(mse: float) -> float:
    return float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))))


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
    from pathlib import Path

    from ide3d_core.encoders import load_encoder
    from ide3d_core.networks.io import load_generator
    from training.model_folder import write_model_copy
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
    if cfg.holdout:
        held = torch.arange(codes.shape[0] - cfg.holdout, codes.shape[0])
        seen = backdrop_pixels(bank["img128"][held].float()[:, None], bank["lab128"][held, None],
                               bank["cam128"][held, None])
        unseen = backdrop_pixels(bank["img64"][held].float(), bank["lab64"][held], bank["cam64"][held])
        seen, unseen = (dataclasses.replace(p, head=p.head + int(held[0])) for p in (seen, unseen))
        stats["holdout_one_view_psnr"] = one_view_psnr(G.background, codes, seen, unseen, cfg.solve_strength)
    stats.update(bank=str(bank_dir), heads=int(codes.shape[0]), pixels=int(pix.dirs.shape[0]),
                 hidden=G.config.background_hidden, policy=dataclasses.asdict(cfg))
    write_model_copy(model, out, G, "background_fit.json", stats)
    return stats
