# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo projection (ide3d_core/photo_projection.py) against independent truth: the torch projection
against the numpy camera convention and against the rays through pixel centres; a procedural head's exact
photo carried through its exact surface to other views, against that head's exact renders at those views
(view-independent shading, exact labels); occlusion; the scope after edits; and a portrait's render."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core.inversion import psnr
from ide3d_core.labels import ID
from ide3d_core.photo_projection import (LABEL_LOGIT, PhotoProjection, ProjectionConfig, ProjectionScope,
                                         lay_photos, portrait_photos, project_photos, projected_photo, projection_scope)
from ide3d_core.portrait import PortraitState, Restyle

R = 128  # test resolution: exact procedural renders are the truth at this size


def _cam(yaw_deg: float, pitch_deg: float = 0.0) -> torch.Tensor:
    return torch.from_numpy(C.orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg)).label()).float()


def test_project_points_is_the_camera_convention():
    rng = np.random.default_rng(3)
    labels = [C.orbit_camera(rng.uniform(-1, 1), rng.uniform(-0.4, 0.4)).label() for _ in range(3)]
    pts = rng.normal(scale=0.3, size=(3, 50, 3))
    uv, z = C.project_points(torch.from_numpy(np.stack(labels)).double(), torch.from_numpy(pts))
    for b, lab in enumerate(labels):
        cam = C.Camera.from_label(lab)
        uv_np, z_np = cam.project(pts[b], 64, 48)
        np.testing.assert_allclose(uv[b].numpy() * [64, 48], uv_np, atol=1e-4)  # float32 labels: R^T vs inv(R)
        np.testing.assert_allclose(z[b].numpy(), z_np, atol=1e-6)
    # points on the rays through pixel centres land on those centres, at their depth along the axis
    c = torch.from_numpy(np.stack(labels[:1])).double()
    o, d = C.rays_from_labels(c, 6, 8)
    t = torch.linspace(2.0, 3.0, 48, dtype=torch.float64)[None, :, None]
    uv, z = C.project_points(c, o + t * d)
    ii, jj = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    np.testing.assert_allclose(uv[0, :, 0].numpy(), ((jj + 0.5) / 8).ravel(), atol=1e-6)
    np.testing.assert_allclose(uv[0, :, 1].numpy(), ((ii + 0.5) / 6).ravel(), atol=1e-6)
    assert (z > 0).all()
    with pytest.raises(ValueError):
        C.project_points(c, torch.zeros(2, 4, 3, dtype=torch.float64))


@pytest.fixture(scope="module")
def head():
    """One procedural head: its exact renders (image, labels, surface points, mask) at several yaws."""
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(1, torch.Generator().manual_seed(4242), "cpu")
    views = {}
    for yaw in (20.0, -10.0, -60.0, -20.0, 15.0):
        c = _cam(yaw)
        r = render_heads(heads, c[None], R)
        o, d = C.rays_from_labels(c[None], R, R)
        points = o + r.depth.flatten(1)[..., None] * d  # [1, R*R, 3] the exact visible surface
        views[yaw] = (c, r.image.float(), r.labels, points, r.mask.float())
    return views


def _photo(view, with_mask=True):
    c, image, labels, points, mask = view
    return projected_photo(image, c, points, mask, labels if with_mask else None, labels)


def _blank(view):
    """A render that knows nothing: grey image, and on the head (the exact mask) a class the head does not
    have (background elsewhere)."""
    c, image, labels, points, mask = view
    absent = next(k for k in range(1, 19) if not (labels == k).any())
    sem = torch.zeros(1, 19, R, R)
    sem[:, 0] = torch.where(mask[:, 0] > 0.5, -5.0, 5.0)
    sem[:, absent] = 1.0
    return torch.zeros_like(image), sem


