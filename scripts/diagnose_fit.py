# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the training heads' PSNR is lost: the field, the super-resolution, or the neural resolution.

    python scripts/diagnose_fit.py --run ~/ide3d-runs/ad2 [--run ...] [--heads 16] [--threads 1]
    python scripts/diagnose_fit.py --model ide3d_core/models/default --bank ~/ide3d-runs/ad2/bank

Bank heads ``0 .. heads-1`` rendered from their learned codes (a run's newest checkpoint, or an exported
model's ``fit_examples.safetensors`` matched to the bank by latent) against the heads' exact procedural
renders cached in the bank. Prints one Markdown table; PSNR in dB (images in [-1, 1]), mean over heads,
on the whole image and inside the exact head mask (the background's colour is not supervised by the
ray loss, so the head columns are the field's fidelity):

* ``field 64``: the raw neural RGB (64 px) against the exact 64 px render of the bank's first view;
* ``output``: the super-resolved output, box-filtered to 128 px, against the exact 128 px render;
* ``field bicubic``: the raw 64 px RGB of the same camera, upsampled bicubically to 128 px;
* ``exact 64 bicubic``: the exact 128 px render box-filtered to 64 px and upsampled bicubically: what a
  perfect field gives at this neural resolution without super-resolution detail (the ceiling).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ide3d_core.inversion.losses import psnr  # noqa: E402
from ide3d_core.networks.generator import Generator  # noqa: E402

COLUMNS = ("field 64", "output", "field bicubic", "exact 64 bicubic")


def decompose(G: Generator, ws: torch.Tensor, head: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """``{column: (whole-image PSNR, head-only PSNR)}`` of one bank head. ``ws [1, num_ws, w_dim]``;
    ``head``: the bank's per-head tensors (``cam64 [V, 25]``, ``img64 [V, 3, 64, 64]``, ``lab64``,
    ``cam128 [25]``, ``img128 [3, 128, 128]``, ``lab128``)."""
    with torch.no_grad():
        planes = G.planes(ws)
        low = G.render(planes, head["cam64"][0][None], ws)
        t64, m64 = head["img64"][0][None].float(), (head["lab64"][0] > 0)[None, None]
        high = G.render(planes, head["cam128"][None], ws)
        t128, m128 = head["img128"][None].float(), (head["lab128"] > 0)[None, None]
        out = F.avg_pool2d(high.image.clamp(-1, 1), high.image.shape[-1] // t128.shape[-1])
        size = t128.shape[-1]
        bicubic = F.interpolate(high.image_raw.clamp(-1, 1), size=size, mode="bicubic", align_corners=False)
        ceiling = F.interpolate(F.avg_pool2d(t128, 2), size=size, mode="bicubic", align_corners=False)
        pairs = {"field 64": (low.image_raw.clamp(-1, 1), t64, m64), "output": (out, t128, m128),
                 "field bicubic": (bicubic, t128, m128), "exact 64 bicubic": (ceiling, t128, m128)}
        return {k: (float(psnr(x, t)[0]), float(psnr(x, t, mask=m)[0])) for k, (x, t, m) in pairs.items()}


def _head(bank: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: bank[k][i] for k in ("cam64", "img64", "lab64", "cam128", "img128", "lab128")}


def _from_run(run: Path, heads: int):
    from training.autodecoder.bank import load_bank
    from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig, Trainer, codes_to_ws
    from training.checkpoint import latest_checkpoint

    cfg = AutoDecoderConfig.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    bank = load_bank(run / "bank", cfg.bank)
    trainer = Trainer(run, cfg, bank)
    trainer.load(latest_checkpoint(run / "checkpoints"))
    G = trainer.G.eval()
    for i in range(min(heads, cfg.bank.size)):
        yield G, codes_to_ws(trainer.codes(torch.tensor([i])), G).detach(), _head(bank, i)
    print(f"{run}: step {trainer.step}", file=sys.stderr)


def _from_model(model: Path, bank_dir: Path, heads: int):
    from safetensors.torch import load_file

    from ide3d_core.networks.io import load_generator
    from training.autodecoder.bank import load_bank
    from training.autodecoder.loop import bank_spec_beside, codes_to_ws

    bank = load_bank(bank_dir, bank_spec_beside(bank_dir))
    G = load_generator(str(model)).float().eval()
    fit = load_file(str(model / "fit_examples.safetensors"))
    for j in range(min(heads, fit["z"].shape[0])):
        dist = (bank["z"] - fit["z"][j]).abs().sum(1)
        i = int(dist.argmin())
        if float(dist[i]) > 1e-3:
            raise ValueError(f"{model}: fit example {j} is not a head of the bank {bank_dir}")
        yield G, codes_to_ws(fit["codes"][j:j + 1].float(), G), _head(bank, i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=[], type=Path, help="auto-decoder run folder (repeatable)")
    ap.add_argument("--model", type=Path, help="exported generator folder with fit_examples.safetensors")
    ap.add_argument("--bank", type=Path, help="the bank the --model was trained on")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sources = [(str(r), _from_run(r, args.heads)) for r in args.run]
    if args.model is not None:
        if args.bank is None:
            ap.error("--model needs --bank")
        sources.append((str(args.model), _from_model(args.model, args.bank, args.heads)))
    if not sources:
        ap.error("give --run and/or --model")
    print("| source | heads | " + " | ".join(f"{c} (whole / head)" for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, items in sources:
        rows = [decompose(G, ws, head) for G, ws, head in items]
        mean = {c: tuple(sum(r[c][k] for r in rows) / len(rows) for k in (0, 1)) for c in COLUMNS}
        print(f"| {name} | {len(rows)} | " + " | ".join(f"{mean[c][0]:.2f} / {mean[c][1]:.2f}" for c in COLUMNS)
              + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
