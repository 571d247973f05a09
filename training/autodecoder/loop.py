# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto-decoder training procedure: one learnable code pair per bank head, trained with the generator.

Codes: head ``i`` owns ``w_s[i]`` and ``w_t[i]`` (each [w_dim]), broadcast to the shape and texture
layers (``ws = [w_s] * num_shape_ws + [w_t] * num_texture_ws``), initialised from the starting model's
mapping of the head's latent (so the first step already renders the starting model's guess). They live
in a sparse embedding updated by SparseAdam: a head's code moves only on the steps that see it (a dense
Adam would keep pushing every code with stale momentum).

One step, ``batch`` heads (an epoch is a shuffled pass over the bank; batches never repeat within it):

* **points** (every head; no rays, cheap): occupancy BCE and class cross-entropy at ``point_batch`` of
  the head's cached class-balanced points, colour L1 at ``colour_batch`` surface points;
* **rays** (``ray_heads`` heads): volume rendering of ``rays`` pixel-centre rays of one cached 64 px view
  (half on the head): raw RGB L1 on the head, opacity BCE, composited-semantics cross-entropy;
* **super-resolution** (one head every ``sr_interval`` steps): the full 64 px render of its 128 px view's
  camera (field under no_grad: the points and rays teach the field), super-resolved with gradients to
  the SR network and the head's texture code; its 256 px output box-filtered to 128 px against the
  exact render: L1 + Laplacian-pyramid L1 + class-weighted L1, semantic cross-entropy.

Every random draw of step ``k`` comes from ``(seed, k)``, so a resumed run repeats exactly the steps an
uninterrupted one would have taken. Checkpoints (atomic, :mod:`training.checkpoint`) every
``checkpoint_minutes`` and at the end of a sitting (``--minutes``, cancel, SIGTERM).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.atomic_file import write_atomic
from ide3d_core.fast_render import bf16_is_native
from ide3d_core.networks.generator import Generator, TriPlanes
from ide3d_core.networks.io import load_generator
from ide3d_core.progress import Cancelled, CancelToken, ProgressFn, report
from ide3d_core.rendering import render_rays
from training.autodecoder.bank import BankSpec, build_bank, load_bank
from training.autodecoder.losses import (class_weights, laplacian_pyramid_l1, occupancy_bce, weighted_ce,
                                         weighted_l1)
from training.checkpoint import (checkpoint_name, latest_checkpoint, load_checkpoint, load_module,
                                 load_optimizer, module_tensors, optimizer_tensors, prune_checkpoints,
                                 save_checkpoint)

CONFIG_FILE = "autodecoder_config.json"
#: Batches with a non-finite loss are skipped (no update); this many in a row end the sitting.
MAX_SKIPPED_IN_A_ROW = 5
#: Keys of the schedule, which ``ide3d train-autodecoder --decay-start`` may change in an existing run.
SCHEDULE_KEYS = ("decay_start", "decay_steps", "decay_floor")
#: Keys added after the first runs were written; a saved config without them takes their defaults.
LATER_KEYS = frozenset(SCHEDULE_KEYS) | {"init_codes", "sr_heads"}
#: How a new run's codes start: the starting model's mapping (or code prior) of each head's latent, or
#: its standard encoder on each head's cached 128 px view (``encoder``: a run restarted from an exported
#: model whose encoders were trained on these heads starts near the codes it had learned).
INIT_CODES = ("mapping", "encoder")