@pytest.mark.parametrize("yaw", [-10.0, -60.0])
def test_an_exact_photo_through_the_exact_surface_gives_the_exact_view(head, yaw):
    photo = _photo(head[20.0])
    c, truth_img, truth_lab, points, mask = head[yaw]
    blank_img, blank_sem = _blank(head[yaw])
    img, sem = lay_photos(blank_img, blank_sem, points, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=True, colour=True))
    covered = (sem.max(1).values > LABEL_LOGIT / 2)[0]  # where a photo label was laid
    on_head = mask[0, 0] > 0.5
    share = float(covered[on_head].float().mean())
    assert share > (0.6 if yaw == -10.0 else 0.1), share  # the far side at -60 was hidden from yaw 20
    assert not covered[~on_head].any()
    agree = float((sem.argmax(1)[0][covered] == truth_lab[0][covered]).float().mean())
    assert agree > 0.95, agree  # nearest samples at class borders, grazing at -60
    # the photo's colour at each covered point is the view's exact colour there: the lights are fixed in the
    # world, so a surface point's colour is the same from any camera
    colour, weight, _, _ = project_photos(points[0].reshape(R, R, 3), c, [photo], ProjectionConfig())
    seen = weight > 0
    truth_flat = truth_img[0].reshape(3, -1).T
    # error weighted as the render takes the colour (by the weight: grazing samples, blurred by the
    # foreshortening, count little)
    mse = float(((colour[seen] - truth_flat[seen]).square().mean(1) * weight[seen]).sum() / weight[seen].sum())
    p = 10.0 * math.log10(4.0 / mse)
    assert p > 27.0, p  # (bilinear resampling of fine texture at 128 px costs the rest)
    # and the render takes it in proportion to the weight
    blended = blank_img[0].reshape(3, -1).T * (1 - weight[:, None]) + colour * weight[:, None]
    torch.testing.assert_close(img[0].reshape(3, -1).T[on_head.flatten()], blended[on_head.flatten()])


def test_the_photo_nearest_the_render_counts_most(head):
    """Two photos that saw the same points (yaw +20 exact, yaw -20 painted white): a render at yaw +15 takes
    its colour from the near photo, so it matches the exact view there; without the preference the white
    photo counts as much."""
    near = _photo(head[20.0])
    c, image, labels, points, mask = head[-20.0]
    far = projected_photo(torch.ones_like(image), c, points, mask, labels, labels)
    c, truth_img, truth_lab, points, mask = head[15.0]
    both = None
    scores = {}
    for k in (0.0, 32.0):
        config = ProjectionConfig(view_preference=k)
        colour, weight, _, _ = project_photos(points[0].reshape(R, R, 3), c, [near, far], config)
        _, w_near, _, _ = project_photos(points[0].reshape(R, R, 3), c, [near], config)
        _, w_far, _, _ = project_photos(points[0].reshape(R, R, 3), c, [far], config)
        both = (w_near > 0.5) & (w_far > 0.5) if both is None else both
        truth_flat = truth_img[0].reshape(3, -1).T
        scores[k] = float(psnr(colour[both].T[None, :, :, None], truth_flat[both].T[None, :, :, None]))
    assert both.sum() > 500
    assert scores[32.0] > 25.0 and scores[32.0] > scores[0.0] + 8.0, scores


def test_hidden_points_take_nothing_from_the_photo(head):
    """Points behind the surface the photo saw (the far side of the head seen from the front) get nothing."""
    c, image, labels, points, mask = head[20.0]
    photo = _photo(head[20.0])
    behind = points + 0.25 * torch.nn.functional.normalize(points - c[:16].reshape(4, 4)[:3, 3], dim=-1)
    blank_img, blank_sem = _blank(head[20.0])
    img, sem = lay_photos(blank_img, blank_sem, behind, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=True, colour=True))
    assert torch.equal(sem, blank_sem) and torch.equal(img, blank_img)


def test_without_a_mask_labels_stay_and_colour_follows_the_class_check(head):
    c, truth_img, truth_lab, points, mask = head[-10.0]
    photo = _photo(head[20.0], with_mask=False)
    blank_img, blank_sem = _blank(head[-10.0])
    img, sem = lay_photos(blank_img, blank_sem, points, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=True, colour=True))
    assert torch.equal(sem, blank_sem)  # no mask: the photo's labels are not evidence
    # colour goes only where the render's class is the photo's: the blank render's class is not the head's...
    assert torch.equal(img, blank_img)
    # ... a render that says skin where the truth is skin takes the photo's colour there, and only there
    sem_skin = blank_sem.clone()
    sem_skin[:, ID["skin"]] += 3.0 * (truth_lab == ID["skin"]).float()
    img2, _ = lay_photos(blank_img, sem_skin, points, c[None], [photo], ProjectionConfig(),
                         ProjectionScope(labels=True, colour=True))
    changed = img2.abs().sum(1)[0] > 0
    assert changed.any() and (truth_lab[0][changed] == ID["skin"]).all()


