# SPDX-License-Identifier: GPL-3.0-or-later
"""The bundled model's evaluation (issue 14): samples against procedural heads, mask-edit faithfulness.

    python scripts/eval_model.py --model ide3d_core/models/default [--samples 24] [--edit-seeds 8]
        [--json out.json] [--sheet out.png] [--threads 2]

Prints one Markdown table. Independent truth throughout: the procedural heads' exact renders.

* **Samples** (``ide3d generate``'s defaults: seeds 0.., the model's default truncation, else
  ``--truncation``; the canonical conditioning) at
  yaw -45, 0, +45 against procedural heads (seeds 0.. of ``sample_heads``) at the same cameras and
  256 px: sharpness = mean absolute Laplacian of the grey image (whole image; and on the head only,
  i.e. inside each image's own head mask, since the procedural backgrounds carry fine noise), diversity = mean pairwise L1 between the
  samples of one yaw, both as ratios to the procedural heads'; SWD (x1e3, training.metrics.swd) against
  them (beside them, the same heads rendered exactly at the neural resolution and upsampled bicubically:
  what a perfect field gives without any super-resolution detail); small parts = share of samples whose semantic map shows at least ``--part-pixels`` pixels of
  eyes, of brows and of mouth/lips (at each yaw; the procedural share beside it).
* **Fit** (auto-decoded models): the bank heads shipped in ``fit_examples.safetensors`` rendered from
  their learned codes against their exact procedural renders at yaw -40/0/+40 (PSNR, silhouette IoU,
  mIoU): how well the training heads were learned.
* **Mask edits** through the canonical editor (``MODEL/encoders/canonical``), on generated portraits, as
  ``ide3d edit`` makes them (the editor, then the refined shape residual) and with the editor alone:
  removing the hair (hair -> background in the canonical map) and painting a hat; painted vs
  re-rendered mIoU (canonical view), PSNR of the RGB on unedited pixels, the hat class's own IoU, and for
  the hair removal the share of hair pixels left (canonical view; side views at yaw +-40) and the mean RGB
  change inside / outside the removed region. Beside them the
  hair removal's bound: a perfect editor returns the same head with its hair switched off, whose skull
  covers part of the painted-out region, so it scores ``hair_miou_exact_bald_head`` (procedural heads,
  exact labels), not 1.

Held-out inversion (invert from yaw 20 with the default settings, compare at yaw -40/0/+40, Chamfer)
is ``scripts/eval_inversion.py``; the model card quotes both.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ide3d_core.cameras import orbit_camera  # noqa: E402
from ide3d_core.images import to_uint8_hwc  # noqa: E402
from ide3d_core.inversion.losses import mean_iou, psnr  # noqa: E402
from ide3d_core.labels import ID  # noqa: E402
from ide3d_core.networks import load_generator  # noqa: E402

YAWS = (-45.0, 0.0, 45.0)
PARTS = {"eyes": (ID["l_eye"], ID["r_eye"]), "brows": (ID["l_brow"], ID["r_brow"]),
         "mouth": (ID["mouth"], ID["u_lip"], ID["l_lip"])}
LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def cams(yaw: float, n: int) -> torch.Tensor:
    return torch.as_tensor(orbit_camera(math.radians(yaw)).label()).float().expand(n, 25).contiguous()


def sharpness(images: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean |Laplacian| of the grey images ([N, 3, H, W] in [-1, 1]), over ``mask [N, H, W]`` if given."""
    grey = images.float().mean(1, keepdim=True)
    lap = F.conv2d(grey, LAPLACE, padding=1).abs()[:, 0]
    if mask is None:
        return float(lap[:, 1:-1, 1:-1].mean())
    m = mask.bool().clone()
    m[:, [0, -1]] = False
    m[:, :, [0, -1]] = False
    return float(lap[m].mean())


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L1 between the images of a set."""
    n = images.shape[0]
    d = [float((images[i] - images[j]).abs().mean()) for i, j in itertools.combinations(range(n), 2)]
    return float(np.mean(d))


def part_share(labels: torch.Tensor, min_pixels: int) -> dict[str, float]:
    """Share of label maps [N, H, W] showing at least ``min_pixels`` pixels of each part."""
    return {name: float(np.mean([int(torch.isin(m, torch.tensor(ids)).sum()) >= min_pixels for m in labels]))
            for name, ids in PARTS.items()}


@torch.no_grad()
def sample_sets(G, n: int, res: int, truncation: float):
    """{yaw: (generated image, generated labels, procedural image, procedural labels)}."""
    from training.procedural import render_heads, sample_heads

    ws = G.codes_from_seeds(list(range(n)), truncation_psi=truncation)
    planes = G.planes(ws)
    heads = sample_heads(n, torch.Generator().manual_seed(0))
    out = {}
    for yaw in YAWS:
        r = G.render(planes, cams(yaw, n), ws)
        img = F.interpolate(r.image.float(), size=res, mode="area") if r.image.shape[-1] != res else r.image.float()
        lab = r.semantic.argmax(1)
        lab = F.interpolate(lab[:, None].float(), size=res, mode="nearest")[:, 0].long()
        p = render_heads(heads, cams(yaw, n), res)
        low = render_heads(heads, cams(yaw, n), G.neural_resolution).image
        ref = F.interpolate(low, size=res, mode="bicubic", align_corners=False).clamp(-1, 1)
        out[yaw] = (img.clamp(-1, 1), lab, p.image, p.labels, lab > 0, p.mask[:, 0] > 0.5, ref)
    return out


def painted_edits(current: np.ndarray) -> dict[str, np.ndarray]:
    """The evaluation's two paintings of a canonical label map ``current`` (H, W) uint8: "hair" (every hair
    pixel -> background) and "hat" (a dome over the top of the head -> hat)."""
    edits = {"hair": np.where(current == ID["hair"], ID["background"], current).astype(np.uint8)}
    hat = current.copy()
    face = np.argwhere(current > 0)
    top = face[:, 0].min()
    h, w = current.shape
    yy, xx = np.mgrid[:h, :w]
    cx = face[:, 1].mean()
    dome = ((xx - cx) / (0.28 * w)) ** 2 + ((yy - (top + 0.12 * h)) / (0.16 * h)) ** 2 <= 1
    hat[dome & (yy < top + 0.14 * h)] = ID["hat"]
    edits["hat"] = hat
    return edits


@torch.no_grad()
def edit_eval(G, editor, seeds: list[int], truncation: float, refine_steps: int | None = None) -> dict[str, float]:
    """The two edits (module docstring) of generated portraits ``seeds``: ``ide3d edit``'s default (the editor,
    then the refined shape residual, :mod:`ide3d_core.shape_residual`; ``refine_steps`` overrides its steps)
    and, beside it (``*_editor_alone``), the editor's codes alone. Hair left at the side (yaw +-40): the share
    of the pre-edit hair pixels still hair. A picture of these edits: scripts/mask_edit_sheet.py."""
    import time

    from ide3d_core.editing import canonical_labels, mask_edit, render_state
    from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_fingerprint
    from ide3d_core.shape_residual import RefineConfig

    refine = RefineConfig() if refine_steps is None else RefineConfig(steps=refine_steps)
    cam = orbit_camera(0.0).label()
    sides = [orbit_camera(math.radians(y)).label() for y in (-40.0, 40.0)]
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for s in seeds:
        ws = G.codes_from_seeds([s], truncation_psi=truncation).cpu()
        portrait = Portrait(camera=cam, generator_config=G.config.to_dict(),
                            base_fingerprint=generator_fingerprint(G),
                            history=(EditRecord("seed", {"seed": s}, PortraitState(ws)),))
        before = render_state(G, portrait.state, cam).image[0]
        before_sides = [render_state(G, portrait.state, c) for c in sides]
        cur = canonical_labels(G, portrait.state)
        hair = cur == ID["hair"]
        for name, painted in painted_edits(cur).items():
            if (painted == cur).all():
                continue
            t0 = time.perf_counter()
            refined = mask_edit(portrait, G, editor, painted, current=cur, refine=refine if refine.steps else None)
            add("refine_seconds", time.perf_counter() - t0)
            results = {"": refined, "_editor_alone": mask_edit(portrait, G, editor, painted, current=cur)}
            for suffix, after_p in results.items():
                after = render_state(G, after_p.state, cam)
                new_lab = after.semantic[0].argmax(0).cpu().numpy()
                add(f"{name}_miou{suffix}",
                    mean_iou(torch.from_numpy(new_lab), torch.from_numpy(painted.astype(np.int64))))
                if name == "hat":
                    got, want = new_lab == ID["hat"], painted == ID["hat"]
                    add(f"hat_class_iou{suffix}", float((got & want).sum() / max(1, (got | want).sum())))
                same = torch.from_numpy(painted == cur)
                if same.any():
                    diff = (after.image[0] - before).float()
                    mse = float(diff.square().mean(0)[same].mean())
                    add(f"{name}_psnr{suffix}", 10 * math.log10(4.0 / max(mse, 1e-10)))
                if name == "hair" and hair.sum() > 0:
                    add(f"hair_left{suffix}", float((new_lab == ID["hair"]).sum() / hair.sum()))
                    change = (after.image[0] - before).abs().mean(0)
                    add(f"hair_change_in{suffix}", float(change[torch.from_numpy(hair)].mean()))
                    add(f"hair_change_out{suffix}", float(change[~torch.from_numpy(hair)].mean()))
                    left = []
                    for b, c in zip(before_sides, sides):
                        a = render_state(G, after_p.state, c)
                        bh = b.semantic[0].argmax(0) == ID["hair"]
                        left.append(float(((a.semantic[0].argmax(0) == ID["hair"]) & bh).sum() / max(1, int(bh.sum()))))
                    add(f"hair_left_side{suffix}", float(np.mean(left)))
    return {k: float(np.mean(v)) for k, v in rows.items()}


@torch.no_grad()
def hair_edit_bound(n: int) -> dict[str, float]:
    """What a perfect editor scores on the hair-removal edit: procedural heads 0..n-1 (``sample_heads``,
    seed 0) from the canonical camera; the painted map is the eval's (hair -> background), the perfect
    result is the same head with its hair switched off (``HeadBatch.without_class``), whose skull fills
    part of the painted-out region. mIoU of that exact bald head against the painted map, and the share of
    the painted-out pixels where it shows the head rather than background."""
    from ide3d_core.cameras import canonical_camera
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(n, torch.Generator().manual_seed(0))
    c = torch.from_numpy(canonical_camera().label())[None].float().expand(n, -1)
    before = render_heads(heads, c, 256).labels
    bald = render_heads(heads.without_class(ID["hair"]), c, 256).labels
    ious, covered = [], []
    for i in range(n):
        hair = before[i] == ID["hair"]
        if not hair.any():
            continue
        painted = torch.where(hair, torch.full_like(before[i], ID["background"]), before[i])
        ious.append(mean_iou(bald[i], painted))
        covered.append(float((bald[i][hair] != ID["background"]).float().mean()))
    return {"hair_miou_exact_bald_head": float(np.mean(ious)) if ious else float("nan"),
            "hair_removed_pixels_covered_by_skull": float(np.mean(covered)) if covered else float("nan")}


@torch.no_grad()
def fit_eval(G, model_dir: Path, sheet: Path | None = None, sheet_heads: int = 6) -> dict[str, float]:
    """Bank heads shipped with the model (``fit_examples.safetensors``: latents + learned codes) against
    their exact procedural renders at yaw -40/0/+40, 256 px: PSNR, silhouette IoU, semantic mIoU.
    ``sheet``: a picture of the first ``sheet_heads`` heads, a row each, model beside exact per yaw."""
    from safetensors.torch import load_file

    from training.autodecoder.loop import codes_to_ws
    from training.procedural import heads_from_latent, median_padded, render_heads

    ex = load_file(str(model_dir / "fit_examples.safetensors"))
    ws = codes_to_ws(ex["codes"].float(), G)
    n = ws.shape[0]
    heads = heads_from_latent(median_padded(ex["z"]))
    planes = G.planes(ws)
    res: dict[str, list[float]] = {"fit_psnr": [], "fit_silhouette_iou": [], "fit_miou": []}
    tiles = []
    for yaw in (-40.0, 0.0, 40.0):
        out = G.render(planes, cams(yaw, n), ws)
        truth = render_heads(heads, cams(yaw, n), G.img_resolution)
        tiles.append((to_uint8_hwc(out.image[:sheet_heads].clamp(-1, 1)), to_uint8_hwc(truth.image[:sheet_heads])))
        lab = out.semantic.argmax(1)
        sil = F.interpolate(out.opacity, size=G.img_resolution, mode="bilinear", align_corners=False)[:, 0] > 0.5
        for i in range(n):
            res["fit_psnr"].append(float(psnr(out.image[i:i + 1].clamp(-1, 1), truth.image[i:i + 1])))
            t = truth.mask[i, 0] > 0.5
            res["fit_silhouette_iou"].append(float((sil[i] & t).sum() / (sil[i] | t).sum().clamp_min(1)))
            res["fit_miou"].append(mean_iou(lab[i], truth.labels[i]))
    if sheet is not None:
        from PIL import Image

        rows = [np.concatenate([np.concatenate([m[i], t[i]], 1) for m, t in tiles], 1) for i in range(len(tiles[0][0]))]
        sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, 0)).save(sheet)
    return {k: float(np.mean(v)) for k, v in res.items()}


def contact_sheet(sets, path: Path, n: int = 6) -> None:
    """Rows: for each of ``n`` samples, generated (top) and procedural (bottom) at each yaw."""
    from PIL import Image

    def u8(x):
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    rows = []
    for i in range(n):
        rows.append(np.concatenate([u8(sets[y][0][i]) for y in YAWS], 1))
        rows.append(np.concatenate([u8(sets[y][2][i]) for y in YAWS], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "ide3d_core/models/default"))
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--edit-seeds", type=int, default=8)
    ap.add_argument("--part-pixels", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    ap.add_argument("--fit-sheet", type=Path, default=None, help="picture of the fit examples: model beside exact")
    ap.add_argument("--edit-refine-steps", type=int, default=None,
                    help="steps of the edits' shape-residual refinement (default: ide3d edit's; 0: the editor alone)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--truncation", type=float, default=None,
                    help="truncation of the samples and edited portraits (default: the model's, as ide3d generate)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from training.metrics.swd import sliced_wasserstein

    G = load_generator(args.model)
    psi = G.default_truncation if args.truncation is None else args.truncation
    sets = sample_sets(G, args.samples, 256, psi)
    res: dict[str, float] = {"truncation": psi}
    for yaw, (gi, gl, pi, pl, gm, pm, ref) in sets.items():
        tag = f"yaw{yaw:+.0f}"
        res[f"reference_bicubic_sharpness_ratio_{tag}"] = sharpness(ref) / sharpness(pi)
        res[f"sharpness_ratio_{tag}"] = sharpness(gi) / sharpness(pi)
        res[f"head_sharpness_ratio_{tag}"] = sharpness(gi, gm) / sharpness(pi, pm)
        res[f"diversity_ratio_{tag}"] = diversity(gi) / diversity(pi)
        res[f"swd_{tag}"] = sliced_wasserstein(pi, gi, torch.Generator().manual_seed(0)).mean
        for part, share in part_share(gl, args.part_pixels).items():
            res[f"{part}_shown_{tag}"] = share
            res[f"{part}_shown_procedural_{tag}"] = part_share(pl, args.part_pixels)[part]
    res["sharpness_ratio"] = float(np.mean([res[f"sharpness_ratio_yaw{y:+.0f}"] for y in YAWS]))
    res["head_sharpness_ratio"] = float(np.mean([res[f"head_sharpness_ratio_yaw{y:+.0f}"] for y in YAWS]))
    res["diversity_ratio"] = float(np.mean([res[f"diversity_ratio_yaw{y:+.0f}"] for y in YAWS]))
    if (Path(args.model) / "fit_examples.safetensors").exists():
        res.update(fit_eval(G, Path(args.model), args.fit_sheet))
    editor_dir = Path(args.model) / "encoders" / "canonical"
    if args.edit_seeds and editor_dir.exists():
        from ide3d_core.encoders import load_encoder

        res.update(edit_eval(G, load_encoder(editor_dir).eval(), list(range(100, 100 + args.edit_seeds)), psi,
                             args.edit_refine_steps))
        res.update(hair_edit_bound(args.samples))
    if args.sheet:
        contact_sheet(sets, args.sheet)
    print("| metric | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
