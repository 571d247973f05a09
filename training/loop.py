# SPDX-License-Identifier: GPL-3.0-or-later
"""The GAN training procedure: one function, :func:`train`, owning the loop.

One step (per process, ``batch_size / world_size`` images):

1. **G main**: latent codes with pose-conditioning swap and style mixing -> render at the scheduled
   neural resolution -> dual discriminator -> non-saturating loss on both branches.
2. **G reg** (every ``density_interval`` steps): density regularisation on the tri-planes.
3. **D main**: logistic loss on the step's fakes (reused, detached) and the real batch.
4. **D reg** (every ``r1_interval`` steps): lazy R1 on the real inputs of each branch with its gamma.
5. EMA update, running ``w_avg`` update, logs, image grids, checkpoints.

Reproducibility: every random draw of step ``k`` on rank ``r`` comes from generators seeded with
``(seed, k, r)`` (data, latent codes, swaps, mixing, renderer jitter), and the checkpoint holds all
weights, both optimisers and the counters, so a resumed run computes exactly what the uninterrupted
run would have (bit-identical on the same device and thread count). A cancel (token, SIGINT/SIGTERM in
the command) finishes the current step and writes a checkpoint; a hard kill loses at most the steps
since the last checkpoint and never the checkpoint itself (atomic writes).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import PoseDistribution, orbit_camera
from ide3d_core.labels import NUM_CLASSES, colorize
from ide3d_core.progress import CancelToken, ProgressFn
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.data import DataSource, random_cameras, step_rng
from training.discriminator import DiscriminatorConfig, DualDiscriminator, downsample_real, prepare_inputs
from training.distributed import (DistContext, any_process, average_gradients, barrier, broadcast_module,
                                  mean_over_processes)
from training.ema import ema_beta, make_ema, update_ema
from training.losses import (blur_sigma, density_regularization, discriminator_loss, gaussian_blur,
                             generator_loss, mix_styles, neural_resolution, r1_penalty,
                             swap_conditioning, swap_probability)
from training.runlog import RunLog, tile

GeneratorFactory = Callable[[TrainConfig], nn.Module]


class TrainingError(ValueError):
    """A run cannot start or resume (bad run folder, config mismatch); the message says why."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes:
        step: optimisation steps done in total (including earlier sittings).
        images_seen: real images shown to the discriminator in total.
        checkpoint: the latest checkpoint written (None if nothing was written).
        finished: the run reached ``config.total_steps``.
        losses: the last logged scalars.
        generator_dir: the exported EMA generator (``save_generator`` folder, float16; main process).
        G, G_ema, D: this process's networks after the last step.
    """

    step: int
    images_seen: int
    checkpoint: Optional[Path]
    finished: bool
    losses: dict[str, float] = field(default_factory=dict)
    generator_dir: Optional[Path] = None
    G: Optional[nn.Module] = None
    G_ema: Optional[nn.Module] = None
    D: Optional[nn.Module] = None


@dataclass
class _Models:
    G: nn.Module
    G_ema: nn.Module
    D: DualDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def build_generator(cfg: TrainConfig) -> nn.Module:
    """The generator named by ``cfg.generator`` with initial weights drawn from ``cfg.seed``."""
    from ide3d_core.networks import CONFIGS, Generator

    if cfg.generator not in CONFIGS:
        raise TrainingError(f"unknown generator config {cfg.generator!r}; known: {', '.join(CONFIGS)}")
    return Generator(CONFIGS[cfg.generator], seed=cfg.seed)


def _adam(params, lr: float, betas: tuple[float, float], interval: int) -> torch.optim.Adam:
    # Lazy regularisation runs a separate optimiser step every `interval` steps; rescale lr and betas
    # so the effective per-image step size matches the non-lazy schedule (StyleGAN2, appendix B).
    # `params` may be parameter groups, each with an "lr_scale".
    ratio = interval / (interval + 1) if interval > 0 else 1.0
    groups = params if isinstance(params, list) and params and isinstance(params[0], dict) else [
        {"params": list(params), "lr_scale": 1.0}]
    groups = [{"params": g["params"], "lr": lr * ratio * g["lr_scale"]} for g in groups]
    return torch.optim.Adam(groups, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=1e-8)


def _generator_groups(G: nn.Module, cfg: TrainConfig):
    """G's parameters, the mapping network's in a group of their own scaled by ``mapping_lr_scale``."""
    mapping = getattr(G, "mapping", None)
    if cfg.mapping_lr_scale == 1.0 or not isinstance(mapping, nn.Module):
        return G.parameters()
    ids = {id(p) for p in mapping.parameters()}
    return [{"params": [p for p in G.parameters() if id(p) in ids], "lr_scale": cfg.mapping_lr_scale},
            {"params": [p for p in G.parameters() if id(p) not in ids], "lr_scale": 1.0}]


def _build(cfg: TrainConfig, ctx: DistContext, factory: GeneratorFactory) -> _Models:
    G = factory(cfg).to(ctx.device).train().requires_grad_(True)
    dcfg = DiscriminatorConfig(resolution=G.img_resolution, channel_base=cfg.d_channel_base,
                               channel_max=cfg.d_channel_max, cmap_dim=cfg.d_cmap_dim,
                               mapping_layers=cfg.d_mapping_layers, mbstd_group=cfg.mbstd_group)
    D = DualDiscriminator(dcfg, seed=cfg.seed + 1).to(ctx.device).train()
    broadcast_module(G, ctx)
    broadcast_module(D, ctx)
    G_ema = make_ema(G)
    opt_g = _adam(_generator_groups(G, cfg), cfg.lr_g, cfg.betas, cfg.density_interval if cfg.density_weight > 0 else 0)
    opt_d = _adam(D.parameters(), cfg.lr_d, cfg.betas, cfg.r1_interval)
    return _Models(G, G_ema, D, opt_g, opt_d)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

def _save(path: Path, m: _Models, cfg: TrainConfig, step: int, images_seen: int) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(ckpt.module_tensors(m.G, "G"))
    tensors.update(ckpt.module_tensors(m.G_ema, "G_ema"))
    tensors.update(ckpt.module_tensors(m.D, "D"))
    t_g, doc_g = ckpt.optimizer_tensors(m.opt_g, "opt_G")
    t_d, doc_d = ckpt.optimizer_tensors(m.opt_d, "opt_D")
    tensors.update(t_g)
    tensors.update(t_d)
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    state = {"step": step, "images_seen": images_seen, "config": cfg.to_dict(),
             "opt_G": doc_g, "opt_D": doc_d}
    return ckpt.save_checkpoint(path, tensors, state)


def _restore(path: Path, m: _Models) -> tuple[int, int]:
    # Read on the CPU: load_state_dict moves weights and moments to their parameters' device, and
    # keeps Adam's step counts on the CPU where the (non-capturable) optimiser expects them.
    tensors, state = ckpt.load_checkpoint(path)
    ckpt.load_module(m.G, tensors, "G")
    ckpt.load_module(m.G_ema, tensors, "G_ema")
    ckpt.load_module(m.D, tensors, "D")
    ckpt.load_optimizer(m.opt_g, tensors, state["opt_G"], "opt_G")
    ckpt.load_optimizer(m.opt_d, tensors, state["opt_D"], "opt_D")
    torch.set_rng_state(tensors["rng/torch_cpu"].cpu())
    return int(state["step"]), int(state["images_seen"])


def _check_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> Optional[Path]:
    """Save or compare ``train_config.json``; return the checkpoint to resume from (or None)."""
    cfg_path = run_dir / "train_config.json"
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if not resume:
        if latest is not None or cfg_path.exists():
            raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or "
                                f"choose another --out")
        return None
    if cfg_path.exists():
        old = TrainConfig.load(cfg_path)
        # The length of a run may be extended; everything else must match for an exact resume.
        if old.replace(kimg=cfg.kimg) != cfg:
            diff = [k for k, v in cfg.to_dict().items() if old.to_dict()[k] != v and k != "kimg"]
            raise TrainingError(f"{cfg_path}: the run was started with different settings "
                                f"({', '.join(diff)}); resume with the same settings")
    return latest


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------

def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1).to(logits.dtype)


def _d_inputs(out, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    rgb, sem = prepare_inputs(out.image, out.image_raw, _softmax(out.semantic), _softmax(out.semantic_raw))
    return gaussian_blur(rgb, sigma), gaussian_blur(sem, sigma)


def _real_inputs(image: torch.Tensor, labels: torch.Tensor, nr: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    onehot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).to(image.dtype)
    image_raw, sem_raw = downsample_real(image, onehot, nr)
    rgb, sem = prepare_inputs(image, image_raw, onehot, sem_raw)
    return gaussian_blur(rgb, sigma), gaussian_blur(sem, sigma)


def _autocast(ctx: DistContext, cfg: TrainConfig):
    if ctx.device.type == "cuda" and cfg.mixed_precision:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _distill_step(m: _Models, cfg: TrainConfig, ctx: DistContext, step: int, images_seen: int,
                  poses: PoseDistribution) -> dict[str, torch.Tensor]:
    """One supervised step (``objective="distill"``, :mod:`training.distill`); D is left alone."""
    from training.distill import distill_losses

    G = m.G
    with _autocast(ctx, cfg):
        loss, logs, ws = distill_losses(G, cfg, step, ctx.rank, cfg.batch_size // ctx.world_size,
                                        ctx.device, poses)
    _generator_step(m, loss, ctx)
    logs["loss/G"] = loss.detach()
    _update_w_avg(G, ws, cfg, ctx)
    update_ema(m.G_ema, G, ema_beta(cfg.batch_size, cfg.ema_kimg, images_seen, cfg.ema_rampup))
    return logs


def _generator_step(m: _Models, loss: torch.Tensor, ctx: DistContext) -> None:
    """Backward ``loss``, average G's gradients over processes, one Adam step."""
    m.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(m.G.parameters(), ctx)
    m.opt_g.step()


