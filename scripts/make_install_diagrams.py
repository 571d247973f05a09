# SPDX-License-Identifier: GPL-3.0-or-later
"""Draws the pictures of docs/install.md: the Set-Up box of the add-on's preferences as it looks on
Windows, macOS and Linux, and the install flow.

Blender cannot draw its interface headless, so these are diagrams, not screenshots. Their text comes
from the add-on's own functions (default folder, GPU detection, the installed report's summary line),
so it is what the preferences show on such a machine.

    python scripts/make_install_diagrams.py [--out docs/images/install]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blender_addon import backend_setup as BS  # noqa: E402
from blender_addon import setup_paths as SP  # noqa: E402

BG, BOX, FIELD, TEXT, DIM, BUTTON, ACCENT, OK = (48, 48, 48), (40, 40, 40), (29, 29, 29), (230, 230, 230), \
    (160, 160, 160), (84, 84, 84), (71, 114, 179), (98, 166, 98)


def font(size: int):
    return ImageFont.load_default(size=size)


def panel(host: SP.Host, gpu: SP.GpuInfo, state: str, title: str) -> Image.Image:
    """The Set-Up box for ``state``: ``fresh`` (nothing installed), ``running`` or ``done``."""
    w, h = 900, 330
    img = Image.new("RGB", (w, h), BG)
    d = ImageDraw.Draw(img)
    f, fb, fs = font(15), font(17), font(13)
    d.text((16, 10), title, font=fb, fill=TEXT)
    d.rounded_rectangle((12, 40, w - 12, h - 12), 6, fill=BOX)
    d.text((28, 52), "Backend Set-Up", font=fb, fill=TEXT)
    y = 84
    d.text((28, y + 4), "Install Folder", font=f, fill=DIM)
    d.rounded_rectangle((170, y, w - 28, y + 26), 4, fill=FIELD)
    d.text((178, y + 4), "", font=f, fill=TEXT)
    d.text((28, y + 32), f"Default: {SP.default_root(host)}", font=fs, fill=DIM)
    y += 58
    labels = ["Auto", "CPU", "NVIDIA GPU", "Apple GPU"]
    bw = (w - 56) // 4
    for i, label in enumerate(labels):
        x0 = 28 + i * bw
        d.rectangle((x0, y, x0 + bw - 2, y + 26), fill=ACCENT if i == 0 else BUTTON)
        d.text((x0 + bw // 2, y + 13), label, font=f, fill=TEXT, anchor="mm")
    d.text((28, y + 34), f"Detected: {gpu.summary}", font=fs, fill=DIM)
    y += 62
    key = SP.target_key(host.python, SP.platform_key(host), gpu.flavour)
    if state == "running":
        d.rectangle((28, y, w - 28, y + 26), fill=FIELD)
        d.rectangle((28, y, 28 + int((w - 56) * 0.46), y + 26), fill=ACCENT)
        d.text((w // 2, y + 13), "downloading torch-2.13.0 (190.4 MB) (1 of 30)", font=f, fill=TEXT, anchor="mm")
        d.rectangle((28, y + 32, w - 28, y + 58), fill=BUTTON)
        d.text((w // 2, y + 45), "Cancel Set-Up", font=f, fill=TEXT, anchor="mm")
    else:
        for i, label in enumerate(["Set Up Backend", "Install from Folder"]):
            x0 = 28 + i * (w - 56) // 2
            d.rectangle((x0, y, x0 + (w - 56) // 2 - 2, y + 26), fill=BUTTON)
            d.text((x0 + (w - 56) // 4, y + 13), label, font=f, fill=TEXT, anchor="mm")
        if state == "done":
            report = {"packages": {str(i): "" for i in range(30)}, "device": SP.FLAVOUR_DEVICE[gpu.flavour],
                      "verification": {"versions": {"torch": "2.13.0"}, "device": SP.FLAVOUR_DEVICE[gpu.flavour],
                                       "device_name": gpu.name, "model": "bundled loads (128 px)"}}
            d.text((28, y + 34), f"Installed {key}: {BS.summary_line(report)}", font=fs, fill=OK)
        else:
            d.text((28, y + 34), "Not set up yet: the worker uses a developer environment if there is one",
                   font=fs, fill=DIM)
    y += 70
    for i, label in enumerate(["Uninstall Backend", "Copy Diagnostics", "Save Offline Recipe"]):
        x0 = 28 + i * (w - 56) // 3
        d.rectangle((x0, y, x0 + (w - 56) // 3 - 2, y + 26), fill=BUTTON if state == "done" or i else BOX)
        d.text((x0 + (w - 56) // 6, y + 13), label, font=f, fill=TEXT if state == "done" or i else DIM, anchor="mm")
    return img


def flow() -> Image.Image:
    steps = ["Edit > Preferences >\nGet Extensions >\nInstall from Disk...\n(the .zip)",
             "Add-ons > IDE-3D\nPortrait Studio >\nSet Up Backend\n(or Install from Folder)",
             "pip (Blender's Python)\ninto a temp folder;\nprogress, Cancel",
             "verify: imports,\na tensor op on the\ndevice, the model",
             "renamed into\n<root>/envs/<key>;\nthe report",
             "3D View > N panel >\nIDE-3D > New Portrait\n> Render"]
    w, h, bw = 1180, 190, 170
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    f = font(14)
    gap = (w - 20 - len(steps) * bw) // (len(steps) - 1)
    for i, text in enumerate(steps):
        x0 = 10 + i * (bw + gap)
        d.rounded_rectangle((x0, 40, x0 + bw, 150), 10, outline=(60, 60, 60), width=2,
                            fill=(225, 236, 250) if i in (2, 3, 4) else (245, 245, 245))
        d.multiline_text((x0 + bw // 2, 95), text, font=f, fill=(20, 20, 20), anchor="mm", align="center")
        if i:
            xa = x0 - gap + 4
            d.line((xa, 95, x0 - 6, 95), fill=(60, 60, 60), width=3)
            d.polygon([(x0 - 4, 95), (x0 - 14, 89), (x0 - 14, 101)], fill=(60, 60, 60))
    d.text((10 + 2 * (bw + gap), 160), "a failure or Cancel deletes the temp folder: nothing half-installed",
           font=font(13), fill=(90, 90, 90))
    d.text((10, 12), "From the extension zip to a portrait, without a terminal", font=font(16), fill=(20, 20, 20))
    return img


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "install")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    win = SP.Host("windows", "AMD64", (3, 11), {"LOCALAPPDATA": "C:\\Users\\Ada\\AppData\\Local"}, "C:\\Users\\Ada")
    mac = SP.Host("macos", "arm64", (3, 13), {}, "/Users/ada")
    linux = SP.Host("linux", "x86_64", (3, 11), {}, "/home/ada")
    no = SP.Probes(exists=lambda p: False, which=lambda n: None, find_library=lambda n: None, run=lambda c: None)
    smi = SP.Probes(exists=lambda p: False, which=lambda n: "nvidia-smi", find_library=lambda n: None,
                    run=lambda c: "NVIDIA GeForce RTX 4070, 591.44\n")
    pictures = {
        "windows_running.png": panel(win, SP.detect_gpu(win, smi), "running", "Windows: Set Up Backend running"),
        "windows_done.png": panel(win, SP.detect_gpu(win, smi), "done", "Windows: installed and verified"),
        "macos_fresh.png": panel(mac, SP.detect_gpu(mac, no), "fresh", "macOS (Apple Silicon, Blender 5.1): before"),
        "linux_done.png": panel(linux, SP.detect_gpu(linux, no), "done", "Linux: installed and verified (CPU)"),
        "flow.png": flow(),
    }
    for name, img in pictures.items():
        img.save(args.out / name, optimize=True)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
