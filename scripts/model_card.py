# SPDX-License-Identifier: GPL-3.0-or-later
"""Evaluate a trained generator and write its model card pictures and numbers.

    python scripts/model_card.py --generator RUN/generator --run RUN --out FOLDER [--segnet DIR]
        [--n 128] [--teacher-seeds 32] [--threads 2]

Writes into FOLDER:

* ``contact_sheet.png``: seeds 0..5 (truncation 0.7), yaw -45 .. +45 degrees: for each seed a row of
  RGB and a row of colourised semantic maps.
* ``teacher_vs_generator.png``: seeds 0..3 at truncation 1: the procedural head of the seed's latent
  (``heads_from_latent``, the distillation target) above the generator's render, for each yaw.
* ``metrics.json`` and a Markdown table on stdout:
  - teacher fidelity (independent truth: the exact procedural head of each latent): RGB PSNR,
    silhouette IoU and semantic mIoU against the head's exact labels, per yaw, over
    ``--teacher-seeds`` latents;
  - the download-free metrics of :mod:`training.metrics` (SWD, SegNet mIoU, multi-view consistency,
    label frequency) next to their real-vs-real values;
  - the training record from the run folder (steps, images, wall time from the logged step times).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ide3d_core.cameras import orbit_camera  # noqa: E402
from ide3d_core.labels import colorize  # noqa: E402
from ide3d_core.networks import load_generator  # noqa: E402
from training.metrics.semantic import mean_iou  # noqa: E402
from training.procedural import heads_from_latent, median_padded, render_heads  # noqa: E402
from ide3d_core.images import to_uint8_hwc as to_uint8  # noqa: E402

YAWS = (-45.0, -22.5, 0.0, 22.5, 45.0)


def camera(yaw_deg: float, b: int) -> torch.Tensor:
    return torch.as_tensor(orbit_camera(math.radians(yaw_deg)).label()).expand(b, 25).contiguous()


@torch.no_grad()
def render(G, z: torch.Tensor, yaw: float, psi: float = 1.0):
    ws = G.mapping(z, G.canonical_labels(len(z)), truncation_psi=psi)
    return G.render(G.planes(ws), camera(yaw, len(z)), ws)


def grid(rows: list[list[np.ndarray]], pad: int = 4) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    out = np.full((len(rows) * (h + pad) + pad, len(rows[0]) * (w + pad) + pad, 3), 60, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = im
    return out


@torch.no_grad()
def teacher_fidelity(G, seeds) -> dict:
    z = G.latents_from_seeds(list(seeds))
    heads = heads_from_latent(median_padded(z))
    res = G.img_resolution
    per_yaw = {}
    for yaw in YAWS:
        out = render(G, z, yaw)
        t = render_heads(heads, camera(yaw, len(z)), res, antialias=2)
        mse = ((out.image.clamp(-1, 1) - t.image) / 2).pow(2).mean(dim=(1, 2, 3))
        psnr = float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())
        opac = F.interpolate(out.opacity, size=(res, res), mode="bilinear", align_corners=False)[:, 0] > 0.5
        mask = t.mask[:, 0] > 0.5
        sil = float(((opac & mask).sum((1, 2)).float() / (opac | mask).sum((1, 2)).clamp_min(1).float()).mean())
        miou = mean_iou(out.semantic.argmax(1), t.labels)
        per_yaw[f"{yaw:g}"] = {"psnr_db": psnr, "silhouette_iou": sil, "semantic_miou": miou}
    keys = ("psnr_db", "silhouette_iou", "semantic_miou")
    mean = {k: float(np.mean([v[k] for v in per_yaw.values()])) for k in keys}
    return {"seeds": len(seeds), "per_yaw": per_yaw, "mean": mean}


def training_record(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    wall, prev = 0.0, 0
    for r in rows:
        wall += r.get("timing/sec_per_step", 0.0) * (r["step"] - prev)
        prev = r["step"]
    cfg = json.loads((run / "train_config.json").read_text())
    last = rows[-1] if rows else {}
    return {"steps": prev, "images_seen": int(prev * cfg["batch_size"]), "wall_hours": wall / 3600,
            "config": cfg, "last_losses": {k: v for k, v in last.items() if k.startswith("distill/")}}


def card_markdown(report: dict, args: argparse.Namespace) -> str:
    """The model card: what the model is, how it was trained, what it scores, next to the ceilings."""
    tr = report.get("training", {})
    cfg = tr.get("config", {})
    t = report["teacher"]
    lines = [
        "# Model card: the bundled `default` generator",
        "",
        "The IDE-3D generator in its `default` configuration (6.2 M parameters; 256 px output from 64 px "
        "neural rendering, 128 px tri-planes, 32 + 32 samples per ray; `ide3d_core/networks/config.py`), "
        "EMA weights in float16 (`generator.safetensors` + `config.json`). Used by `ide3d generate`, the "
        "demo, the service and the Blender add-on when no model is named.",
        "",
        "## Training",
        "",
        "* Data: procedural heads (`training/procedural/`), drawn on the fly; nothing downloaded.",
        f"* Objective: `{cfg.get('objective', '?')}` (preset `{args.command.split('--config ')[-1].split()[0] if '--config ' in args.command else '?'}`):"
        " supervised distillation of the procedural head of each latent (`training/distill.py`, "
        "docs/training.md), not yet adversarial fine-tuning.",
        f"* Command: `{args.command}`" if args.command else "* Command: -",
        f"* Steps: {tr.get('steps', '?')}, heads seen: {tr.get('images_seen', '?')} "
        f"(batch {cfg.get('batch_size', '?')}; {cfg.get('distill_render_batch', '?')} of every "
        f"{cfg.get('distill_render_interval', '?')} steps' heads also rendered at 64 px and super-resolved)",
        f"* Wall time: {tr.get('wall_hours', float('nan')):.2f} h of logged step time on {args.hardware}",
        "",
        *([args.history.read_text().rstrip(), ""] if args.history else []),
        "## Teacher fidelity (against the exact procedural head of each latent)",
        "",
        f"{t['seeds']} latents (seeds 1000..), truncation 1, cameras on the orbit at pitch 0; 256 px.",
        "",
        "| yaw (deg) | RGB PSNR (dB) | silhouette IoU | semantic mIoU vs exact labels |",
        "|---|---|---|---|",
    ]
    for yaw, v in t["per_yaw"].items():
        lines.append(f"| {yaw} | {v['psnr_db']:.2f} | {v['silhouette_iou']:.3f} | {v['semantic_miou']:.3f} |")
    m = t["mean"]
    lines.append(f"| mean | {m['psnr_db']:.2f} | {m['silhouette_iou']:.3f} | {m['semantic_miou']:.3f} |")
    if "generator" in report:
        g, r = report["generator"], report["real"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines += ["", f"## Download-free metrics ({g['num_images']} images, `training/metrics/`)", "",
                  "| metric | this model | real vs real (the ceiling) |", "|---|---|---|"]
        names = {"swd": "SWD x 1e3", "semantic_miou": "semantic consistency mIoU (SegNet on the RGB vs own map)",
                 "multiview_error": "multi-view error ([0,1] units)", "multiview_psnr": "multi-view PSNR (dB)",
                 "multiview_coverage": "multi-view coverage", "label_frequency_tv": "label frequency TV"}
        for key, name in names.items():
            lines.append(f"| {name} | {fmt(g[key])} | {fmt(r[key])} |")
    pre = args.pictures
    lines += ["", "## Pictures", "",
              f"![seeds 0-5, yaw -45..45, truncation 0.7, RGB over semantic maps]({pre}contact_sheet.png)", "",
              "*Seeds 0-5 at truncation 0.7, yaw -45, -22.5, 0, 22.5, 45 degrees: RGB rows over semantic rows.*",
              "", f"![teacher above generator]({pre}teacher_vs_generator.png)", "",
              "*Seeds 0-3 at truncation 1: the procedural head of each latent (top) above the generator (bottom).*",
              "", "## Limits", "",
              "* Trained only on stylised procedural heads: photos of real people are out of its domain.",
              "* Distilled, not adversarially trained: samples are smoother than the procedural renders.",
              f"* Evaluation: {report['evaluation']['seconds']:.0f} s on {report['evaluation']['threads']} "
              "CPU threads (`scripts/model_card.py`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=None, help="the training run folder (log.jsonl, train_config.json)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--segnet", type=Path, default=None)
    ap.add_argument("--n", type=int, default=128, help="images per set for the training.metrics numbers")
    ap.add_argument("--teacher-seeds", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--card", type=Path, default=None, help="also write the model card (Markdown) here")
    ap.add_argument("--pictures", default="", help="how the card links the pictures (path prefix)")
    ap.add_argument("--command", default="", help="the exact training command, for the card")
    ap.add_argument("--hardware", default="2 CPU cores (no GPU)", help="training hardware, for the card")
    ap.add_argument("--history", type=Path, default=None,
                    help="Markdown inserted in the card's Training section (earlier phases of the run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    G = load_generator(args.generator).float().eval()
    t0 = time.perf_counter()

    rows = []
    for s in range(6):
        outs = [render(G, G.latents_from_seeds([s]), yaw, psi=0.7) for yaw in YAWS]
        rows.append([to_uint8(o.image)[0] for o in outs])
        rows.append([colorize(o.semantic.argmax(1)[0].numpy()) for o in outs])
    Image.fromarray(grid(rows)).save(args.out / "contact_sheet.png")

    rows = []
    z = G.latents_from_seeds(list(range(4)))
    heads = heads_from_latent(median_padded(z))
    outs = [render(G, z, yaw) for yaw in YAWS]
    teach = [render_heads(heads, camera(yaw, 4), G.img_resolution, 2) for yaw in YAWS]
    for s in range(4):
        rows.append([to_uint8(t.image)[s] for t in teach])
        rows.append([to_uint8(o.image)[s] for o in outs])
    Image.fromarray(grid(rows)).save(args.out / "teacher_vs_generator.png")

    report = {"teacher": teacher_fidelity(G, range(1000, 1000 + args.teacher_seeds))}
    if args.n > 0:
        from training.data import ProceduralSource
        from training.metrics.evaluate import evaluate_generator, evaluate_real
        from training.segnet import load_segnet

        dev = torch.device("cpu")
        segnet = load_segnet(args.segnet, dev) if args.segnet else None
        src = ProceduralSource(G.img_resolution, 0, dev)
        report["generator"] = evaluate_generator(G, src, args.n, 16, 0, dev, segnet, 16,
                                                 front_conditioning=True).to_dict()
        report["real"] = evaluate_real(src, args.n, 16, 0, dev, segnet, 16).to_dict()
    if args.run is not None:
        report["training"] = training_record(args.run)
    report["evaluation"] = {"seconds": time.perf_counter() - t0, "machine": platform.processor() or platform.machine(),
                            "threads": args.threads}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")

    t = report["teacher"]
    print("| yaw | PSNR vs teacher (dB) | silhouette IoU | semantic mIoU vs exact labels |\n|---|---|---|---|")
    for yaw, v in t["per_yaw"].items():
        print(f"| {yaw} | {v['psnr_db']:.2f} | {v['silhouette_iou']:.3f} | {v['semantic_miou']:.3f} |")
    m = t["mean"]
    print(f"| mean | {m['psnr_db']:.2f} | {m['silhouette_iou']:.3f} | {m['semantic_miou']:.3f} |")
    if "generator" in report:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"\n| metric ({args.n} images) | generator | real vs real |\n|---|---|---|")
        for key in ("swd", "semantic_miou", "multiview_error", "multiview_psnr", "multiview_coverage",
                    "label_frequency_tv"):
            print(f"| {key} | {fmt(report['generator'][key])} | {fmt(report['real'][key])} |")
    if args.card is not None:
        args.card.write_text(card_markdown(report, args))
        print(f"[model_card] card: {args.card}")
    print(f"\n[model_card] wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
