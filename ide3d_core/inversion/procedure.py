# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion (IDE-3D section 3.3) from one or more views of one head: encoder initialisation,
code optimisation, pivotal tuning.

:func:`invert_views` takes N >= 1 views (:class:`~ide3d_core.inversion.views.InversionView`: image,
optional mask, optional camera) and returns an :class:`InversionResult`: one set of pivot codes shared by
every view, the primary (most frontal) view's camera, one pivotal-tuned generator (stored as a
:class:`~ide3d_core.portrait.WeightDelta` from the base model), per-stage measurements and a per-view
report (camera, robust weight, residual PSNR per stage, notes). :func:`invert` is the one-view call of the
same procedure (there is no second implementation).

Stages (each can be switched off through :class:`InversionPolicy`):

1. **Initialisation** -- the texture encoder gives ``w_t`` and each view's yaw/pitch, the semantic encoder
   gives ``w_s`` from the mask; both from the primary view (``init="frontal"``) or averaged over the views
   (``init="mean"``). Without an encoder the codes start at the average codes (``Generator.average_codes``).
2. **Code optimisation** in W (one code repeated), "group" (one ``w_s`` repeated over the shape layers and one
   ``w_t`` over the texture layers: the layout an auto-decoded model's codes were learned in) or W+ (one code
   per layer), Adam with the PTI-style
   learning-rate ramp and decaying code noise; the generator is frozen. The first ``coarse_fraction`` of the
   steps render at neural resolution ``coarse_resolution`` (the image is still super-resolved to full size),
   about 2.7x cheaper per step on a CPU; the stage stops early when its loss plateaus.
3. **Pivotal tuning** of the generator weights with the codes frozen (PTI), Adam on all weights, at the
   model's neural resolution (optionally: a learning-rate warm-up, ``tune_rampup``, and coarse first steps,
   ``tune_coarse_fraction``; both off by default, see docs/multiview.md); it also stops early on a plateau.

Backdrop (models with an environment background only): after stage 1 and again after stage 2, the
portrait's backdrop is solved in closed form from every view's background pixels and written into a copy
of the generator (:mod:`~ide3d_core.inversion.backdrop`); stages 2 and 3 start from that copy, and the
result's weight delta carries it (also when no tuning runs).

Surface detail (models with one): the fit renders without it (``policy.fit_detail``); afterwards its
strength for this portrait is solved in closed form at the views (``policy.detail_strength``,
:mod:`~ide3d_core.inversion.detail_strength`) and carried by the weight delta.

Label offsets: last, per-class logit offsets are solved at the views with a given or parsed mask, so the
label maps agree with the masks class by class (``policy.label_offsets``,
:mod:`~ide3d_core.inversion.label_offsets`); they move label maps only, and the weight delta carries them.

Loss of one view (no downloaded weights needed): ``l2 * MSE + ssim * (1 - MS-SSIM) + semantic * CE(rendered
semantic logits, mask)`` plus ``lpips * LPIPS`` when the caller passes an LPIPS module (its weights are the
user's to supply). MS-SSIM is computed at ``ssim_resolution`` (2x2 average pooled: a sixth of its full-size
cost, the same structure terms at the scales that matter). The views' losses are combined with Cauchy
weights (:func:`~ide3d_core.inversion.views.robust_weights`), re-computed every step, so a bad view cannot
dominate; with one view the loss is that view's loss.

Masks: when a view's ``mask`` is None the ``parser`` callable (image -> label ids) is used if given;
otherwise the mask is the generator's own semantic render of the initial codes at that view, and that
view's semantic loss is switched off (it would only pull toward the start). A view whose given or parsed
mask shows no face is skipped with a note; no usable view raises
:class:`~ide3d_core.inversion.views.NoUsableViews`.

Camera: when a view's ``camera`` is None the encoder's predicted yaw/pitch give an orbit camera (radius 2.7,
pivot (0, 0, 0.2)); without an encoder the canonical camera is used (noted in the result). With
``policy.refine_pose`` every view's camera is turned about the head's centre by a (yaw, pitch) learned with
the codes in stage 2; the tuning, the per-view report and the result use the refined cameras (noted).

Odd views: after fitting, a view whose residual PSNR is more than ``odd_view_db`` below the median of the
other views' is named in a note (apparently a different person, or a wrong camera).