def test_scope_follows_the_edits():
    ws = torch.randn(1, 6, 4)
    fitted = ws.clone()
    assert projection_scope(fitted, PortraitState(ws), 2) == ProjectionScope(True, True)
    shape = ws.clone()
    shape[:, 1] += 1
    assert projection_scope(fitted, PortraitState(shape), 2) == ProjectionScope(False, True)
    texture = ws.clone()
    texture[:, 4] += 1
    assert projection_scope(fitted, PortraitState(texture), 2) == ProjectionScope(True, False)
    restyled = PortraitState(ws, Restyle(torch.randn(1, 6, 4), (ID["hair"],)))
    assert projection_scope(fitted, restyled, 2).excluded_classes == (ID["hair"],)


def test_scope_off_and_excluded_classes_leave_the_render(head):
    c, truth_img, truth_lab, points, mask = head[-10.0]
    photo = _photo(head[20.0])
    blank_img, blank_sem = _blank(head[-10.0])
    img, sem = lay_photos(blank_img, blank_sem, points, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=False, colour=False))
    assert img is blank_img and sem is blank_sem
    # labels off (a mask edit): the render's labels stand, colour only where they agree with the photo
    img, sem = lay_photos(blank_img, blank_sem, points, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=False, colour=True))
    assert torch.equal(sem, blank_sem) and torch.equal(img, blank_img)
    # a restyled class keeps the render's colour
    img, sem = lay_photos(blank_img, blank_sem, points, c[None], [photo], ProjectionConfig(),
                          ProjectionScope(labels=True, colour=True, excluded_classes=(ID["skin"],)))
    skin = sem.argmax(1)[0] == ID["skin"]
    assert skin.sum() > 100 and (img[0][:, skin] == 0).all() and (img[0][:, ~skin].abs().sum(0) > 0).any()


def test_portrait_photos_trust_only_given_and_parsed_masks():
    from ide3d_core.portrait import EditRecord, Portrait

    img = np.zeros((8, 8, 3), np.uint8)
    mask = np.ones((8, 8), np.uint8)

    def portrait(source):
        params = {} if source is None else {"mask_source": source}
        return Portrait(camera=_cam(0).numpy(), generator_config={}, base_fingerprint="x",
                        history=(EditRecord("invert", params, PortraitState(torch.zeros(1, 2, 2))),),
                        source_image=img, source_mask=mask)

    assert portrait_photos(portrait(None))[0][2] is mask
    assert portrait_photos(portrait("parser"))[0][2] is mask
    assert portrait_photos(portrait("landmarks"))[0][2] is None  # a rough rule mask: colour only
    assert portrait_photos(Portrait(camera=_cam(0).numpy(), generator_config={}, base_fingerprint="x",
                                    history=(EditRecord("invert", {}, PortraitState(torch.zeros(1, 2, 2))),))) == []


