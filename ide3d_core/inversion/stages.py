# SPDX-License-Identifier: GPL-3.0-or-later
"""The two optimisation stages of an inversion (stages 2 and 3 of
:func:`~ide3d_core.inversion.procedure.invert_views`; see :mod:`ide3d_core.inversion.procedure`):

* :func:`optimise_codes` -- Adam on the codes (in W, "group" or W+) with the generator frozen, the PTI
  learning-rate ramp (:func:`~ide3d_core.inversion.policy.code_lr_at`) and decaying code noise; the first
  ``coarse_fraction`` of the steps render at ``coarse_resolution``; with ``refine_pose`` each view's camera
  is turned by a learned (yaw, pitch) at the same time (:func:`~ide3d_core.cameras.turn_labels`);
* :func:`tune_generator` -- pivotal tuning: Adam on every weight of a copy of the generator with the codes
  frozen (:func:`~ide3d_core.inversion.policy.tune_lr_at`, optionally coarse first steps).

Both stop early on a loss plateau (:class:`~ide3d_core.inversion.policy.Plateau`), never inside a coarse
phase or the tuning warm-up, note it in ``notes`` and report each step through ``progress`` (steps
``1 + k`` of ``total`` for the codes, ``1 + optimise_steps + k`` for the tuning) with ``cancel`` checked.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ide3d_core.cameras import turn_labels
from ide3d_core.inversion.objective import Objective
from ide3d_core.inversion.policy import InversionPolicy, Plateau, code_lr_at, tune_lr_at
from ide3d_core.progress import CancelToken, ProgressFn, report


def optimise_codes(objective: Objective, base: nn.Module, ws_init: torch.Tensor, num_shape_ws: int,
                   policy: InversionPolicy, total: int, notes: list[str], progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(codes [1, num_ws, w_dim], steps run, camera turns [N, 2]) after ``policy.optimise_steps`` steps from
    ``ws_init`` [1, num_ws, w_dim]; ``num_shape_ws`` is the number of shape layers (the "group" space's
    split). The turns are each view's (yaw, pitch) correction in radians (zeros unless
    ``policy.refine_pose``); the refined cameras are ``turn_labels(objective.cameras, *turns.T)``.
    With no steps: a copy of ``ws_init``, 0 and zeros."""
    ns = num_shape_ws
    dev = ws_init.device
    ws = ws_init.clone()
    steps_run = 0
    n_views = objective.cameras.shape[0]
    turn = torch.zeros(n_views, 2, device=dev, dtype=torch.float32)
    if policy.optimise_steps:
        gen = torch.Generator(device=dev).manual_seed(policy.seed)
        if policy.code_space == "w":
            var = ws_init.mean(1, keepdim=True).clone().requires_grad_(True)
            expand = lambda v: v.expand(-1, ws_init.shape[1], -1)  # noqa: E731
        elif policy.code_space == "group":
            nt = ws_init.shape[1] - ns
            var = torch.stack([ws_init[:, :ns].mean(1), ws_init[:, ns:].mean(1)], 1).clone().requires_grad_(True)
            expand = lambda v: torch.cat([v[:, :1].expand(-1, ns, -1), v[:, 1:].expand(-1, nt, -1)], 1)  # noqa: E731
        else:
            var = ws_init.clone().requires_grad_(True)
            expand = lambda v: v  # noqa: E731
        std = float(ws_init.std()) if ws_init.numel() > 1 else 1.0
        groups = [{"params": [var], "base_lr": policy.optimise_lr}]
        if policy.refine_pose:
            turn.requires_grad_(True)
            groups.append({"params": [turn], "base_lr": policy.pose_lr})
        opt = torch.optim.Adam(groups, lr=policy.optimise_lr, betas=(0.9, 0.999))
        prior = (math.radians(policy.pose_prior_deg)) ** 2
        n_steps = policy.optimise_steps
        coarse_until = int(round(policy.coarse_fraction * n_steps)) if policy.coarse_resolution else 0
        plateau = Plateau(policy.plateau_patience, policy.plateau_tol)
        for step in range(n_steps):
            for g in opt.param_groups:
                g["lr"] = code_lr_at(step, n_steps, policy, g["base_lr"])
            decay = max(0.0, 1.0 - step / (0.75 * n_steps)) ** 2
            noise = torch.randn(var.shape, generator=gen, device=dev) * (std * policy.code_noise * decay)
            coarse = step < coarse_until
            if step == coarse_until:
                plateau = Plateau(policy.plateau_patience, policy.plateau_tol)  # the loss scale changes here
            cams = turn_labels(objective.cameras, turn[:, 0], turn[:, 1]) if policy.refine_pose else None
            loss, _, _ = objective(base, expand(var + noise), policy.coarse_resolution if coarse else None,
                                   bf16=policy.autocast == "all", cameras=cams)
            if policy.refine_pose:  # a weak Gaussian prior: a turn the images do not ask for decays
                loss = loss + 1e-3 * turn.pow(2).sum() / prior
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps_run = step + 1
            value = float(loss.detach()) if policy.plateau_patience > 0 or progress is not None else 0.0
            report(progress, 1 + steps_run, total, f"codes loss {value:.4f}" + (" (coarse)" if coarse else ""),
                   cancel)
            # a plateau ends the stage, but never inside the coarse phase (the fine phase must run)
            if plateau(value) and not coarse and step < n_steps - 1:
                notes.append(f"code optimisation stopped early on a plateau after {steps_run} of {n_steps} steps")
                report(progress, 1 + n_steps, total, "codes converged", cancel)
                break
        ws = expand(var.detach()).clone()
    return ws, steps_run, turn.detach()


