# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker's portrait session on the untrained ``tiny`` generator (in-process service): new portrait,
mask edit through the canonical editor, restyle (seed, reference photo), global style, undo/redo, render,
photo import with cancel, and a restarted service that reloads the portrait from its document. Truth is computed independently from the saved
model and editor (codes of a seed, the residual mask-edit formula, the document's own hash)."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_helpers import make_tiny_model
from ide3d_core import cameras as C
from ide3d_core.service import protocol as P
from ide3d_core.service.inprocess import InProcessService

torch = pytest.importorskip("torch")
pytest.importorskip("ide3d_core.networks")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(2)
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _call(service, request, out_dir: Path, rid: int = 1):
    reply = P.decode(service.call(P.encode(P.RequestMessage(rid, request, str(out_dir))))[-1])
    return reply


def _ok(service, request, out_dir: Path):
    reply = _call(service, request, out_dir)
    assert reply.ok, reply.error
    return reply.result


def _ref(res: P.PortraitResult) -> dict:
    return dict(portrait_id=res.portrait_id, revision=res.revision, document_file=res.document_file)


def test_session_edits_undo_redo_and_reload_after_restart(model, tmp_path):
    from ide3d_core.encoders import load_encoder
    from ide3d_core.networks import load_generator
    from ide3d_core.portrait import decode_portrait

    g = load_generator(model).eval()
    editor = load_encoder(model / "encoders" / "canonical")
    ns = g.num_shape_ws
    service = InProcessService(model=str(model), device="cpu")
    new = _ok(service, P.NewPortraitRequest(seed=3, truncation=0.7), tmp_path / "new")
    with torch.no_grad():
        ws_seed = g.codes_from_seeds([3], truncation_psi=0.7)[0].numpy()
    np.testing.assert_array_equal(np.load(new.ws_file), ws_seed)
    data = Path(new.document_file).read_bytes()
    assert new.revision == hashlib.sha256(data).hexdigest()[:16]
    assert decode_portrait(data).history[0].kind == "seed" and new.history == ("seed",) and new.current == 0
    current = np.array(Image.open(new.labels_file))
    assert current.shape == (g.img_resolution,) * 2 and new.resolution == g.img_resolution

    # A painted change: w_t kept bit for bit, w_s moved by the residual formula w_s + E(painted) - E(current).
    painted = current.copy()
    painted[: painted.shape[0] // 3] = 13
    painted[painted.shape[0] // 3: painted.shape[0] // 2, 4:-4] = 1
    paint = tmp_path / "paint.png"
    Image.fromarray(painted, "L").save(paint)
    r1 = _ok(service, P.MaskEditRequest(labels_file=str(paint), **_ref(new)), tmp_path / "m1")
    assert r1.history == ("seed", "mask") and r1.current == 1 and r1.revision != new.revision
    ws1 = np.load(r1.ws_file)
    with torch.no_grad():
        delta = (editor.encode_shape(torch.from_numpy(painted)[None].long())
                 - editor.encode_shape(torch.from_numpy(current)[None].long()))[0].numpy()
    np.testing.assert_array_equal(ws1[ns:], ws_seed[ns:])
    np.testing.assert_allclose(ws1[:ns], ws_seed[:ns] + delta, rtol=0, atol=1e-5)
    assert np.abs(delta).max() > 1e-4

    # Direct mode: w_s = E(painted) exactly.
    painted[-6:, 8:-8] = 18
    Image.fromarray(painted, "L").save(paint)
    r2 = _ok(service, P.MaskEditRequest(labels_file=str(paint), mode="direct", **_ref(r1)), tmp_path / "m2")
    ws2 = np.load(r2.ws_file)
    with torch.no_grad():
        np.testing.assert_array_equal(ws2[:ns], editor.encode_shape(torch.from_numpy(painted)[None].long())[0].numpy())
    np.testing.assert_array_equal(ws2[ns:], ws_seed[ns:])

    # Restyle with seed 9's texture (every class: the untrained model's argmax class is arbitrary),
    # then a global style move.
    every = tuple(range(19))
    r3 = _ok(service, P.RestyleRequest(classes=every, style_seed=9, truncation=0.7, **_ref(r2)), tmp_path / "r")
    assert r3.restyle_classes == every and r3.history[-1] == "restyle"
    doc3 = decode_portrait(Path(r3.document_file).read_bytes())
    with torch.no_grad():
        np.testing.assert_array_equal(doc3.state.restyle.style_ws.numpy(), g.codes_from_seeds([9], 0.7).numpy())
    r4 = _ok(service, P.StyleRequest(style_seed=11, shape_alpha=0.0, texture_alpha=0.5, **_ref(r3)), tmp_path / "s")
    ws4 = np.load(r4.ws_file)
    with torch.no_grad():
        other = g.codes_from_seeds([11], 0.7)[0].numpy()
    np.testing.assert_array_equal(ws4[:ns], ws2[:ns])
    np.testing.assert_allclose(ws4[ns:], 0.5 * (ws2[ns:] + other[ns:]), atol=1e-6)
    assert r4.restyle_classes == every

    # Undo twice -> the second mask edit's codes, no restyle; redo once -> the restyle is back.
    u1 = _ok(service, P.HistoryRequest(step=-1, **_ref(r4)), tmp_path / "u1")
    u2 = _ok(service, P.HistoryRequest(step=-1, **_ref(u1)), tmp_path / "u2")
    np.testing.assert_array_equal(np.load(u2.ws_file), ws2)
    assert u2.restyle_classes == () and u2.current == 2 and len(u2.history) == 5
    redo = _ok(service, P.HistoryRequest(step=1, **_ref(u2)), tmp_path / "redo")
    assert redo.restyle_classes == every and redo.current == 3

    # Render from a camera; a restarted service reloads the document and renders the same pixels.
    cam = C.orbit_camera(math.radians(20), math.radians(5))
    render = dict(label=tuple(float(x) for x in cam.label()), width=40, height=24)
    v1 = _ok(service, P.RenderRequest(**render, **_ref(redo)), tmp_path / "v1")
    restarted = InProcessService(model=str(model), device="cpu")
    v2 = _ok(restarted, P.RenderRequest(**render, **_ref(redo)), tmp_path / "v2")
    a, b = np.asarray(Image.open(v1.image_file)), np.asarray(Image.open(v2.image_file))
    assert a.shape == (24, 40, 4) and np.array_equal(a, b)
    assert np.array_equal(np.asarray(Image.open(v1.labels_file)), np.asarray(Image.open(v2.labels_file)))
    # The restyle shows: the same view without it (undone state) differs.
    v3 = _ok(restarted, P.RenderRequest(**render, **_ref(u2)), tmp_path / "v3")
    assert not np.array_equal(a, np.asarray(Image.open(v3.image_file)))

    # A document that is not the named revision is refused; nothing to redo is a clear error.
    bad = _call(InProcessService(model=str(model), device="cpu"),
                P.RenderRequest(**render, portrait_id=redo.portrait_id, revision=redo.revision,
                                document_file=r1.document_file), tmp_path / "bad")
    assert bad.error.kind == "bad_request" and "not revision" in bad.error.message
    none = _call(service, P.HistoryRequest(step=1, **_ref(new)), tmp_path / "none")
    assert none.error.kind == "bad_request" and "redo" in none.error.message


def test_open_document_and_missing_editor(model, tmp_path):
    service = InProcessService(model=str(model), device="cpu")
    new = _ok(service, P.NewPortraitRequest(seed=1), tmp_path / "a")
    opened = _ok(service, P.OpenDocumentRequest(path=new.document_file), tmp_path / "b")
    assert opened.portrait_id != new.portrait_id and opened.history == new.history
    np.testing.assert_array_equal(np.load(opened.ws_file), np.load(new.ws_file))
    assert np.array_equal(np.asarray(Image.open(opened.image_file)), np.asarray(Image.open(new.image_file)))
    junk = tmp_path / "junk.ide3d"
    junk.write_bytes(b"not a portrait")
    reply = _call(service, P.OpenDocumentRequest(path=str(junk)), tmp_path / "c")
    assert reply.error.kind == "bad_request" and "not an .ide3d portrait" in reply.error.message
    # The same base weights without an editor folder: mask edits give the clear "no editor" error,
    # and a portrait from another model is refused.
    plain = InProcessService(model="config:tiny", device="cpu")
    mask = tmp_path / "m.png"
    Image.fromarray(np.asarray(Image.open(new.labels_file)), "L").save(mask)
    reply = _call(plain, P.MaskEditRequest(labels_file=str(mask), **_ref(new)), tmp_path / "d")
    assert reply.error.kind == "bad_request" and "canonical editor" in reply.error.message, reply.error
    reply = _call(plain, P.RestyleRequest(classes=(13,), style_image_file=str(mask), **_ref(new)), tmp_path / "e")
    assert reply.error.kind == "bad_request" and "standard encoder" in reply.error.message, reply.error


def test_photo_import_runs_prepare_and_inversion(model, tmp_path):
    cbook = pytest.importorskip("matplotlib.cbook")
    service = InProcessService(model=str(model), device="cpu")
    progress = []
    req = P.InvertRequest(photo_file=str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
                          steps=2, tune_steps=1)
    lines = service.call(P.encode(P.RequestMessage(1, req, str(tmp_path / "inv"))), on_line=progress.append)
    reply = P.decode(lines[-1])
    assert reply.ok, reply.error
    res = reply.result
    assert res.history == ("invert",) and np.load(res.ws_file).shape == (res.num_ws, res.w_dim)
    messages = [P.decode(m).message for m in progress[:-1]]
    assert any(m.startswith("photo: ") for m in messages) and any(m.startswith("inversion: ") for m in messages)
    from ide3d_core.portrait import load_portrait

    doc = load_portrait(res.document_file)
    assert doc.source_image is not None and doc.delta is not None  # tuned weights travel in the document
    # Esc in Blender sets the request's cancel token: the inversion stops at its next step.
    from ide3d_core.progress import CancelToken

    token, steps = CancelToken(), []

    def on_line(line):
        msg = P.decode(line)
        if isinstance(msg, P.ProgressMessage):
            steps.append(msg.done)
            if msg.message.startswith("inversion: "):
                token.cancel()

    long = P.InvertRequest(photo_file=req.photo_file, steps=10_000, tune_steps=0)
    lines = service.call(P.encode(P.RequestMessage(2, long, str(tmp_path / "c"))), on_line=on_line, cancel=token)
    assert P.decode(lines[-1]).error.kind == "cancelled" and max(steps) < 6 + 10
    # A reference photo as the style source: texture codes from the standard encoder, shape codes kept.
    from ide3d_core.encoders import load_encoder
    from ide3d_core.photo import prepare

    ref = dict(portrait_id=res.portrait_id, revision=res.revision, document_file=res.document_file)
    styled = _ok(service, P.RestyleRequest(classes=(13, 18), style_image_file=req.photo_file, **ref), tmp_path / "st")
    doc = load_portrait(styled.document_file)
    encoder = load_encoder(model / "encoders" / "standard")
    with torch.no_grad():
        w_t = encoder.encode_texture(prepare(req.photo_file, size=64).image_tensor())[0]
    ns = res.num_shape_ws
    np.testing.assert_array_equal(doc.state.restyle.style_ws[:, :ns].numpy(), doc.ws[:, :ns].numpy())
    np.testing.assert_allclose(doc.state.restyle.style_ws[:, ns:].numpy(), w_t.numpy(), atol=1e-6)
    assert styled.restyle_classes == (13, 18) and doc.history[-1].params["source"]["kind"] == "image"
    missing = _call(service, P.InvertRequest(photo_file=str(tmp_path / "none.jpg")), tmp_path / "x")
    assert missing.error.kind == "bad_request" and "none.jpg" in missing.error.message


def test_live_mask_edits_replace_one_record(model, tmp_path):
    """A live painting session: every stroke is sent with ``live``; the first appends a record, the later
    ones replace it, each computed from the state before the session (residual formula against the
    pre-session canonical map), so undo returns to that state in one step."""
    from ide3d_core.encoders import load_encoder
    from ide3d_core.networks import load_generator

    g = load_generator(model).eval()
    editor = load_encoder(model / "encoders" / "canonical")
    service = InProcessService(model=str(model), device="cpu")
    ns = g.num_shape_ws
    new = _ok(service, P.NewPortraitRequest(seed=4), tmp_path / "n")
    ws_seed = np.load(new.ws_file)
    before = np.array(Image.open(new.labels_file))
    paint = tmp_path / "paint.png"
    results = []
    for k, rows in enumerate((4, 9, 14)):
        painted = before.copy()
        painted[:rows] = 13
        Image.fromarray(painted, "L").save(paint)
        ref = _ref(results[-1] if results else new)
        results.append(_ok(service, P.MaskEditRequest(labels_file=str(paint), live=True, **ref), tmp_path / f"l{k}"))
        assert results[-1].history == ("seed", "mask") and results[-1].current == 1, results[-1].history
        with torch.no_grad():
            delta = (editor.encode_shape(torch.from_numpy(painted)[None].long())
                     - editor.encode_shape(torch.from_numpy(before)[None].long()))[0].numpy()
        ws = np.load(results[-1].ws_file)
        np.testing.assert_allclose(ws[:ns], ws_seed[:ns] + delta, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ws[ns:], ws_seed[ns:])
    # a non-live edit after the session stacks a new record; a live one after that starts a new session
    plain = _ok(service, P.MaskEditRequest(labels_file=str(paint), **_ref(results[-1])), tmp_path / "p")
    assert plain.history == ("seed", "mask", "mask")
    again = _ok(service, P.MaskEditRequest(labels_file=str(paint), live=True, **_ref(plain)), tmp_path / "a")
    assert again.history == ("seed", "mask", "mask", "mask")
    undo = _ok(service, P.HistoryRequest(step=-1, **_ref(results[-1])), tmp_path / "u")
    np.testing.assert_array_equal(np.load(undo.ws_file), ws_seed)