@dataclass(frozen=True)
class AutoDecoderConfig:
    """Hyper-parameters of an auto-decoder run (``RUN/autodecoder_config.json``; strict JSON).

    ``init_from``: generator folder the run starts from (its weights and its mapping of each latent
    initialise the network and the codes; ``init_codes`` picks how the codes start, :data:`INIT_CODES`).
    Learning rates: Adam ``lr`` for the network, SparseAdam
    ``code_lr`` for the codes, ``code_l2`` pulls codes toward their bank mean. ``weights``: points
    (density, semantic, colour), rays (rgb, opacity, semantic), super-resolution (image, semantic).
    Schedule: both learning rates are constant until step ``decay_start`` (0: always constant), then
    follow a half cosine down to ``decay_floor`` times their value over ``decay_steps`` steps, and stay
    there (:func:`lr_factor`; a function of the step, so resume stays exact)."""

    bank: BankSpec = field(default_factory=BankSpec)
    init_from: str = "ide3d_core/models/default"
    init_codes: str = "mapping"
    batch: int = 4
    point_batch: int = 4096
    colour_batch: int = 2048
    #: heads of a step that get pixel rays (at most ``batch``): 4 (every head, every visit) gained about five
    #: times the field PSNR per minute of 2 (docs/training.md, "Where the PSNR is lost"), at +17 % a step
    ray_heads: int = 4
    rays: int = 512
    sr_interval: int = 3
    #: heads of a super-resolution step (the first ``sr_heads`` of the batch; a GPU sitting's big batches
    #: afford several)
    sr_heads: int = 1
    lr: float = 1.5e-3
    code_lr: float = 2e-2
    code_l2: float = 1e-4
    small_part_weight: float = 5.0
    weights: tuple[float, ...] = (1.0, 0.5, 1.0, 1.0, 0.5, 0.25, 1.0, 0.25)
    bf16: bool = True
    seed: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    log_steps: int = 10
    decay_start: int = 0
    decay_steps: int = 3000
    decay_floor: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoDecoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(names - set(d) - LATER_KEYS)
        if unknown or missing:
            raise ValueError(f"autodecoder config: unknown keys {unknown}, missing keys {missing}")
        d = dict(d, bank=BankSpec(**d["bank"]), weights=tuple(d["weights"]))
        return cls(**d)

    def __post_init__(self) -> None:
        if self.init_codes not in INIT_CODES:
            raise ValueError(f"init_codes must be one of {INIT_CODES}, got {self.init_codes!r}")
        if not 1 <= self.sr_heads <= self.batch:
            raise ValueError(f"sr_heads must be in 1..batch ({self.batch}), got {self.sr_heads}")