def test_a_portrait_renders_its_photo_at_novel_views(tmp_path):
    """The bundled model inverted (codes only, a few steps) from a procedural head's exact photo: its render
    at another view with the photo laid over it is closer to that head's exact render than without."""
    from ide3d_core.inversion import InversionPolicy, invert
    from ide3d_core.metrics import mean_iou
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR
    from ide3d_core.networks import load_generator
    from ide3d_core.operations.render import render_view
    from ide3d_core.photo_projection import portrait_projection
    from ide3d_core.portrait import load_portrait, save_portrait
    from training.procedural import render_heads, sample_heads

    torch.manual_seed(0)
    G = load_generator(BUNDLED_MODEL_DIR)
    heads = sample_heads(1, torch.Generator().manual_seed(77), "cpu")
    src, novel = _cam(20.0), _cam(-20.0)
    photo = render_heads(heads, src[None], 256)
    truth = render_heads(heads, novel[None], 256)
    policy = InversionPolicy(use_encoder=False, optimise_steps=8, tune_steps=0, detail_strength="off",
                             label_offsets=False)
    mask = photo.labels[0].numpy().astype(np.uint8)
    res = invert(G, photo.image, mask=mask, camera=src.numpy(), policy=policy)
    from ide3d_core.images import to_uint8_hwc

    portrait = load_portrait(save_portrait(res.portrait(G, source_image=to_uint8_hwc(photo.image[0]),
                                                        source_mask=mask), tmp_path / "p.ide3d"))
    g = portrait.generator(G)
    projection = portrait_projection(g, portrait)
    assert isinstance(projection, PhotoProjection) and len(projection.photos) == 1
    plain = render_view(g, portrait.state, novel.numpy(), quality="reference")
    laid = render_view(g, portrait.state, novel.numpy(), quality="reference", projection=projection)
    from ide3d_core.images import from_uint8_hwc

    truth_u8 = from_uint8_hwc(to_uint8_hwc(truth.image[0]))
    p0, p1 = (float(psnr(from_uint8_hwc(v.image), truth_u8)) for v in (plain, laid))
    m0, m1 = (mean_iou(v.ids, truth.labels[0].numpy()) for v in (plain, laid))
    assert p1 > p0 + 0.5 and m1 > m0 + 0.03, (p0, p1, m0, m1)
    # the backdrop is the model's: pixels the render calls background do not change
    bg = plain.ids == 0
    assert np.array_equal(plain.image[bg & (laid.ids == 0)], laid.image[bg & (laid.ids == 0)])

    # the service (Render From Active Camera) shows the same, and the model alone with photo=False
    from PIL import Image

    from ide3d_core.service import protocol as P
    from ide3d_core.service.inprocess import InProcessService
    from ide3d_core.service.session import revision_of

    doc = tmp_path / "p.ide3d"
    ref = dict(portrait_id="p", revision=revision_of(doc.read_bytes()), document_file=str(doc))
    service = InProcessService(model=str(BUNDLED_MODEL_DIR), device="cpu")
    shown = {}
    for photo in (True, False):
        req = P.RenderRequest(label=tuple(float(x) for x in novel.numpy()), width=256, height=256,
                              quality="reference", photo=photo, **ref)
        reply = P.decode(service.call(P.encode(P.RequestMessage(1, req, str(tmp_path / str(photo)))))[-1])
        assert reply.ok, reply.error
        shown[photo] = np.asarray(Image.open(reply.result.image_file))[..., :3]
    assert np.array_equal(shown[True], laid.image) and np.array_equal(shown[False], plain.image)
    # an edit keeps the session's projection (no new set-up per stroke), and a restyled class shows the model
    entry = service.backend.session.latest("p")
    built = entry.photo_projection()
    restyle = P.RestyleRequest(classes=(ID["hair"],), style_seed=3, **ref)
    edited = P.decode(service.call(P.encode(P.RequestMessage(3, restyle, str(tmp_path / "e"))))[-1])
    assert edited.ok, edited.error
    assert service.backend.session.latest("p").photo_projection() is built
    bad = P.RenderRequest(label=tuple(float(x) for x in novel.numpy()), width=64, height=64, photo="yes", **ref)
    reply = P.decode(service.call(P.encode(P.RequestMessage(2, bad, str(tmp_path / "bad"))))[-1])
    assert not reply.ok and reply.error.kind == "bad_request" and "photo" in reply.error.message


def test_a_photo_that_cannot_be_projected_is_left_out():
    from ide3d_core.photo_projection import _projectable

    cam = _cam(0).numpy()
    assert _projectable(np.zeros((16, 16, 3), np.uint8), cam, None)
    assert _projectable(np.zeros((16, 16, 3), np.uint8), cam, np.zeros((16, 16), np.uint8))
    assert not _projectable(np.zeros((16, 12, 3), np.uint8), cam, None)  # not square
    assert not _projectable(np.zeros((16, 16, 3), np.uint8), cam, np.zeros((8, 8), np.uint8))
    assert not _projectable(np.zeros((16, 16, 3), np.uint8), cam[:16], None)