def _update_w_avg(G: nn.Module, ws: torch.Tensor, cfg: TrainConfig, ctx: DistContext) -> None:
    w_avg = getattr(G.mapping, "w_avg", None)
    if isinstance(w_avg, torch.Tensor):
        with torch.no_grad():
            w_mean = mean_over_processes(ws[:, 0].detach().float().mean(0), ctx)
            w_avg.copy_(w_mean.to(w_avg.dtype).lerp(w_avg, cfg.w_avg_beta))


def _step(m: _Models, cfg: TrainConfig, ctx: DistContext, source: DataSource, step: int,
          images_seen: int, poses: PoseDistribution) -> dict[str, torch.Tensor]:
    if cfg.objective == "distill":
        return _distill_step(m, cfg, ctx, step, images_seen, poses)
    G, D = m.G, m.D
    dev = ctx.device
    b = cfg.batch_size // ctx.world_size
    kimg = images_seen / 1000.0
    nr = neural_resolution(kimg, G.neural_resolution, cfg.neural_resolution_final,
                           cfg.neural_resolution_start_kimg, cfg.neural_resolution_fade_kimg)
    sigma = blur_sigma(kimg, cfg.blur_sigma, cfg.blur_fade_kimg)
    rng = step_rng(cfg.seed, step, ctx.rank, stream=1)
    gen = torch.Generator(device=dev).manual_seed(int(rng.integers(0, 2**62)))
    real = source.batch(step, ctx.rank, b)
    c = real.cameras
    c_cond = swap_conditioning(c, random_cameras(rng, b, poses, dev),
                               swap_probability(kimg, cfg.gpc_prob, cfg.gpc_fade_kimg), gen)
    z = torch.randn(b, G.z_dim, generator=gen, device=dev)
    z_mix = torch.randn(b, G.z_dim, generator=gen, device=dev)
    logs: dict[str, torch.Tensor] = {}

    # -- G main ---------------------------------------------------------------------------------
    D.requires_grad_(False)
    with _autocast(ctx, cfg):
        ws = G.mapping(z, c_cond)
        if cfg.style_mixing_prob > 0:
            ws = mix_styles(ws, G.mapping(z_mix, c_cond), cfg.style_mixing_prob, gen)
        out = G.render(G.planes(ws), c, ws, neural_resolution=nr, generator=gen)
        fake_rgb, fake_sem = _d_inputs(out, sigma)
        d_fake = D(fake_rgb, fake_sem, c)
        loss_g = generator_loss(d_fake.rgb) + generator_loss(d_fake.semantic)
    _generator_step(m, loss_g, ctx)
    logs["loss/G"] = loss_g.detach()
    _update_w_avg(G, ws, cfg, ctx)

    # -- G reg: density regularisation -----------------------------------------------------------
    if cfg.density_weight > 0 and cfg.density_interval > 0 and step % cfg.density_interval == 0:
        with _autocast(ctx, cfg):
            planes = G.planes(G.mapping(z, c_cond))
            reg = density_regularization(lambda p: G.query(planes, p).sigma, b, cfg.density_points,
                                         cfg.density_perturbation, gen, dev)
        _generator_step(m, reg * cfg.density_weight * cfg.density_interval, ctx)
        logs["reg/density"] = reg.detach()

    # -- D main -----------------------------------------------------------------------------------
    D.requires_grad_(True)
    real_rgb, real_sem = _real_inputs(real.image, real.labels, nr, sigma)
    with _autocast(ctx, cfg):
        d_fake = D(fake_rgb.detach(), fake_sem.detach(), c)
        d_real = D(real_rgb, real_sem, c)
        loss_d = (discriminator_loss(d_real.rgb, d_fake.rgb)
                  + discriminator_loss(d_real.semantic, d_fake.semantic))
    m.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    average_gradients(D.parameters(), ctx)
    m.opt_d.step()
    logs["loss/D"] = loss_d.detach()
    logs["D/real_rgb"] = d_real.rgb.detach().float().mean()
    logs["D/fake_rgb"] = d_fake.rgb.detach().float().mean()
    logs["D/real_semantic"] = d_real.semantic.detach().float().mean()
    logs["D/fake_semantic"] = d_fake.semantic.detach().float().mean()

    # -- D reg: lazy R1 on each branch -----------------------------------------------------------
    if cfg.r1_interval > 0 and step % cfg.r1_interval == 0:
        rgb_in = real_rgb.detach().requires_grad_(True)
        sem_in = real_sem.detach().requires_grad_(True)
        d_real = D(rgb_in, sem_in, c)  # float32: second-order gradients are fragile in low precision
        r1_rgb, r1_sem = r1_penalty(d_real.rgb, rgb_in), r1_penalty(d_real.semantic, sem_in)
        reg = (0.5 * cfg.gamma_rgb * r1_rgb + 0.5 * cfg.gamma_semantic * r1_sem) * cfg.r1_interval
        m.opt_d.zero_grad(set_to_none=True)
        reg.backward()
        average_gradients(D.parameters(), ctx)
        m.opt_d.step()
        logs["reg/r1_rgb"] = r1_rgb.detach()
        logs["reg/r1_semantic"] = r1_sem.detach()

    # -- EMA --------------------------------------------------------------------------------------
    update_ema(m.G_ema, G, ema_beta(cfg.batch_size, cfg.ema_kimg, images_seen, cfg.ema_rampup))
    logs["schedule/neural_resolution"] = torch.tensor(float(nr))
    logs["schedule/blur_sigma"] = torch.tensor(sigma)
    return logs


