# SPDX-License-Identifier: GPL-3.0-or-later
"""Portrait documents: exact round trip, strict loading, atomic saving, weight deltas."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch

from ide3d_core import portrait as P
from ide3d_core.cameras import orbit_camera
from test_portrait_fixtures import make_generator


def _perturbed(g, scale=1e-2, seed=0, skip=()):
    t = make_generator()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in t.named_parameters():
            if name not in skip:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return t


def _portrait(with_delta=True):
    g = make_generator()
    rng = np.random.default_rng(1)
    ws0 = g.codes_from_seeds([1])
    ws1 = ws0.clone()
    ws1[:, 0] += 0.5
    style = g.codes_from_seeds([7])
    records = (P.EditRecord("invert", {"steps": 3, "loss": 0.125}, P.PortraitState(ws0)),
               P.EditRecord("mask", {"note": "é ünïcode"}, P.PortraitState(ws1)),
               P.EditRecord("restyle", {"classes": [13, 18], "seed": 7},
                            P.PortraitState(ws1, P.Restyle(style, (13, 18)))))
    delta = P.WeightDelta.between(g, _perturbed(g)) if with_delta else None
    return g, P.Portrait(camera=orbit_camera(0.3, -0.1).label(), generator_config={"name": "tiny", "x": 1.5},
                         base_fingerprint=P.generator_fingerprint(g), history=records, current=1, delta=delta,
                         source_image=rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
                         source_mask=rng.integers(0, 19, (20, 24), dtype=np.uint8), model_hint="somewhere")


def _assert_same(a: P.Portrait, b: P.Portrait):
    assert np.array_equal(a.camera.view(np.uint32), b.camera.view(np.uint32))
    assert a.generator_config == b.generator_config and a.base_fingerprint == b.base_fingerprint
    assert a.current == b.current and len(a.history) == len(b.history)
    for ra, rb in zip(a.history, b.history):
        assert ra.kind == rb.kind and ra.params == rb.params
        assert torch.equal(ra.state.ws, rb.state.ws)
        assert (ra.state.restyle is None) == (rb.state.restyle is None)
        if ra.state.restyle is not None:
            assert torch.equal(ra.state.restyle.style_ws, rb.state.restyle.style_ws)
            assert ra.state.restyle.classes == rb.state.restyle.classes
    assert np.array_equal(a.source_image, b.source_image) and np.array_equal(a.source_mask, b.source_mask)
    assert a.delta.dtype == b.delta.dtype and a.delta.base_fingerprint == b.delta.base_fingerprint
    assert a.delta.deltas.keys() == b.delta.deltas.keys()
    for k in a.delta.deltas:
        assert torch.equal(a.delta.deltas[k], b.delta.deltas[k])


def test_round_trip_is_exact(tmp_path):
    g, p = _portrait()
    path = P.save_portrait(p, tmp_path / "a.ide3d")
    q = P.load_portrait(path)
    _assert_same(p, q)
    # The tuned generator rebuilt from the loaded file equals the one rebuilt before saving, bit for bit.
    ga, gb = p.generator(g), q.generator(g)
    for (na, ta), (nb, tb) in zip(ga.state_dict().items(), gb.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)
    # Saving the loaded document again gives the same bytes.
    assert P.encode_portrait(q) == P.encode_portrait(p)


def test_delta_reconstructs_tuned_weights_within_float16_rounding_and_skips_unchanged():
    g = make_generator()
    first = next(iter(dict(g.named_parameters())))
    tuned = _perturbed(g, skip=(first,))
    d = P.WeightDelta.between(g, tuned, "float16")
    assert first not in d.deltas  # unchanged tensors are not stored
    rebuilt = d.apply(g)
    for name, t in tuned.state_dict().items():
        b = g.state_dict()[name]
        err = (rebuilt.state_dict()[name] - t).abs()
        # independent bound: float16 keeps 11 significant bits of the delta; float32 rounding of the
        # subtraction and addition; float16 subnormal spacing 2^-24 for tiny deltas
        bound = (t - b).abs() * 2.0 ** -11 + (t.abs() + b.abs()) * 2.0 ** -23 + 2.0 ** -24  # (fp16 subnormals)
        assert bool((err <= bound).all()), name
    exact = P.WeightDelta.between(g, tuned, "float32").apply(g)
    for name, t in tuned.state_dict().items():
        assert torch.allclose(exact.state_dict()[name], t, rtol=0, atol=1e-6)
    assert d.nbytes * 2 == P.WeightDelta.between(g, tuned, "float32").nbytes


def test_delta_refuses_another_base_model():
    g = make_generator()
    d = P.WeightDelta.between(g, _perturbed(g))
    other = _perturbed(g, seed=5)
    with pytest.raises(P.PortraitError, match="different base model"):
        d.apply(other)


def test_truncated_file_gives_a_clear_error(tmp_path):
    _, p = _portrait()
    data = P.encode_portrait(p)
    for cut in (len(data) // 2, len(data) - 10, 100):
        f = tmp_path / f"cut{cut}.ide3d"
        f.write_bytes(data[:cut])
        with pytest.raises(P.PortraitError, match="truncated or damaged"):
            P.load_portrait(f)


def test_foreign_files_give_clear_errors(tmp_path):
    png = tmp_path / "photo.ide3d"
    from PIL import Image
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(P.PortraitError, match="not an .ide3d portrait"):
        P.load_portrait(png)
    other_zip = tmp_path / "other.ide3d"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(P.PortraitError, match="not an .ide3d portrait"):
        P.load_portrait(other_zip)
    with pytest.raises(P.PortraitError, match="cannot read"):
        P.load_portrait(tmp_path / "missing.ide3d")


def test_newer_version_and_tampered_members_are_refused(tmp_path):
    _, p = _portrait(with_delta=False)
    data = P.encode_portrait(p)
    src = zipfile.ZipFile(io.BytesIO(data))

    def rewrite(header_fn=None, extra=None):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in src.namelist():
                blob = src.read(name)
                if name == "portrait.json" and header_fn:
                    import json
                    h = json.loads(blob)
                    header_fn(h)
                    blob = json.dumps(h).encode()
                zf.writestr(name, blob)
            if extra:
                zf.writestr(extra, b"x")
        return buf.getvalue()

    with pytest.raises(P.PortraitError, match="version 99"):
        P.decode_portrait(rewrite(lambda h: h.update(version=99)))
    with pytest.raises(P.PortraitError, match="unexpected members"):
        P.decode_portrait(rewrite(extra="payload.pkl"))
    with pytest.raises(P.PortraitError, match="tensors do not match"):
        P.decode_portrait(rewrite(lambda h: h["history"].append(dict(h["history"][0]))))


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    _, p = _portrait(with_delta=False)
    path = P.save_portrait(p, tmp_path / "doc.ide3d")
    before = path.read_bytes()
    _, p2 = _portrait()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(P.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        P.save_portrait(p2, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["doc.ide3d"]  # no temporary file left behind
    monkeypatch.undo()
    P.save_portrait(p2, path)
    _assert_same(P.load_portrait(path), p2)


def test_encoding_does_not_depend_on_the_clock(monkeypatch):
    # The zip module stamps the current time (two-second steps) into each entry written by name; a
    # portrait's bytes must not change with the moment it is saved.
    import time as time_module

    _g, p = _portrait()
    first = P.encode_portrait(p)
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 3600.0)
    assert P.encode_portrait(p) == first