def tune_generator(objective: Objective, base: nn.Module, ws: torch.Tensor, policy: InversionPolicy, total: int,
                   notes: list[str], progress: ProgressFn | None = None, cancel: CancelToken | None = None
                   ) -> tuple[nn.Module, int]:
    """(tuned copy of ``base`` with gradients off, steps run) after up to ``policy.tune_steps`` (> 0) steps
    of pivotal tuning on the frozen codes ``ws`` [1, num_ws, w_dim]; ``base`` is left unchanged."""
    tuned = copy.deepcopy(base).train(False).requires_grad_(True)
    planes = None  # with the synthesis frozen the codes' planes never change: computed once
    if not policy.tune_synthesis:
        tuned.synthesis.requires_grad_(False)
        with torch.no_grad():
            planes = tuned.planes(ws)
    # the environment background: solved in closed form before the tuning (ide3d_core.inversion.backdrop), so
    # frozen by default (background_lr 0: Adam's first steps, of about the learning rate whatever the
    # gradient, moved an exactly solved flat backdrop by 0.15 in 3 steps); else its mixing bias at
    # background_lr and the rest at tune_lr
    backdrop = getattr(tuned, "background", None)
    own = []
    if backdrop is not None:
        if policy.background_lr == 0:
            backdrop.requires_grad_(False)
        else:
            own = [backdrop.mix.bias]
    # the surface detail is one texture shared by every head (ide3d_core.networks.detail): never tuned to a
    # portrait (its tables would then be part of every document's weight delta)
    detail = getattr(tuned, "detail", None)
    if detail is not None:
        detail.requires_grad_(False)
    own_ids = {id(p) for p in own}
    groups = [{"params": [p for p in tuned.parameters() if p.requires_grad and id(p) not in own_ids], "scale": 1.0}]
    if own:
        groups.append({"params": own, "scale": policy.background_lr / policy.tune_lr if policy.tune_lr > 0 else 0.0})
    opt = torch.optim.Adam(groups, lr=policy.tune_lr, betas=(0.9, 0.999))
    plateau = Plateau(policy.plateau_patience, policy.plateau_tol)
    steps_run = 0
    n_tune = policy.tune_steps
    ramp_steps = policy.tune_rampup * n_tune
    coarse_until = int(round(policy.tune_coarse_fraction * n_tune)) if policy.coarse_resolution else 0
    for step in range(n_tune):
        for g in opt.param_groups:
            g["lr"] = tune_lr_at(step, policy) * g["scale"]
        coarse = step < coarse_until
        if coarse_until and step == coarse_until:
            plateau = Plateau(policy.plateau_patience, policy.plateau_tol)  # the loss scale changes here
        loss, _, _ = objective(tuned, ws, policy.coarse_resolution if coarse else None,
                               bf16=policy.autocast in ("tune", "all"), planes=planes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps_run = step + 1
        value = float(loss.detach()) if policy.plateau_patience > 0 or progress is not None else 0.0
        report(progress, 1 + policy.optimise_steps + steps_run, total, f"tuning loss {value:.4f}", cancel)
        # a plateau ends the stage, but never inside the warm-up or the coarse phase
        if plateau(value) and not coarse and step + 1 >= ramp_steps and step < n_tune - 1:
            notes.append(f"pivotal tuning stopped early on a plateau after {steps_run} of "
                         f"{policy.tune_steps} steps")
            report(progress, total, total, "tuning converged", cancel)
            break
    tuned.requires_grad_(False)
    return tuned, steps_run