# ----------------------------------------------------------------------------------------------
# Image grids
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_grid(G: nn.Module, seeds: list[int], yaws_deg: tuple[float, ...], device: torch.device) -> np.ndarray:
    """Rows = seeds; columns = the images at each yaw, then the colourised semantic maps.

    Returns (rows * R, 2 * len(yaws) * R, 3) uint8."""
    ws = G.mapping(G.latents_from_seeds(seeds).to(device), G.canonical_labels(len(seeds)).to(device),
                   truncation_psi=0.7)
    planes = G.planes(ws)
    cols_img, cols_sem = [], []
    for yaw in yaws_deg:
        c = torch.as_tensor(orbit_camera(math.radians(yaw)).label(), device=device).expand(len(seeds), 25)
        out = G.render(planes, c, ws)
        img = ((out.image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
        cols_img.append(img.cpu().numpy())
        cols_sem.append(colorize(out.semantic.argmax(1).cpu().numpy()))
    return tile(np.concatenate(cols_img + cols_sem, axis=2), 1)


# ----------------------------------------------------------------------------------------------
# The procedure
# ----------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, source: DataSource, run_dir: str | Path, *, ctx: DistContext = DistContext(),
          resume: bool = False, progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
          stop_at_step: Optional[int] = None, generator_factory: Optional[GeneratorFactory] = None,
          poses: PoseDistribution = PoseDistribution()) -> TrainResult:
    """Train (or continue training) a generator; see the module docstring.

    Args:
        cfg: the training policy. source: real data (``source.resolution`` must equal the generator's
            output resolution). run_dir: folder of this run (config, checkpoints, logs, images).
        ctx: process placement (:func:`training.distributed.init_distributed`).
        resume: continue from the newest checkpoint in ``run_dir`` (a fresh start if none).
        progress: ``(step, total_steps, message)`` callback; cancel: stop after the current step,
            write a checkpoint and return.
        stop_at_step: also stop (with a checkpoint) when this many steps are done.
        generator_factory: builds the generator from the config (default :func:`build_generator`).
        poses: the pose prior of the GPC swap (random poses replace the conditioning camera).
    """
    run_dir = Path(run_dir)
    if cfg.batch_size % ctx.world_size:
        raise TrainingError(f"batch size {cfg.batch_size} is not divisible by {ctx.world_size} processes")
    local = cfg.batch_size // ctx.world_size
    if local % min(cfg.mbstd_group, local):
        raise TrainingError(f"{local} images per process is not divisible by the minibatch-stddev group "
                            f"{cfg.mbstd_group}; use a batch that is")
    start = _check_run_dir(run_dir, cfg, resume)  # every rank checks, so every rank raises alike
    barrier(ctx)
    m = _build(cfg, ctx, generator_factory or build_generator)
    if source.resolution != m.G.img_resolution:
        raise TrainingError(f"the data is {source.resolution} px but generator {cfg.generator!r} "
                            f"renders {m.G.img_resolution} px")
    step, images_seen = 0, 0
    if start is not None:
        step, images_seen = _restore(start, m)
    log = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "train_config.json")
        log = RunLog(run_dir)
    total = cfg.total_steps
    last_ckpt: Optional[Path] = start
    pending: list[dict[str, torch.Tensor]] = []
    losses: dict[str, float] = {}
    t0, steps_timed = time.perf_counter(), 0
    grid_seeds = list(range(4))
    try:
        while step < total:
            if _should_stop(cfg, ctx, cancel, stop_at_step, step):
                break
            logs = _step(m, cfg, ctx, source, step, images_seen, poses)
            step += 1
            images_seen += cfg.batch_size
            steps_timed += 1
            pending.append(logs)
            if ctx.is_main and (step % cfg.log_steps == 0 or step == total or _stopping(cancel, stop_at_step, step)):
                # One host sync per logging period: average the period's scalars.
                keys = sorted({k for d in pending for k in d})
                means = {k: torch.stack([d[k].float().cpu() for d in pending if k in d]).mean().item() for k in keys}
                dt = (time.perf_counter() - t0) / max(steps_timed, 1)
                losses = {**means, "timing/sec_per_step": dt, "progress/kimg": images_seen / 1000.0}
                log.scalars(step, losses)
                bad = [k for k, v in means.items() if not math.isfinite(v)]
                if bad:  # stop before a checkpoint can store broken weights
                    raise TrainingError(f"non-finite {', '.join(bad)} at step {step}; the newest checkpoint "
                                        f"in {run_dir / 'checkpoints'} predates it (resume, or lower the "
                                        f"learning rates)")
                pending, t0, steps_timed = [], time.perf_counter(), 0
            elif not ctx.is_main:
                pending = []
            if ctx.is_main and step % cfg.image_steps == 0:
                log.image(step, "samples", sample_grid(m.G_ema, grid_seeds, (-30.0, 0.0, 30.0), ctx.device))
            if step % cfg.checkpoint_steps == 0 and step < total:
                last_ckpt = _checkpoint(run_dir, m, cfg, ctx, step, images_seen)
            if progress is not None:
                progress(step, total, f"kimg {images_seen / 1000:.1f} G {losses.get('loss/G', float('nan')):.3f} "
                                      f"D {losses.get('loss/D', float('nan')):.3f}")
        if start is None or step != int(_step_of(start)):
            last_ckpt = _checkpoint(run_dir, m, cfg, ctx, step, images_seen)
        # The EMA generator of every sitting is exported, so a partly trained model is usable.
        gen_dir = _export(m.G_ema, run_dir) if ctx.is_main else None
        barrier(ctx)
    finally:
        if log is not None:
            log.close()
    return TrainResult(step, images_seen, last_ckpt, step >= total, losses, gen_dir, m.G, m.G_ema, m.D)


