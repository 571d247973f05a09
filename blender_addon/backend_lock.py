# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend's lock file (``backend_lock.toml``): pinned packages per Python, platform and flavour.
Standard library only (``tomllib``: Blender's Python is 3.11+); no ``bpy``."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import setup_paths as SP

LOCK_PATH = Path(__file__).with_name("backend_lock.toml")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    python: str = ""
    platforms: tuple[str, ...] = ()
    flavours: tuple[str, ...] = ()
    module: str = ""
    deps: bool = False
    missing: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def project(self) -> str:
        """The distribution name without extras."""
        return self.name.split("[", 1)[0]

    def applies(self, python: tuple[int, int], platform: str, flavour: str) -> bool:
        if self.platforms and platform not in self.platforms:
            return False
        if self.flavours and flavour not in self.flavours:
            return False
        return python_matches(self.python, python)


def python_matches(spec: str, python: tuple[int, int]) -> bool:
    """``"<3.13"`` / ``">=3.13"`` / ``""`` against (major, minor)."""
    if not spec:
        return True
    m = re.fullmatch(r"\s*(<|<=|>=|>|==)\s*(\d+)\.(\d+)\s*", spec)
    if m is None:
        raise ValueError(f"bad python spec in the lock: {spec!r}")
    other = (int(m.group(2)), int(m.group(3)))
    return {"<": python < other, "<=": python <= other, ">=": python >= other, ">": python > other,
            "==": python == other}[m.group(1)]


@dataclass(frozen=True)
class Lock:
    pins: tuple[Pin, ...]
    pythons: tuple[str, ...]
    platforms: tuple[str, ...]
    flavours: tuple[str, ...]
    disk_gb: dict
    torch_index: dict
    unsupported: dict
    verify_imports: tuple[str, ...] = ()

    def select(self, python: tuple[int, int], platform: str, flavour: str) -> list[Pin]:
        return [p for p in self.pins if p.applies(python, platform, flavour)]

    def unsupported_reason(self, platform: str, flavour: str) -> str:
        if platform not in self.platforms:
            return f"no backend packages are published for this platform ({platform})"
        return self.unsupported.get(platform) or self.unsupported.get(f"{flavour}.{platform}", "")

    def needed_gb(self, platform: str, flavour: str) -> float:
        return float(self.disk_gb.get(f"{flavour}.{platform}", self.disk_gb.get(flavour, 3.0)))

    def requirements_text(self, python: tuple[int, int], platform: str, flavour: str) -> str:
        """A pip requirements file of one combination (the offline recipe downloads these)."""
        lines = [f"# IDE-3D backend, Python {python[0]}.{python[1]}, {platform}, {flavour}"]
        index = self.torch_index.get(f"{flavour}.{platform}")
        if index:
            lines.append(f"--extra-index-url {index}")
        return "\n".join(lines + [p.requirement for p in self.select(python, platform, flavour)]) + "\n"


def load_lock(path: Path | str = LOCK_PATH) -> Lock:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    pins = []
    for entry in data.get("package", []):
        unknown = set(entry) - {"name", "version", "python", "platforms", "flavours", "import", "deps", "missing"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} for {entry.get('name')} in {path}")
        pins.append(Pin(name=entry["name"], version=entry["version"], python=entry.get("python", ""),
                        platforms=tuple(entry.get("platforms", ())), flavours=tuple(entry.get("flavours", ())),
                        module=entry.get("import", ""), deps=bool(entry.get("deps", False)),
                        missing=tuple(entry.get("missing", ()))))
    meta = data.get("lock", {})
    return Lock(pins=tuple(pins), pythons=tuple(meta.get("pythons", ())), platforms=tuple(meta.get("platforms", ())),
                flavours=tuple(meta.get("flavours", SP.FLAVOURS)), disk_gb=dict(data.get("disk_gb", {})),
                torch_index=dict(data.get("torch_index", {})), unsupported=dict(data.get("unsupported", {})),
                verify_imports=tuple(meta.get("verify_imports", ())))
