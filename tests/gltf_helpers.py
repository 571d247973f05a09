# SPDX-License-Identifier: GPL-3.0-or-later
"""glTF checks shared by the export tests: the Khronos validator (npm ``gltf-validator``, installed into
``.venv/node`` by scripts/setup_node_tools.sh; skipped without node) and the JSON chunk of a .glb."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / ".venv" / "node" / "node_modules" / "gltf-validator"


def validate(path: Path) -> dict:
    """The validator's ``issues`` object (``numErrors``, ``numWarnings``, ``messages``) for ``path``."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not VALIDATOR.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "setup_node_tools.sh")], check=False)
    if not VALIDATOR.exists():
        pytest.fail("node is present but gltf-validator is missing: run scripts/setup_node_tools.sh")
    script = ("const v = require(process.argv[1]); const fs = require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))"
              ".then(r => console.log(JSON.stringify(r.issues)))"
              ".catch(e => { console.error(String(e)); process.exit(1); });")
    out = subprocess.run([node, "-e", script, str(VALIDATOR), str(path)], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF file."""
    data = Path(path).read_bytes()
    assert data[:4] == b"glTF"
    length = int.from_bytes(data[12:16], "little")
    return json.loads(data[20:20 + length])
