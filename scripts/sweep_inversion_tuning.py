# SPDX-License-Identifier: GPL-3.0-or-later
"""Where does the multi-view gain come from? (issue 17) For one held-out head of ``eval_inversion.py``'s set
(``--heads 3``, the same seed), fit the default pivot codes (``InversionPolicy(tune_steps=0)``) from each view
set, then run pivotal-tuning variants from that pivot and print the novel-view PSNR (yaws -45/-15/+15/+45,
mean) of the codes alone and every 6 tuning steps, beside the PSNR of the input views themselves.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/sweep_inversion_tuning.py 0 "0;-30,0,30" \\
        "lr=1e-3,steps=18" "lr=4e-3,ramp=0.3,steps=18"

A variant is ``lr=..,steps=..[,ramp=F][,coarse=F][,params=prefix+prefix]``: Adam learning rate, tuning steps,
linear warm-up over the first F of the steps, the first F of the steps rendered at neural resolution 32, and
the parameter-name prefixes tuned (default all). One line per (view set, variant), as JSON after ``R``.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import eval_inversion as E  # noqa: E402
from ide3d_core.inversion import InversionPolicy, InversionView, invert_views, psnr  # noqa: E402
from ide3d_core.inversion.procedure import _Objective  # noqa: E402

NOVEL = (-45.0, -15.0, 15.0, 45.0)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    head, sets, variants = int(argv[0]), [[float(y) for y in s.split(",")] for s in argv[1].split(";")], argv[2:]
    args, dev = E.parse_args(["--heads", "3"]), torch.device("cpu")
    g, desc, _ = E.load_model(args, dev)
    enc = E.load_encoders(args, g, desc, dev)
    truth = E.HeldOutHeads(3, int(g.img_resolution))
    policy = InversionPolicy()

    def novel(gen, ws) -> float:
        return float(np.mean([E.view_metrics(gen, ws, truth, head, y, dev)[0] for y in NOVEL]))

    for vs in sets:
        views = []
        for y in vs:
            img, lab, cam = truth.view(head, y)
            views.append(InversionView(img, lab[0].numpy().astype(np.uint8), cam, f"yaw {y:+.0f}"))
        c0 = time.process_time()
        ws = invert_views(g, views, encoder=enc["standard"], policy=InversionPolicy(tune_steps=0)).ws
        targets = torch.cat([v.image for v in views])
        labels = torch.from_numpy(np.stack([v.mask.astype(np.int64) for v in views]))
        obj = _Objective(targets, labels, torch.from_numpy(np.stack([v.camera for v in views])),
                         torch.ones(len(views)), policy, None)
        print("R " + json.dumps({"head": head, "views": vs, "variant": "codes", "novel": round(novel(g, ws), 2),
                                 "cpu": round(time.process_time() - c0, 1)}), flush=True)
        for spec in variants:
            o = dict(kv.split("=") for kv in spec.split(","))
            lr, ramp, steps = float(o.get("lr", 1e-3)), float(o.get("ramp", 0)), int(o.get("steps", 18))
            coarse_until, which = int(round(float(o.get("coarse", 0)) * steps)), o.get("params", "all")
            tuned = copy.deepcopy(g).train(False).requires_grad_(False)
            for n, p in tuned.named_parameters():
                p.requires_grad_(which == "all" or any(n.startswith(x) for x in which.split("+")))
            opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=lr)
            c0, log = time.process_time(), []
            for s in range(steps):
                for pg in opt.param_groups:
                    pg["lr"] = lr * (min(1.0, (s + 1) / (ramp * steps)) if ramp else 1.0)
                loss, _, _ = obj(tuned, ws, 32 if s < coarse_until else None)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if (s + 1) % 6 == 0:
                    with torch.no_grad():
                        seen = float(psnr(obj(tuned, ws)[2], targets).mean())
                    log.append((s + 1, round(seen, 2), round(novel(tuned, ws), 2)))
            print("R " + json.dumps({"head": head, "views": vs, "variant": spec, "step_seen_novel": log,
                                     "cpu": round(time.process_time() - c0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