Parts: the schedule (:class:`InversionPolicy`, learning rates, early stopping) is in
:mod:`~ide3d_core.inversion.policy`, the loss of the views in :mod:`~ide3d_core.inversion.objective`, the
code-optimisation and pivotal-tuning loops in :mod:`~ide3d_core.inversion.stages`, the result in
:mod:`~ide3d_core.inversion.result`; this module keeps the procedure and re-exports their public names.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ide3d_core.cameras import canonical_camera, orbit_camera, turn_labels
from ide3d_core.inversion.backdrop import INITIAL_MIN_PSNR, solve_backdrop
from ide3d_core.inversion.detail_strength import solve_detail_strength
from ide3d_core.inversion.label_offsets import solve_label_offsets
from ide3d_core.inversion.losses import psnr
from ide3d_core.inversion.objective import Objective
from ide3d_core.inversion.policy import THOROUGH_POLICY, InversionPolicy, tune_lr_at
from ide3d_core.inversion.result import InversionResult
from ide3d_core.inversion.stages import optimise_codes, tune_generator
from ide3d_core.inversion.views import (InversionView, NoUsableViews, ViewReport, check_labels, has_face,
                                        image_to_tensor, odd_views, prepare_target, primary_view,
                                        robust_weights, yaw_pitch_deg)
from ide3d_core.networks.generator import BACKGROUND_CLASS
from ide3d_core.portrait import WeightDelta
from ide3d_core.progress import CancelToken, ProgressFn, report

__all__ = ["InversionPolicy", "InversionResult", "InversionView", "NoUsableViews", "ViewReport",
           "image_to_tensor", "invert", "invert_views", "tune_lr_at", "THOROUGH_POLICY"]

_Objective = Objective  # the name scripts/sweep_inversion_tuning.py imports


