# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m ide3d_core.service.verify``: the check Set Up Backend runs before an install is kept.

It imports every module it is given, runs one tensor operation on the chosen device, and loads the
model, then prints one line ``IDE3D-VERIFY {json}`` (``ok``, the versions, the device, the model, or
the first ``problem``) and exits 0 only when all passed. It runs in a fresh process started through
``blender_addon/backend_boot.py``, so it sees exactly the packages of the folder being verified.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

PREFIX = "IDE3D-VERIFY "


def verify(imports: list[str], device: str, model: str) -> dict:
    """The check itself; returns the report (``ok`` False with ``problem`` at the first failure)."""
    report: dict = {"ok": False, "versions": {}, "device": device, "python": sys.version.split()[0]}
    for name in imports:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 -- any import failure is the answer
            report["problem"] = f"import {name} failed: {type(exc).__name__}: {exc}"
            return report
        report["versions"][name] = str(getattr(module, "__version__", "") or "")
    import torch

    report["versions"]["torch"] = str(torch.__version__)
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            report["problem"] = ("torch cannot use the NVIDIA GPU (torch.cuda.is_available() is False): "
                                 "update the NVIDIA driver, or choose the CPU flavour")
            return report
        if dev.type == "mps" and not torch.backends.mps.is_available():
            report["problem"] = "torch cannot use the Apple GPU (MPS): macOS 14 or newer is needed; or choose CPU"
            return report
        x = torch.full((2, 3), 2.0, device=dev)
        value = float((x * x).sum().item())
        if value != 24.0:
            report["problem"] = f"a tensor operation on {device} gave {value}, not 24"
            return report
        if dev.type == "cuda":
            report["device_name"] = str(torch.cuda.get_device_name(0))
    except Exception as exc:  # noqa: BLE001
        report["problem"] = f"a tensor operation on {device} failed: {type(exc).__name__}: {exc}"
        return report
    if model != "none":
        try:
            from ide3d_core import model_loading

            g = model_loading.load_base_generator(model, dev)
            report["model"] = f"{model_loading.describe(model)} loads ({g.img_resolution} px)"
        except Exception as exc:  # noqa: BLE001
            report["problem"] = f"the model does not load: {type(exc).__name__}: {exc}"
            return report
    report["ok"] = True
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ide3d_core.service.verify", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="", help='model spec ("" the bundled model, "none" skips the load)')
    parser.add_argument("--imports", default="", help="comma-separated modules to import")
    args = parser.parse_args(argv)
    try:
        report = verify([m for m in args.imports.split(",") if m], args.device, args.model)
    except Exception as exc:  # noqa: BLE001 -- e.g. torch itself does not import
        traceback.print_exc()
        report = {"ok": False, "problem": f"{type(exc).__name__}: {exc}"}
    print(PREFIX + json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
