# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks that every pin of blender_addon/backend_lock.toml has a binary wheel on the package index
for every Python (3.11, 3.13) and platform (win_amd64, macosx arm64/x86_64, manylinux x86_64) it
applies to, or is declared ``missing`` there (with what happens instead).

    python scripts/check_backend_lock.py [--json]

It asks the index once per package through pip's own network stack (pip's proxy, certificate and
index settings apply) for the list of files, and matches the wheel tags with pip's ``packaging``:
what ``pip download --no-deps --only-binary :all: --platform P --python-version V PKG==VER`` would
find, without downloading gigabytes. The PyTorch CPU/CUDA indexes of the lock's ``torch_index`` are
not PyPI and are checked only when reachable. Exit status: 0 all found, 1 gaps, 2 index unreachable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blender_addon.backend_setup import Lock, Pin, load_lock  # noqa: E402

# pip --platform tags for each lock platform: Blender 4.2+ needs glibc 2.28 and macOS 11+ (arm64) /
# macOS 11 (x86_64); newer macOS versions accept the wheels of all older ones.
PLATFORM_TAGS = {
    "win_amd64": ["win_amd64"],
    "macosx_arm64": [f"macosx_{v}_0_arm64" for v in range(15, 10, -1)] + ["macosx_11_0_universal2"],
    "macosx_x86_64": [f"macosx_{v}_0_x86_64" for v in range(15, 9, -1)] + [f"macosx_10_{m}_x86_64" for m in range(15, 8, -1)]
    + ["macosx_10_9_universal2", "macosx_11_0_universal2"],
    "linux_x86_64": [f"manylinux_2_{m}_x86_64" for m in range(28, 4, -1)] + ["manylinux2014_x86_64", "manylinux2010_x86_64",
                                                                                "manylinux1_x86_64"],
}


class IndexUnreachable(RuntimeError):
    pass


def supported_tags(python: str, platform: str) -> set:
    """The wheel tags pip accepts for CPython ``python`` ("3.13") on ``platform`` (a lock platform)."""
    from pip._vendor.packaging import tags

    major, minor = (int(x) for x in python.split("."))
    plats = PLATFORM_TAGS[platform]
    interp = f"cp{major}{minor}"
    return set(tags.cpython_tags((major, minor), platforms=plats)) | set(
        tags.compatible_tags((major, minor), interpreter=interp, platforms=plats))


def wheel_matches(filenames: list[str], version: str, python: str, platform: str) -> list[str]:
    """The wheels among ``filenames`` of exactly ``version`` that install on ``python``/``platform``."""
    from pip._vendor.packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from pip._vendor.packaging.version import Version

    want, ok = Version(version), supported_tags(python, platform)
    found = []
    for name in filenames:
        if not name.endswith(".whl"):
            continue
        try:
            _, ver, _, wheel_tags = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue
        if Version(ver.public) == want and wheel_tags & ok:
            found.append(name)
    return found


def index_files(project: str, index_url: str = "https://pypi.org/simple") -> list[str]:
    """The file names the index lists for ``project`` (PEP 691 JSON, through pip's session)."""
    from pip._internal.network.session import PipSession

    session = PipSession(retries=2)
    session.timeout = 30
    url = f"{index_url.rstrip('/')}/{project.lower().replace('_', '-')}/"
    try:
        resp = session.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    except Exception as exc:  # noqa: BLE001 -- any network failure
        raise IndexUnreachable(f"{url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code == 404:
        return []
    if resp.status_code != 200:
        raise IndexUnreachable(f"{url}: HTTP {resp.status_code}")
    if "json" in resp.headers.get("Content-Type", ""):
        return [f["filename"] for f in resp.json()["files"]]
    import re

    return re.findall(r">([^<]+\.whl)<", resp.text)


def check(lock: Lock, files_of=index_files) -> list[dict]:
    """One row per (pin, python, platform) it applies to: ``status`` found | missing-declared | MISSING."""
    rows, cache = [], {}
    for pin in lock.pins:
        if pin.project not in cache:
            cache[pin.project] = files_of(pin.project)
        for python in lock.pythons:
            py = tuple(int(x) for x in python.split("."))
            for platform in lock.platforms:
                if not any(pin.applies(py, platform, f) for f in lock.flavours):
                    continue
                found = wheel_matches(cache[pin.project], pin.version, python, platform)
                declared = f"{python}/{platform}" in pin.missing
                status = "found" if found else ("missing-declared" if declared else "MISSING")
                if found and declared:
                    status = "DECLARED-BUT-FOUND"
                rows.append(dict(package=pin.requirement, python=python, platform=platform, status=status,
                                 wheel=found[0] if found else ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print every row as JSON")
    parser.add_argument("--lock", type=Path, default=None)
    args = parser.parse_args(argv)
    lock = load_lock(args.lock) if args.lock else load_lock()
    try:
        rows = check(lock)
    except IndexUnreachable as exc:
        print(f"the package index is unreachable: {exc}", file=sys.stderr)
        return 2
    bad = [r for r in rows if r["status"] in ("MISSING", "DECLARED-BUT-FOUND")]
    if args.json:
        print(json.dumps(rows, indent=1))
    for r in rows:
        if r["status"] != "found":
            print(f"{r['status']:18} {r['package']:40} {r['python']} {r['platform']}")
    found = sum(r["status"] == "found" for r in rows)
    print(f"{found} of {len(rows)} (pin, Python, platform) combinations have a wheel; "
          f"{len(bad)} undeclared gaps; {len({p.project for p in lock.pins})} packages")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
