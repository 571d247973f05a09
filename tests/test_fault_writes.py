# SPDX-License-Identifier: GPL-3.0-or-later
"""Killed and failing writes: every kind of file the project writes is the old file or the complete
new one after ``kill -9`` at a random moment or a full disk, never truncated; stale temporaries of
killed writers are removed by the next write; ``--resume`` survives a broken ``train_config.json``."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ide3d_core.atomic_file import is_temporary
from fault_writer import version

REPO = Path(__file__).resolve().parents[1]
KINDS = ("bytes", "image", "glb", "portrait", "generator", "train_config", "checkpoint")
SUFFIX = {"bytes": ".bin", "image": ".png", "glb": ".glb", "portrait": ".ide3d", "generator": "",
          "train_config": ".json", "checkpoint": ".safetensors"}


def _digest(t) -> str:
    import hashlib

    return hashlib.sha256(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes()).hexdigest()


def _files(target: Path) -> dict[str, object]:
    """What a reader gets from ``target``: its bytes, or for the kinds whose bytes vary between two
    writes of the same content (zip timestamps, safetensors header order) the loaded content; a file
    that does not load reads as ``("unreadable", reason)``. Temporaries are left out of folders."""
    try:
        if target.suffix == ".ide3d":
            from ide3d_core.portrait import load_portrait

            p = load_portrait(target)
            return {"camera": p.camera.tobytes(), "ws": [_digest(r.state.ws) for r in p.history],
                    "image": p.source_image.tobytes()}
        if target.suffix == ".safetensors":
            from training.checkpoint import load_checkpoint

            tensors, state = load_checkpoint(target)
            return {"tensors": {k: _digest(v) for k, v in tensors.items()}, "state": state}
        if target.is_dir():
            from safetensors.torch import load_file

            names = sorted(p.name for p in target.iterdir() if not is_temporary(p.name))
            return {"names": names, "config": (target / "config.json").read_bytes(),
                    "weights": {k: _digest(v) for k, v in load_file(str(target / "generator.safetensors")).items()}}
        return {target.name: target.read_bytes()}
    except Exception as exc:  # noqa: BLE001 - a torn file is exactly what this test looks for
        return {"unreadable": repr(exc)[:200]}


def _references(kind: str, root: Path) -> list[dict[str, object]]:
    refs = []
    for i in (0, 1):
        ref = root / f"ref{i}" / f"out{SUFFIX[kind]}"
        version(kind, i, ref)
        got = _files(ref)
        refs.append({k.replace(ref.name, "out" + SUFFIX[kind]): v for k, v in got.items()})
    assert refs[0] != refs[1] and "unreadable" not in refs[0]
    return refs


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_during_a_write_leaves_the_old_or_the_new_file(kind, tmp_path):
    refs = _references(kind, tmp_path)
    target = tmp_path / "live" / f"out{SUFFIX[kind]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    rnd = random.Random(kind)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_writer.py"), kind, str(target)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rnd.uniform(0.0, 0.6))  # somewhere inside one of the following writes
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        got = _files(target)
        assert got in refs, f"{kind}: after kill -9 the file is neither version: {str(got)[:300]}"
    # The next write (another process id) removes the killed writers' temporaries.
    version(kind, 0, target)
    folder = target if target.is_dir() else target.parent
    assert not [p.name for p in folder.iterdir() if is_temporary(p.name)]
    assert _files(target) == refs[0]


@pytest.mark.parametrize("kind", ["bytes", "image", "glb", "portrait", "train_config"])
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(kind, tmp_path, monkeypatch):
    target = tmp_path / f"out{SUFFIX[kind]}"
    version(kind, 0, target)
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        version(kind, 1, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_resume_survives_a_broken_train_config(tmp_path, capsys):
    from test_training_fixtures import write_dataset
    from training.commands.train import main

    data = write_dataset(tmp_path / "ds", n=4, res=32)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--quiet"]
    assert main(["--config", "tiny", "--batch", "2", "--kimg", "1", "--checkpoint-steps", "1",
                 "--stop-at-step", "1", *common]) == 0
    good = (out / "train_config.json").read_text()
    for broken in ("", '{"batch_size": 2, "trunc'):
        (out / "train_config.json").write_text(broken)  # what a killed plain write used to leave
        assert main(["--resume", "--stop-at-step", "2" if not broken else "3", *common]) == 0
        assert "restored it from the newest checkpoint" in capsys.readouterr().err
        assert (out / "train_config.json").read_text() == good
    (out / "train_config.json").unlink()
    assert main(["--resume", "--stop-at-step", "4", *common]) == 0