def _should_stop(cfg: TrainConfig, ctx: DistContext, cancel: Optional[CancelToken],
                 stop_at_step: Optional[int], step: int) -> bool:
    """Whether to stop before ``step``; all processes agree. A cancel reaches one process at a time
    (a signal, a timer), so processes compare notes every ``log_steps`` steps; ``stop_at_step`` is
    the same everywhere and needs no exchange."""
    if stop_at_step is not None and step >= stop_at_step:
        return True
    if not ctx.distributed:
        return cancel is not None and cancel.cancelled
    if step % cfg.log_steps:
        return False
    return any_process(cancel is not None and cancel.cancelled, ctx)


def _stopping(cancel: Optional[CancelToken], stop_at_step: Optional[int], step: int) -> bool:
    return (cancel is not None and cancel.cancelled) or (stop_at_step is not None and step >= stop_at_step)


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1].split(".")[0])


def _checkpoint(run_dir: Path, m: _Models, cfg: TrainConfig, ctx: DistContext, step: int,
                images_seen: int) -> Path:
    folder = run_dir / "checkpoints"
    path = folder / ckpt.checkpoint_name(step)
    if ctx.is_main:
        _save(path, m, cfg, step, images_seen)
        ckpt.prune_checkpoints(folder, cfg.keep_checkpoints)
    barrier(ctx)
    return path


def _export(G_ema: nn.Module, run_dir: Path) -> Optional[Path]:
    """Save the EMA generator with ``save_generator`` (float16) when it is the project's generator."""
    try:
        from ide3d_core.networks import Generator, save_generator
    except ImportError:
        return None
    if not isinstance(G_ema, Generator):
        return None
    out = run_dir / "generator"
    save_generator(G_ema, out, dtype=torch.float16)
    return out