def lr_factor(step: int, cfg: AutoDecoderConfig) -> float:
    """Learning-rate multiplier at ``step``: 1 until ``decay_start``, a half cosine to ``decay_floor``
    over ``decay_steps``, then ``decay_floor``. ``decay_start == 0`` keeps 1 throughout."""
    if cfg.decay_start <= 0 or step < cfg.decay_start:
        return 1.0
    t = min(1.0, (step - cfg.decay_start) / max(1, cfg.decay_steps))
    return cfg.decay_floor + (1.0 - cfg.decay_floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def codes_to_ws(codes: torch.Tensor, G: Generator) -> torch.Tensor:
    """[B, 2, w_dim] (w_s, w_t) -> [B, num_ws, w_dim] W+ codes."""
    s = codes[:, :1].expand(-1, G.num_shape_ws, -1)
    t = codes[:, 1:].expand(-1, G.num_texture_ws, -1)
    return torch.cat([s, t], 1)


class CodeBank(nn.Module):
    """One (w_s, w_t) pair per bank head: ``weight [N, 2 * w_dim]`` in a sparse embedding."""

    def __init__(self, n: int, w_dim: int) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.embedding = nn.Embedding(n, 2 * w_dim, sparse=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embedding(idx).view(-1, 2, self.w_dim)

    @property
    def codes(self) -> torch.Tensor:
        """[N, 2, w_dim] all codes (detached)."""
        return self.embedding.weight.detach().view(-1, 2, self.w_dim)


def initial_codes(start: Generator, bank: dict[str, torch.Tensor], cfg: AutoDecoderConfig,
                  batch: int = 32) -> torch.Tensor:
    """[N, 2, w_dim] starting (w_s, w_t) of the bank heads (see :data:`INIT_CODES`). ``encoder``: the
    standard encoder of ``cfg.init_from`` (``encoders/standard``) on each head's 128 px image and labels;
    its W+ prediction is averaged over the shape and the texture layers (an auto-decoder code is one
    vector per group)."""
    n = bank["z"].shape[0]
    if cfg.init_codes == "mapping":
        # (a model with fewer latent coordinates than the bank, e.g. the tiny test model, reads the first ones)
        ws0 = start.mapping(bank["z"][:, :start.z_dim], start.canonical_labels(n))
        return torch.stack([ws0[:, 0], ws0[:, start.num_shape_ws]], 1)
    from ide3d_core.encoders import load_encoder

    folder = Path(cfg.init_from) / "encoders" / "standard"
    if not (folder / "config.json").exists():
        raise ValueError(f"init_codes 'encoder' needs {folder} (a model folder with a standard encoder)")
    return encoder_group_codes(load_encoder(folder), bank["img128"], bank["lab128"], start.num_shape_ws, batch)


@torch.no_grad()
def encoder_group_codes(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_shape_ws: int,
                        batch: int = 32) -> torch.Tensor:
    """[N, 2, w_dim] (w_s, w_t) of a standard encoder's W+ predictions from ``images [N, 3, R, R]`` and
    ``labels [N, R, R]``, averaged over the shape and the texture layers (an auto-decoder code is one
    vector per group)."""
    out = []
    for lo in range(0, images.shape[0], batch):
        ws, _pose = encoder(images[lo:lo + batch].float(), labels[lo:lo + batch].long())
        out.append(torch.stack([ws[:, :num_shape_ws].mean(1), ws[:, num_shape_ws:].mean(1)], 1))
    return torch.cat(out)


def bank_spec_beside(bank_dir: str | Path) -> BankSpec:
    """The :class:`BankSpec` of a run's bank folder, read from the run's configuration beside it (the
    default spec when there is none)."""
    saved = Path(bank_dir).parent / CONFIG_FILE
    return BankSpec(**json.loads(saved.read_text())["bank"]) if saved.exists() else BankSpec()


def _sparse_rays(G: Generator, planes: TriPlanes, cams: torch.Tensor, pix: torch.Tensor, res: int,
                 gen: torch.Generator):
    """Volume-render pixel-centre rays ``pix [B, R]`` (flat pixel ids) of ``res``-px cameras ``cams``."""
    cfg = G.config
    origins, dirs, near, far = G.camera_rays(cams, res)
    idx = pix[..., None].expand(-1, -1, 3)
    origins, dirs = origins.gather(1, idx), dirs.gather(1, idx)
    half = 0.5 * cfg.box_size

    def fn(points):
        f = G.query(planes, points)
        inside = (points.abs() <= half).all(dim=-1, keepdim=True)
        return f.sigma * inside.to(f.sigma.dtype), (f.features[..., :3], f.semantic.float().softmax(-1))

    comp = render_rays(fn, origins, dirs, near, far, cfg.coarse_samples, cfg.fine_samples, gen).composite
    rgb, probs = comp.values
    probs = probs + (1 - comp.opacity) * F.one_hot(torch.zeros_like(pix), probs.shape[-1]).float()
    return rgb, torch.log(probs + 1e-6), comp.opacity


def _training_generator(folder: str) -> tuple[Generator, Generator]:
    """``(G, start)``: the generator trained here and the starting model of ``folder``. ``G`` always has
    the mapping-network architecture (an auto-decoder never uses its mapping, and checkpoints keep one
    layout) with every other weight copied from ``start``, which may be an exported model whose code
    prior draws the initial codes (a new run started from the bundled model). ``G`` never has an
    environment background: the loop trains the field and the super-resolution, the background is fitted
    apart (``ide3d train-background``), and a run's checkpoints keep their layout when the model it
    started from gains one (a run started from ``ide3d_core/models/default`` before it had a background
    could not resume after it did). Nor a semantic logit adjustment: its losses see the model's own logits
    (the adjustment is fitted after training, scripts/fit_semantic_bias.py)."""
    start = load_generator(folder).float()
    G = Generator(dataclasses.replace(start.config, code_prior_dim=0, code_prior_components=0, background_hidden=0,
                                      semantic_logit_bias=()))
    own = G.state_dict()
    with torch.no_grad():
        for k, v in start.state_dict().items():
            if not k.startswith(("mapping.", "background.")):
                own[k].copy_(v)
    return G.train(), start.eval()


class Trainer:
    """State of one run: generator, codes, optimisers and bank, all on ``device`` (the CPU by default; a GPU
    sitting, scripts/gpu_autodecoder.py, trains on CUDA). Random draws come from ``(seed, step)`` on the
    device's own generator, so a run resumes exactly on the device it ran on."""

    def __init__(self, run_dir: Path, cfg: AutoDecoderConfig, bank: dict[str, torch.Tensor],
                 compile_synthesis: bool = False, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.run_dir, self.cfg = run_dir, cfg
        self.G, start = _training_generator(cfg.init_from)
        if compile_synthesis:  # in place: parameter names (and so checkpoints) stay the same
            self.G.synthesis.compile()
        for p in self.G.mapping.parameters():
            p.requires_grad_(False)
        n = cfg.bank.size
        self.codes = CodeBank(n, self.G.w_dim)
        with torch.no_grad():
            self.codes.embedding.weight.copy_(initial_codes(start, bank, cfg).flatten(1))
        self.G.to(self.device)
        self.codes.to(self.device)
        self.bank = {k: v.to(self.device) for k, v in bank.items()}
        params = [p for n_, p in self.G.named_parameters() if not n_.startswith("mapping.")]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
        self.opt_codes = torch.optim.SparseAdam(list(self.codes.parameters()), lr=cfg.code_lr, betas=(0.9, 0.99))
        self.step = 0
        self.skipped_in_a_row = 0
        self.cw = class_weights(cfg.small_part_weight, self.device)
        #: ``cfg.bf16`` is honoured only where bf16 is native (else float32: an emulated bf16 step is tens of
        #: times slower, :func:`ide3d_core.fast_render.bf16_is_native`)
        self.bf16 = cfg.bf16 and bf16_is_native(self.device)
        c = self.G.config
        self.delta = (c.ray_far - c.ray_near) / (c.coarse_samples + c.fine_samples)

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self) -> Path:
        tensors = {**module_tensors(self.G, "G"), **module_tensors(self.codes, "codes")}
        t1, d1 = optimizer_tensors(self.opt, "opt")
        t2, d2 = optimizer_tensors(self.opt_codes, "opt_codes")
        path = save_checkpoint(self.run_dir / "checkpoints" / checkpoint_name(self.step), {**tensors, **t1, **t2},
                               {"step": self.step, "opt": d1, "opt_codes": d2})
        prune_checkpoints(self.run_dir / "checkpoints", self.cfg.keep_checkpoints)
        return path

    def load(self, path: Path) -> None:
        tensors, state = load_checkpoint(path)
        load_module(self.G, tensors, "G")
        load_module(self.codes, tensors, "codes")
        load_optimizer(self.opt, tensors, state["opt"], "opt")
        load_optimizer(self.opt_codes, tensors, state["opt_codes"], "opt_codes")
        self.step = int(state["step"])

    # -- one step ----------------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Heads of step ``step``: consecutive slices of the epoch's permutation (seeded by the epoch)."""
        n, b = self.cfg.bank.size, self.cfg.batch
        epoch, k = divmod(step, steps_per_epoch(self.cfg))
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        return torch.from_numpy(perm[k * b:(k + 1) * b])

    def losses(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, G, bank, cw = self.cfg, self.G, self.bank, self.cw
        dev = self.device
        rng = np.random.default_rng([cfg.seed, step, 1])
        gen = torch.Generator(device=dev).manual_seed(int(rng.integers(0, 2**62)))
        idx = self.batch_indices(step).to(dev)
        b = len(idx)
        codes = self.codes(idx)
        ws = codes_to_ws(codes, G)
        w = cfg.weights
        # targets (gathered outside autocast: it rejects indexing float16 tensors)
        gp = torch.from_numpy(rng.integers(0, bank["geo_pts"].shape[1], (b, cfg.point_batch))).to(dev)
        cp = torch.from_numpy(rng.integers(0, bank["col_pts"].shape[1], (b, cfg.colour_batch))).to(dev)
        take = lambda key, sel: bank[key][idx[:, None], sel]  # noqa: E731  ([b, n, ...]: head idx[j], items sel[j])
        geo, col = take("geo_pts", gp), take("col_pts", cp)
        occ, cls, band = take("geo_occ", gp), take("geo_cls", gp).long(), take("geo_band", gp)
        col_rgb, col_cls = take("col_rgb", cp).float(), take("col_cls", cp).long()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            planes = G.planes(ws)
            f = G.query(planes, torch.cat([geo, col], 1))
            m = geo.shape[1]
            l_density = occupancy_bce(f.sigma[:, :m], occ, self.delta)
            l_semantic = weighted_ce(f.semantic[:, :m], cls, cw, band)
            l_colour = weighted_l1(f.features[:, m:, :3], col_rgb, cw[col_cls])
            loss = w[0] * l_density + w[1] * l_semantic + w[2] * l_colour
            logs = {"density": l_density, "semantic": l_semantic, "colour": l_colour}

            # rays
            k = min(cfg.ray_heads, b)
            if k > 0 and cfg.rays > 0:
                view = torch.from_numpy(rng.integers(0, bank["cam64"].shape[1], k)).to(dev)
                sel = idx[:k]
                cams = bank["cam64"][sel, view]
                lab = bank["lab64"][sel, view].reshape(k, -1).long()
                img = bank["img64"][sel, view].reshape(k, 3, -1).transpose(1, 2).float()
                on = (lab > 0).float()
                prob = on * (0.5 / on.sum(1, keepdim=True).clamp_min(1)) + 0.5 / lab.shape[1]
                pix = torch.multinomial(prob, cfg.rays, replacement=True, generator=gen)
                sub = TriPlanes(planes.semantic[:k], planes.texture[:k])
                rgb, logp, opacity = _sparse_rays(G, sub, cams, pix, bank["img64"].shape[-1], gen)
                t_lab, t_img = lab.gather(1, pix), img.gather(1, pix[..., None].expand(-1, -1, 3))
                l_rgb = weighted_l1(rgb, t_img, cw[t_lab] * (t_lab > 0).float())
                l_opacity = F.binary_cross_entropy(opacity[..., 0].float().clamp(1e-5, 1 - 1e-5),
                                                   (t_lab > 0).float())
                l_ray_sem = weighted_ce(logp, t_lab, cw)
                loss = loss + w[3] * l_rgb + w[4] * l_opacity + w[5] * l_ray_sem
                logs.update(ray_rgb=l_rgb, ray_opacity=l_opacity, ray_semantic=l_ray_sem)

        # super-resolution (float32 SR input; the field under no_grad)
        if cfg.sr_interval > 0 and step % cfg.sr_interval == 0:
            s = min(cfg.sr_heads, b)
            i = idx[:s]
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                sub = TriPlanes(planes.semantic[:s].detach(), planes.texture[:s].detach())
                out = G.render(sub, bank["cam128"][i], ws[:s].detach())
            w_sr = ws[:s, G.config.num_shape_ws + G.config.num_head_ws:]
            image, semantic = G.superresolution(out.features_raw.float(), out.semantic_raw.float(), w_sr)
            res = bank["img128"].shape[-1]
            factor = image.shape[-1] // res
            img = F.avg_pool2d(image.float(), factor) if factor > 1 else image.float()
            target = bank["img128"][i].float()
            lab = bank["lab128"][i].long()
            l_sr = (weighted_l1(img.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1), cw[lab])
                    + laplacian_pyramid_l1(img, target))
            lab_hi = F.interpolate(lab[:, None].float(), size=semantic.shape[-1], mode="nearest")[:, 0].long()
            l_sr_sem = weighted_ce(semantic.permute(0, 2, 3, 1), lab_hi, cw)
            loss = loss + w[6] * l_sr + w[7] * l_sr_sem
            logs.update(sr_image=l_sr, sr_semantic=l_sr_sem)

        mean = self.codes.codes.mean(0, keepdim=True)
        l_code = (codes - mean).square().sum(-1).mean()
        loss = loss + cfg.code_l2 * l_code
        logs["code_l2"] = l_code
        return loss, {k_: float(v.detach()) for k_, v in logs.items()}

    def train_step(self) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        self.opt_codes.zero_grad(set_to_none=True)
        loss, logs = self.losses(self.step)
        if not torch.isfinite(loss):
            # A rare bf16 overflow in one batch (met once at step 7295 of the first run, in the ray
            # semantics) must not end a sitting: skip the batch, stop only if it keeps happening.
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
                raise FloatingPointError(f"step {self.step}: non-finite loss {self.skipped_in_a_row} steps in a "
                                         f"row {logs}")
            self.step += 1
            return {"skipped": 1.0}
        self.skipped_in_a_row = 0
        loss.backward()
        f = lr_factor(self.step, self.cfg)
        for opt, base in ((self.opt, self.cfg.lr), (self.opt_codes, self.cfg.code_lr)):
            for group in opt.param_groups:
                group["lr"] = base * f
        self.opt.step()
        self.opt_codes.step()
        self.step += 1
        logs["loss"] = float(loss.detach())
        logs["lr_factor"] = f
        return logs


def train(run_dir: str | Path, cfg: AutoDecoderConfig | None = None, minutes: float | None = None,
          max_steps: int | None = None, progress: ProgressFn | None = None,
          cancel: CancelToken | None = None, compile_synthesis: bool = False,
          device: torch.device | str = "cpu") -> Path:
    """Build (or reuse) the bank, then train until ``minutes`` or ``max_steps`` or cancel; returns the
    last checkpoint. A run folder that holds a config resumes from its newest checkpoint (``cfg`` must
    then be None or equal). ``compile_synthesis``: ``torch.compile`` the tri-plane synthesis (a speed
    option of the sitting, not of the run: the same steps either way, up to float rounding)."""
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        old = AutoDecoderConfig.from_dict(json.loads(saved.read_text()))
        if cfg is not None and cfg != old:
            raise ValueError(f"{run_dir} holds a run with another configuration; use a new folder")
        cfg = old
    elif cfg is None:
        cfg = AutoDecoderConfig()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
    build_bank(run_dir / "bank", cfg.bank, progress, cancel)
    bank = load_bank(run_dir / "bank", cfg.bank)
    trainer = Trainer(run_dir, cfg, bank, compile_synthesis, device)
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is not None:
        trainer.load(last)
    start = time.monotonic()
    last_save = start
    log_path = run_dir / "log.jsonl"
    acc: dict[str, float] = {}
    n_acc = 0
    try:
        while True:
            if max_steps is not None and trainer.step >= max_steps:
                break
            if minutes is not None and time.monotonic() - start > 60 * minutes:
                break
            t0 = time.monotonic()
            logs = trainer.train_step()
            logs["sec"] = time.monotonic() - t0
            for k, v in logs.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if trainer.step % cfg.log_steps == 0:
                row = {"step": trainer.step, "epoch": trainer.step * cfg.batch / cfg.bank.size,
                       **{k: round(v / n_acc, 5) for k, v in acc.items()}}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                acc, n_acc = {}, 0
            if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                trainer.save()
                last_save = time.monotonic()
            try:
                report(progress, trainer.step, max_steps or 0, f"loss {logs.get('loss', float('nan')):.4f}", cancel)
            except Cancelled:
                break
    finally:
        path = trainer.save()
    return path


def steps_per_epoch(cfg: AutoDecoderConfig) -> int:
    return max(1, cfg.bank.size // cfg.batch)
