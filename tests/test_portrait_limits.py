# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile portrait documents (generated here from a real one): bounded sizes and depth, and every
tensor and field checked on load, each refused with a one-line :class:`PortraitError`."""
from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ide3d_core import portrait as P
from ide3d_core import portrait_checks as C
from ide3d_core.cameras import orbit_camera
from ide3d_core.networks import CONFIGS
from test_portrait_fixtures import make_generator


@pytest.fixture(scope="module")
def good():
    g = make_generator()
    ws = g.codes_from_seeds([1])
    recs = (P.EditRecord("invert", {"steps": 3}, P.PortraitState(ws)),
            P.EditRecord("restyle", {}, P.PortraitState(ws.clone(), P.Restyle(g.codes_from_seeds([2]), (13, 17)))))
    delta = P.WeightDelta.between(g, _perturbed(g))
    portrait = P.Portrait(camera=orbit_camera(0.3, -0.1).label(), generator_config=CONFIGS["tiny"].to_dict(),
                          base_fingerprint=P.generator_fingerprint(g), history=recs, current=1, delta=delta,
                          source_image=np.zeros((40, 40, 3), np.uint8), source_mask=np.ones((40, 40), np.uint8))
    return g, P.encode_portrait(portrait)


def _perturbed(g):
    t = make_generator()
    with torch.no_grad():
        next(iter(t.parameters())).add_(0.01)
    return t


def rewrite(data: bytes, header=None, tensors=None, members=None) -> bytes:
    """A copy of the document ``data`` with its header / tensors changed by the given functions."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            blob = src.read(name)
            if name == "portrait.json" and header is not None:
                h = json.loads(blob)
                header(h)
                blob = json.dumps(h).encode()
            if name == "tensors.safetensors" and tensors is not None:
                t = dict(st_load(blob))
                tensors(t)
                blob = st_save(t)
            zf.writestr(name, blob, compress_type=zipfile.ZIP_DEFLATED)
        for name, blob in (members or {}).items():
            zf.writestr(name, blob, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def refused(data: bytes, match: str) -> str:
    with pytest.raises(P.PortraitError, match=match) as e:
        P.decode_portrait(data, "doc.ide3d")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    return str(e.value)


def test_the_good_document_loads(good):
    g, data = good
    p = P.decode_portrait(data)
    assert p.history[1].state.restyle.classes == (13, 17)
    p.generator(g)


def _set(path, value):
    def f(h):
        d = h
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


@pytest.mark.parametrize("path,value,match", [
    (("history", 1, "restyle_classes"), ["hair", "cloth"], "restyle classes of record 1 must be a list"),
    (("history", 1, "restyle_classes"), [13, 99], r"distinct class ids in 0..18"),
    (("history", 1, "restyle_classes"), [13, 13], r"distinct class ids"),
    (("history", 1, "restyle_classes"), [True], "integer class ids"),
    (("history", 1, "restyle_classes"), [], "integer class ids"),
    (("history", 0, "kind"), 7, "record 0 is malformed"),
    (("history", 0, "params"), [1], "record 0 is malformed"),
    (("current",), True, "history cursor"),
    (("current",), "1", "history cursor"),
    (("current",), 5, "history cursor"),
    (("history",), [], "1..10000 records"),
    (("source_image",), 1, "true or false"),
    (("extra",), [], "extra must be an object"),
    (("generator", "model_hint"), 7, "generator header is malformed"),
    (("generator", "config", "w_dim"), 10 ** 9, r"w_dim must be an integer in \[1, 4096\]"),
    (("delta", "names"), ["a", "a"], "weight-delta header is malformed"),
    (("camera",), [0.0] * 25, "camera is not a valid camera"),
    (("camera",), [float("nan")] * 25, "NaN or infinite"),
    (("camera",), [1.0] * 24, "25 numbers"),
    (("camera",), ["1"] * 25, "25 numbers"),
    (("version",), 1.0, "format version"),
])
def test_bad_fields_are_refused(good, path, value, match):
    refused(rewrite(good[1], header=_set(path, value)), match)


def _camera_at(eye, target=(0.0, 0.0, 0.0), focal=4.2647):
    from ide3d_core.cameras import Camera, intrinsics, look_at

    return [float(x) for x in Camera(look_at(eye, target), intrinsics(focal)).label()]


@pytest.mark.parametrize("camera,match", [
    (lambda: _camera_at((0, 0, 2.7), target=(0, 0, 5.4)), "behind the camera"),
    (lambda: _camera_at((0, 0, 0.3), target=(0, 0, 1)), "units from the head's centre"),
    (lambda: _camera_at((0, 0, 500)), "units from the head's centre"),
    (lambda: _camera_at((0, 0, 2.7), target=(3, 0, 0)), "projects outside the frame"),
    (lambda: _camera_at((0, 0, 2.7), focal=1e5), "implausible intrinsics"),
])
def test_a_camera_that_cannot_see_the_head_is_an_error(good, camera, match):
    refused(rewrite(good[1], header=_set(("camera",), camera())), "cannot see the head|" + match)
    refused(rewrite(good[1], header=_set(("camera",), camera())), match)


def test_the_canonical_and_orbit_cameras_pass():
    from ide3d_core.cameras import canonical_camera

    for cam in [canonical_camera()] + [orbit_camera(math.radians(y), math.radians(p))
                                       for y in (-90, -40, 0, 60, 180) for p in (-30, 0, 30)]:
        C.check_camera([float(x) for x in cam.label()])


@pytest.mark.parametrize("change,match", [
    (lambda t: t.update({"history.0.ws": torch.zeros(1, 3, 4)}), r"codes of record 0 have shape \(1, 3, 4\)"),
    (lambda t: t.update({"history.0.ws": torch.zeros(2, 3)}), "must be a float32 \\[1, num_ws, w_dim\\] tensor"),
    (lambda t: t.update({"history.0.ws": t["history.0.ws"].double()}), "float32"),
    (lambda t: t["history.0.ws"].__setitem__((0, 0, 0), float("nan")), "NaN or infinite"),
    (lambda t: t["history.1.ws"].__setitem__((0, 0, 0), 1e30), "beyond"),
    (lambda t: t.update({"history.1.style_ws": torch.zeros(1, 1, 1)}), "restyle codes of record 1 have shape"),
    (lambda t: t.update({k: torch.full_like(v, float("inf")) for k, v in t.items() if k.startswith("delta.")}),
     "weight delta .* NaN or infinite"),
    (lambda t: t.update({"extra.tensor": torch.zeros(1)}), "tensors do not match the header"),
])
def test_bad_tensors_are_refused(good, change, match):
    refused(rewrite(good[1], tensors=change), match)


def test_a_delta_of_the_wrong_shape_does_not_broadcast(good):
    g, data = good
    name = next(iter(P.decode_portrait(data).delta.deltas))
    doc = P.decode_portrait(rewrite(data, tensors=lambda t: t.update({f"delta.{name}": torch.zeros(1, dtype=torch.float16)})))
    with pytest.raises(P.PortraitError, match=rf"weight delta {name} has shape \(1,\)"):
        doc.generator(g)


def test_deep_json_is_refused(good):
    def deep(n):
        return lambda h: h["extra"].update(x=json.loads("[" * n + "]" * n))
    refused(rewrite(good[1], header=deep(40)), "nested deeper than 32")
    # Too deep for the JSON parser itself: written by hand (json.dumps would recurse too).
    blob = json.dumps(json.loads(zipfile.ZipFile(io.BytesIO(good[1])).read("portrait.json")))
    blob = blob[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}"
    src = zipfile.ZipFile(io.BytesIO(good[1]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            zf.writestr(name, blob if name == "portrait.json" else src.read(name), zipfile.ZIP_DEFLATED)
    refused(out.getvalue(), "nested too deeply")


def test_members_are_bounded_while_decompressing(good, monkeypatch):
    # A header that inflates past its limit: refused after reading one chunk past the limit.
    monkeypatch.setitem(C.MAX_MEMBER_BYTES, "portrait.json", 1 << 20)
    pad = lambda h: h["extra"].update(pad=" " * (2 << 20))  # noqa: E731
    refused(rewrite(good[1], header=pad), "portrait.json declares|decompresses to more than")
    monkeypatch.setitem(C.MAX_MEMBER_BYTES, "portrait.json", 16 << 20)
    monkeypatch.setattr(C, "MAX_TOTAL_BYTES", 4 << 20)
    big_extra = lambda h: h["extra"].update(pad=" " * (3 << 20))  # noqa: E731
    data = rewrite(good[1], header=big_extra, tensors=lambda t: t.update(
        {"history.0.ws": t["history.0.ws"]}))
    P.decode_portrait(data)  # 3 MiB header + small rest: under the total
    big = lambda t: t.update({"history.0.ws": torch.zeros(1, 8, 200_000)})  # noqa: E731
    refused(rewrite(good[1], header=big_extra, tensors=big), "in total")


def test_a_lying_zip_directory_is_caught_while_reading(good):
    # The central directory claims 100 bytes for the tensors; the stream holds far more.
    data = bytearray(good[1])
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = zf.getinfo("tensors.safetensors")
    assert info.file_size > 100
    refused(rewrite(good[1], tensors=lambda t: t.update({"history.0.ws": torch.zeros(1, 3, 400_000)})),
            "codes of record 0 have shape|decompresses")


def test_embedded_images_are_bounded_before_decoding(good):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5000, 8)).save(buf, "PNG")
    src = zipfile.ZipFile(io.BytesIO(good[1]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            zf.writestr(name, buf.getvalue() if name == "source.png" else src.read(name))
    refused(out.getvalue(), r"source.png is 5000x8 pixels")
    mask = io.BytesIO()
    Image.fromarray(np.full((40, 40), 40, np.uint8), "L").save(mask, "PNG")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            zf.writestr(name, mask.getvalue() if name == "source_mask.png" else src.read(name))
    refused(out.getvalue(), "mask holds ids >= 19")