def invert(generator: nn.Module, image: np.ndarray | torch.Tensor, mask: np.ndarray | None = None,
           camera: np.ndarray | None = None, encoder: nn.Module | None = None,
           policy: InversionPolicy = InversionPolicy(), lpips: nn.Module | None = None,
           parser: Callable[[torch.Tensor], np.ndarray] | None = None,
           progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InversionResult:
    """Invert one portrait: :func:`invert_views` with one view (see the module docstring).

    Args:
        generator: the base generator (left unchanged; tuning works on a copy).
        image: (H, W, 3) uint8 RGB or [1, 3, H, W] float in [-1, 1]; resized to the generator's size.
        mask: (H, W) label ids of the image, or None.
        camera: (25,) packed label of the image's camera, or None (predicted by the encoder).
        encoder: the standard :class:`~ide3d_core.encoders.HybridEncoder`, or None.
    """
    return invert_views(generator, [InversionView(image, mask, camera, "photo")], encoder=encoder, policy=policy,
                        lpips=lpips, parser=parser, progress=progress, cancel=cancel)


def invert_views(generator: nn.Module, views: Sequence[InversionView], encoder: nn.Module | None = None,
                 policy: InversionPolicy = InversionPolicy(), lpips: nn.Module | None = None,
                 parser: Callable[[torch.Tensor], np.ndarray] | None = None,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> InversionResult:
    """Invert N >= 1 views of one head into one set of codes and one tuned generator (module docstring).

    Raises:
        NoUsableViews: no views, or none shows a face.
        ValueError: a malformed image, mask or camera (names the view).
    """
    if not views:
        raise NoUsableViews("no views to invert")
    dev = next(generator.parameters()).device
    size = int(generator.img_resolution)
    base = generator.eval()
    notes: list[str] = []
    stages: dict[str, dict[str, float]] = {}
    total = policy.optimise_steps + policy.tune_steps + 1
    use_encoder = policy.use_encoder and encoder is not None
    if policy.use_encoder and encoder is None:
        notes.append("no encoder given: codes start at the average code")
    names = [v.name or f"view {i}" for i, v in enumerate(views)]

    # -- stage 1: targets, cameras, masks and initial codes ------------------------------------------
    t0 = time.perf_counter()
    targets = []
    for name, v in zip(names, views):
        try:
            targets.append(prepare_target(v.image, size, dev))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    target_all = torch.cat(targets)
    ns = int(generator.num_shape_ws)
    with torch.no_grad():
        w_t_all, pose_all = encoder.encode_texture(target_all) if use_encoder else (None, None)
    cameras: list[np.ndarray] = []
    angles: list[tuple[float, float]] = []  # (yaw, pitch) degrees per view
    for i, v in enumerate(views):
        cam = v.camera
        if cam is None:
            if pose_all is not None:
                pitch = float(np.clip(float(pose_all[i, 1]), -math.radians(60), math.radians(60)))
                cam = orbit_camera(float(pose_all[i, 0]), pitch).label()
            else:
                cam = canonical_camera().label()
                notes.append(f"{names[i]}: no camera and no encoder: the canonical camera is assumed"
                             if len(views) > 1 else "no camera and no encoder: the canonical camera is assumed")
        try:
            cam = np.asarray(cam, dtype=np.float32).reshape(25)
            angles.append(yaw_pitch_deg(cam))
        except ValueError as exc:
            raise ValueError(f"{names[i]}: bad camera ({exc})") from None
        cameras.append(cam)

    # masks of the views that bring or parse one; views without a face are dropped here
    masks: list[np.ndarray | None] = []
    sources: list[str] = []
    reports: dict[int, ViewReport] = {}
    for i, v in enumerate(views):
        if v.mask is not None:
            try:
                m, src = check_labels(v.mask, size), "given"
            except ValueError as exc:
                raise ValueError(f"{names[i]}: {exc}") from None
        elif parser is not None:
            m, src = check_labels(parser(targets[i]), size), "parser"
        else:
            m, src = None, "self"
        if m is not None and not has_face(m):
            msg = f"{names[i]}: no face in its {'mask' if src == 'given' else 'parsed mask'}; view skipped"
            notes.append(msg)
            reports[i] = ViewReport(names[i], i, False, note=msg)
        masks.append(m)
        sources.append(src)
    used = [i for i in range(len(views)) if i not in reports]
    if not used:
        raise NoUsableViews(f"none of the {len(views)} view(s) shows a face" if len(views) > 1
                            else f"{names[0]} shows no face")
    primary = used[primary_view([angles[i] for i in used])]

    ws_init = generator.average_codes(1).detach().float().clone()  # per group for a code prior
    with torch.no_grad():
        if use_encoder:
            w_t = w_t_all[used].mean(0, keepdim=True) if policy.init == "mean" else w_t_all[primary:primary + 1]
            ws_init[:, ns:] = w_t.to(ws_init.dtype)
        cams_t = torch.from_numpy(np.stack([cameras[i] for i in used])).to(dev)
        need_self = [k for k, i in enumerate(used) if masks[i] is None]
        if need_self:
            sem = base(ws_init.expand(len(need_self), -1, -1), cams_t[need_self]).semantic.argmax(1)
            for k, s in zip(need_self, sem):
                masks[used[k]] = s.to(torch.uint8).cpu().numpy()
            notes.append("no mask and no parser: the generator's own semantic render of the initial codes is "
                         "used, semantic loss off" + ("" if len(views) == 1 else
                                                      f" ({', '.join(names[used[k]] for k in need_self)})"))
        labels = torch.from_numpy(np.stack([masks[i].astype(np.int64) for i in used])).to(dev)
        if use_encoder:
            with_mask = [k for k, i in enumerate(used) if sources[i] != "self"] or list(range(len(used)))
            if policy.init == "mean":
                w_s = encoder.encode_shape(labels[with_mask]).mean(0, keepdim=True)
            else:
                k0 = used.index(primary)
                w_s = encoder.encode_shape(labels[k0:k0 + 1] if k0 in with_mask else labels[with_mask[:1]])
            ws_init[:, :ns] = w_s.to(ws_init.dtype)
    semantic_on = torch.tensor([float(sources[i] != "self") for i in used], device=dev)
    objective = Objective(target_all[used], labels, cams_t, semantic_on, policy, lpips)
    per_view: dict[str, tuple[list[float], list[float]]] = {}

    def measure(stage: str, g: nn.Module, ws: torch.Tensor, t_start: float, steps: int) -> None:
        with torch.no_grad():
            loss, losses, img = objective(g, ws)
        p = psnr(img, objective.targets)
        per_view[stage] = ([float(x) for x in p], [float(x) for x in losses])
        stages[stage] = {"psnr": float(p.mean()), "loss": float(loss), "seconds": time.perf_counter() - t_start,
                         "steps": steps}

    # a model with an environment background: the portrait's backdrop, solved from the views' background
    # pixels (ide3d_core.inversion.backdrop), before the codes move and again after
    start, _, fit_db = solve_backdrop(base, objective.targets, objective.labels, objective.cameras, ws_init,
                                      min_psnr=INITIAL_MIN_PSNR if policy.refine_pose else None)
    if start is base and not math.isnan(fit_db):  # a solve that explained too little: after the cameras move
        notes.append(f"the backdrop fits the photos' background poorly at the given cameras ({fit_db:.1f} dB): "
                     "solved again once the cameras are refined")
    measure("init", start, ws_init, t0, 0)
    report(progress, 1, total, "initialised", cancel)

    # -- stage 2: code optimisation ---------------------------------------------------------------
    t0 = time.perf_counter()
    ws, steps_run, turns = optimise_codes(objective, start, ws_init, ns, policy, total, notes, progress, cancel)
    if policy.refine_pose and steps_run:
        objective = objective.with_cameras(turn_labels(objective.cameras, turns[:, 0], turns[:, 1]))
        refined = objective.cameras.cpu().numpy().astype(np.float32)
        for k, i in enumerate(used):
            cameras[i] = refined[k]
            angles[i] = yaw_pitch_deg(refined[k])
        deg = np.degrees(turns.cpu().numpy())
        turned = ", ".join(f"{names[i]} {deg[k, 0]:+.1f} / {deg[k, 1]:+.1f}" for k, i in enumerate(used))
        notes.append(f"cameras refined (yaw / pitch turn in degrees): {turned}")
    start, pixels, _ = solve_backdrop(start, objective.targets, objective.labels, objective.cameras, ws)
    if getattr(base, "background", None) is not None:
        notes.append(f"backdrop solved from {pixels} background pixels" if pixels else
                     "too few background pixels: the backdrop is the codes' own")
    measure("optimise", start, ws, t0, steps_run)

    # -- stage 3: pivotal tuning -------------------------------------------------------------------
    tuned_module: nn.Module = start
    delta = None if start is base else WeightDelta.between(base, start, policy.delta_dtype)
    if policy.tune_steps:
        t0 = time.perf_counter()
        tuned, steps_run = tune_generator(objective, start, ws, policy, total, notes, progress, cancel)
        delta = WeightDelta.between(base, tuned, policy.delta_dtype)
        tuned_module = delta.apply(base, check=False).requires_grad_(False).eval()
        measure("tune", tuned_module, ws, t0, steps_run)

    # -- the surface detail's strength (models with one), solved at the views --------------------------
    finished, strengths, mean = solve_detail_strength(tuned_module, objective.targets, objective.cameras, ws,
                                                      policy.detail_strength)
    if strengths is not None:
        head = [float(x) for k, x in enumerate(strengths) if k != BACKGROUND_CLASS]
        notes.append(f"surface detail strength {mean:.2f} over the head" + (
            "" if policy.detail_strength == "global" else f" (per class {min(head):.2f}-{max(head):.2f})")
            + ", solved at the input views")

    # -- label offsets, solved at the views that bring (or parse) a mask --------------------------------
    with_mask = [k for k, i in enumerate(used) if sources[i] != "self"]
    if policy.label_offsets and with_mask:
        pick = torch.tensor(with_mask, device=objective.cameras.device)
        finished, offsets, before, after = solve_label_offsets(finished, objective.cameras[pick], ws,
                                                               objective.labels[pick])
        if offsets is not None:
            notes.append(f"label offsets solved at the masks: mIoU there {before:.3f} -> {after:.3f}")
    if finished is not tuned_module:
        delta = WeightDelta.between(base, finished, policy.delta_dtype)
        tuned_module = delta.apply(base, check=False).requires_grad_(False).eval()

    # -- per-view report ----------------------------------------------------------------------------
    final = list(stages)[-1]
    final_losses = torch.tensor(per_view[final][1])
    weights = robust_weights(final_losses, policy.robust_scale)
    odd = set(odd_views(per_view[final][0], policy.odd_view_db)) if len(used) > 1 else set()
    for k, i in enumerate(used):
        note = ""
        if k in odd:
            med = float(np.median([p for j, p in enumerate(per_view[final][0]) if j != k]))
            note = (f"{names[i]} fits far worse than the other views ({per_view[final][0][k]:.1f} dB vs "
                    f"{med:.1f} dB): is it the same person, with the right camera? (or the model cannot fit "
                    f"it together with the others)")
            notes.append(note)
        reports[i] = ViewReport(names[i], i, True, cameras[i], angles[i][0], angles[i][1], sources[i],
                                float(weights[k]), {s: v[0][k] for s, v in per_view.items()},
                                {s: v[1][k] for s, v in per_view.items()}, note)
    return InversionResult(ws=ws.detach().cpu(), ws_init=ws_init.detach().cpu(), camera=cameras[primary],
                           generator=tuned_module, delta=delta, mask=masks[primary], mask_source=sources[primary],
                           stages=stages, notes=notes, views=tuple(reports[i] for i in range(len(views))),
                           primary=primary)
