# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo projection: a portrait's own photos laid over its renders, through its fitted surface.

Why. The generator renders its field at 64 px and the field is a fit; a photo holds the head's true colours
and (with a mask) its true class borders at full resolution, for every surface point the photo saw. The
procedural heads are lit by lights fixed in the world (Lambert key, fill and ambient:
``training/procedural/textures.py``), and real faces under soft light nearly so: a surface point's colour
in a photo is its colour from any camera. So wherever a render sees a point some photo saw, the photo's
pixel is the better answer than the field's guess. Held-out inversions (issue 14's evaluation, one photo
at yaw 20) gain about 1 dB and 0.07 mIoU at yaw -40/0/+40 (docs/photo_projection.md).

How, for every output pixel of a square render from camera ``c``:

1. its visible surface point ``x`` (:func:`ide3d_core.networks.detail.surface_points`: the neural depth and
   opacity upsampled to the output, as the surface detail reads it);
   with two photos or more, ``x`` first moves along its ray to the depth where they agree
   (:mod:`ide3d_core.photo_stereo`: the fitted surface is about 0.01 model units off, a pixel or two of a
   photo's detail at a 15-30 degree turn); the weights below keep the fitted surface's smooth normals;
2. for each photo ``j``: ``x`` projected into the photo's camera (:func:`~ide3d_core.camera_torch.project_points`)
   lands at ``uv_j`` with camera depth ``z_j``. The photo saw ``x`` if ``uv_j`` is in its frame, ``z_j`` is
   within ``depth_tolerance`` (model units) of the fitted surface the photo's camera sees there (a depth map
   rendered once per photo, :func:`prepare_projection`; behind it the point was hidden, in front of it an
   edit moved the surface) and the photo's pixel there is head (its
   mask, or the fitted render's head where there is no mask, eroded by ``erode_px``). Its weight is
   ``w_j = clamp((cos t_j - min_cos) / (1 - min_cos), 0, 1)`` with ``t_j`` the angle between the surface
   normal (from the output's surface points) and the direction to photo ``j``'s camera (``min_cos`` 0 by
   default: ``w_j = cos t_j``): a photo that saw the surface at a grazing angle gives little;
3. colour: ``image <- (1 - W) image + W (sum_j p_j photo_j(uv_j)) / sum_j p_j`` with
   ``W = min(1, sum_j w_j)`` (bilinear samples) and the preference ``p_j = w_j ((1 + cos a_j) / 2) ** k``,
   ``a_j`` the angle between photo ``j``'s ray and the render's at the point (``k`` = ``view_preference``:
   with several photos the one that saw the point from nearest the render's direction counts most, as in
   view-dependent texture mapping; the geometry's errors move a photo's detail least there);
4. labels, for photos with a mask: where some ``w_j > 0`` the class of the photo with the largest
   preference (nearest pixel) wins: its logit is raised by :data:`LABEL_LOGIT`.

Only pixels the render calls head (background probability below 0.5) change: the backdrop stays the model's,
and at the head's outline the photo's colour is composited over that backdrop with the render's own matte
(a render that half covers a pixel takes half the photo there).

Scope (:func:`projection_scope`): the photos show the head as it was inverted. Labels are projected only
while the portrait's shape codes are the inverted ones (a mask edit changes them: its labels are the
painted ones); colour only while the texture codes are the inverted ones (a global style change replaces
the photo's look), never on restyled classes, and only where the rendered class agrees with the photo's
(hair painted out shows the field's scalp, not the photo's hair).

Frames and units: cameras are 25-float labels (:mod:`ide3d_core.cameras`), points model world, images in
the image range of :mod:`ide3d_core.images` ([-1, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ide3d_core.camera_torch import camera_positions, project_points
from ide3d_core.labels import ID, NUM_CLASSES
from ide3d_core.photo_stereo import StereoConfig, refine_points

BACKGROUND_CLASS = ID["background"]

#: Added to the logit of a projected photo label: it wins the argmax over any logit the field gives.
LABEL_LOGIT = 40.0


@dataclass(frozen=True)
class ProjectionConfig:
    """How photos are laid over renders (module docstring).

    ``min_cos``: surfaces seen by a photo at ``cos t <= min_cos`` get nothing from it. ``depth_tolerance``:
    model units a point may lie off the photo's fitted surface (behind it: hidden; in front: a surface an
    edit moved) and still count as seen. ``erode_px``: the photo's head mask shrinks by this many of its
    pixels (no background colour at silhouettes). ``view_preference``: among photos that saw a point, each
    counts ``((1 + cos a) / 2) ** view_preference`` times its weight, ``a`` the angle between its ray and the
    render's at the point (the nearest view wins; 0: all alike). ``stereo``: with two or more photos, the
    render's surface is first moved to where they agree (:mod:`ide3d_core.photo_stereo`; ``steps`` 0: off).
    Defaults measured in docs/photo_projection.md.
    """

    min_cos: float = 0.0
    depth_tolerance: float = 0.03
    erode_px: int = 2
    view_preference: float = 32.0
    stereo: StereoConfig = StereoConfig()

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_cos < 1.0:
            raise ValueError(f"min_cos must be in [0, 1), got {self.min_cos}")
        if not self.depth_tolerance > 0.0:
            raise ValueError(f"depth_tolerance must be positive, got {self.depth_tolerance}")
        if not 0 <= self.erode_px <= 16:
            raise ValueError(f"erode_px must be in 0..16, got {self.erode_px}")
        if not 0.0 <= self.view_preference <= 1000.0:
            raise ValueError(f"view_preference must be in [0, 1000], got {self.view_preference}")


@dataclass(frozen=True, eq=False)
class ProjectedPhoto:
    """One photo ready to project: ``image [1, 3, H, W]`` (image range), ``labels [1, H, W]`` int64 class ids
    (the photo's mask, or the fitted render's labels when ``exact_labels`` is False), ``camera [25]``,
    ``depth [1, 1, H, W]`` camera depth of the fitted surface seen from it, ``usable [1, 1, H, W]`` float
    (1 where its pixel is head, eroded)."""

    image: torch.Tensor
    labels: torch.Tensor
    exact_labels: bool
    camera: torch.Tensor
    depth: torch.Tensor
    usable: torch.Tensor


@dataclass(frozen=True)
class ProjectionScope:
    """What may be projected over one state's renders (:func:`projection_scope`)."""

    labels: bool
    colour: bool
    excluded_classes: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        return self.labels or self.colour


def projection_scope(fitted_ws: torch.Tensor, state: Any, num_shape_ws: int) -> ProjectionScope:
    """The scope for ``state`` (a :class:`~ide3d_core.portrait.PortraitState`) of a portrait inverted to
    codes ``fitted_ws [1, num_ws, w_dim]`` (module docstring)."""
    ws = state.ws.detach().cpu().float()
    fit = fitted_ws.detach().cpu().float()
    if ws.shape != fit.shape:
        return ProjectionScope(False, False)
    shape_same = (torch.equal(ws[:, :num_shape_ws], fit[:, :num_shape_ws])
                  and state.shape_residual is None)
    texture_same = torch.equal(ws[:, num_shape_ws:], fit[:, num_shape_ws:])
    excluded = tuple(int(k) for k in state.restyle.classes) if state.restyle is not None else ()
    return ProjectionScope(labels=shape_same, colour=texture_same, excluded_classes=excluded)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``mask [B, 1, H, W]`` in {0, 1} shrunk by ``radius`` pixels (a square structuring element)."""
    if radius <= 0:
        return mask
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


def surface_normals(points: torch.Tensor, toward: torch.Tensor) -> torch.Tensor:
    """``points [B, H, W, 3]`` a grid of surface points -> ``[B, H, W, 3]`` unit normals by central
    differences, turned toward the points ``toward [B, 3]`` (the viewing camera); zero on the grid's border."""
    dx = torch.zeros_like(points)
    dy = torch.zeros_like(points)
    dx[:, 1:-1, 1:-1] = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    dy[:, 1:-1, 1:-1] = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    n = F.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
    facing = ((toward[:, None, None, :] - points) * n).sum(-1, keepdim=True)
    return torch.where(facing < 0, -n, n)


def _sample(image: torch.Tensor, uv: torch.Tensor, mode: str) -> torch.Tensor:
    """``image [1, C, H, W]`` at image fractions ``uv [N, 2]`` -> ``[N, C]``."""
    grid = (uv * 2.0 - 1.0).view(1, 1, -1, 2).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)[0, :, 0].T


def project_photos(points: torch.Tensor, camera: torch.Tensor, photos: Sequence[ProjectedPhoto],
                   config: ProjectionConfig, normals: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the photos say about one render's surface points.

    Args:
        points: (H, W, 3) the render's visible surface points (model world).
        camera: (25,) the render's camera. normals: (H*W, 3) unit surface normals facing the camera, or
        None for those of ``points`` (:func:`surface_normals`).
    Returns:
        colour (H*W, 3) the weighted photo colour (image range), weight (H*W,) ``W`` in [0, 1], labels
        (H*W,) int64 class of the best photo with exact labels (-1 where none saw the point), and the
        labels of the best photo of any kind (H*W,) (-1 where none), for the colour's class check.
    """
    h, w, _ = points.shape
    pts = points.reshape(1, h * w, 3).float()
    eye = camera_positions(camera.reshape(1, 25).float())
    if normals is None:
        normals = surface_normals(points[None].float(), eye).reshape(h * w, 3)
    colour = torch.zeros(h * w, 3)
    total = torch.zeros(h * w)
    total_pref = torch.zeros(h * w)
    best_exact = torch.zeros(h * w)
    best_any = torch.zeros(h * w)
    labels_exact = torch.full((h * w,), -1, dtype=torch.long)
    labels_any = torch.full((h * w,), -1, dtype=torch.long)
    for photo in photos:
        cam = photo.camera.reshape(1, 25).float()
        uv, z = project_points(cam, pts)
        uv, z = uv[0], z[0]
        origin = camera_positions(cam)[0]
        cos = (normals * F.normalize(origin[None] - pts[0], dim=-1)).sum(-1)
        weight = ((cos - config.min_cos) / (1.0 - config.min_cos)).clamp(0.0, 1.0)
        inside = (uv > 0.0).all(-1) & (uv < 1.0).all(-1) & (z > 0.0)
        seen_depth = _sample(photo.depth, uv, "bilinear")[:, 0]
        usable = _sample(photo.usable, uv, "bilinear")[:, 0]
        seen = inside & ((z - seen_depth).abs() < config.depth_tolerance) & (usable > 0.999)
        weight = torch.where(seen, weight, torch.zeros_like(weight))
        # among photos, prefer the one that saw the point from nearest the render's own direction
        near = (F.normalize(eye - pts[0], dim=-1) * F.normalize(origin[None] - pts[0], dim=-1)).sum(-1)
        preference = weight * ((0.5 * (1.0 + near)).clamp_min(0.0) ** config.view_preference).clamp_min(1e-6)
        colour += preference[:, None] * _sample(photo.image.float(), uv, "bilinear")
        total += weight
        total_pref += preference
        label = _sample(photo.labels[:, None].float(), uv, "nearest")[:, 0].round().long()
        better = preference > best_any
        labels_any = torch.where(better, label, labels_any)
        best_any = torch.maximum(best_any, preference)
        if photo.exact_labels:
            better = preference > best_exact
            labels_exact = torch.where(better, label, labels_exact)
            best_exact = torch.maximum(best_exact, preference)
    colour = colour / total_pref.clamp_min(1e-12)[:, None]
    return colour, total.clamp(max=1.0), labels_exact, labels_any


def lay_photos(image: torch.Tensor, semantic: torch.Tensor, points: torch.Tensor, camera: torch.Tensor,
               photos: Sequence[ProjectedPhoto], config: ProjectionConfig,
               scope: ProjectionScope, backdrop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One square render with the photos laid over it (module docstring).

    Args:
        image: (1, 3, H, H) image range; semantic: (1, K, H, H) logits; points: (1, H*H, 3) its visible
        surface points; camera: (1, 25). backdrop: (1, 3, H, H) the environment backdrop ``image`` was
        composited over, or None: the photo's colour is then composited over it with the render's matte
        (its background probability), so the head's outline stays as soft as the render's.
    Returns:
        (image, semantic) of the same shapes.
    """
    if not scope.active or not photos:
        return image, semantic
    _, _, h, w = image.shape
    sem = semantic[0].float().reshape(NUM_CLASSES, h * w)
    p_bg = sem.softmax(0)[BACKGROUND_CLASS]
    head = p_bg < 0.5
    fitted = points[0].reshape(h, w, 3)
    # the weights read the fitted surface's normals: it is smooth, the stereo's offsets step
    normals = surface_normals(fitted[None].float(), camera_positions(camera.reshape(1, 25).float()))
    surface = refine_points(fitted, camera[0], head.reshape(h, w), photos, config.stereo)
    colour, weight, labels_exact, labels_any = project_photos(surface, camera[0], photos, config,
                                                              normals.reshape(h * w, 3))
    if scope.labels:
        take = head & (labels_exact >= 0)
        bonus = torch.zeros_like(sem)
        bonus[labels_exact.clamp_min(0), torch.arange(h * w)] = LABEL_LOGIT
        sem = torch.where(take[None], sem + bonus, sem)
    if scope.colour:
        final = sem.argmax(0)
        agree = head & (labels_any >= 0) & (labels_any == final)
        for k in scope.excluded_classes:
            agree &= final != int(k)
        weight = torch.where(agree, weight, torch.zeros_like(weight))
        flat = image[0].float().reshape(3, h * w)
        laid = colour.T
        if backdrop is not None:  # keep the render's matte at the outline
            laid = laid + p_bg[None] * (backdrop[0].float().reshape(3, h * w) - laid)
        flat = flat * (1.0 - weight[None]) + laid * weight[None]
        image = flat.reshape(1, 3, h, w).to(image.dtype)
    return image, sem.reshape(1, NUM_CLASSES, h, w).to(semantic.dtype)


@dataclass(frozen=True, eq=False)
class PhotoProjection:
    """A portrait's photos, ready to lay over any render of its states (:meth:`apply`).

    ``fitted_ws [1, num_ws, w_dim]``: the codes the photos were inverted to (the scope's reference);
    ``num_shape_ws``: the generator's count of shape codes."""

    photos: tuple[ProjectedPhoto, ...]
    fitted_ws: torch.Tensor
    num_shape_ws: int
    config: ProjectionConfig = ProjectionConfig()

    def scope(self, state: Any) -> ProjectionScope:
        return projection_scope(self.fitted_ws, state, self.num_shape_ws)

    def without_stereo(self) -> "PhotoProjection":
        """The same projection through the fitted surface alone (previews: the stereo costs about 65 ms a
        256 px frame with three photos)."""
        return replace(self, config=replace(self.config, stereo=StereoConfig(steps=0)))

    def apply(self, generator: Any, result: Any, c: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``result``: the generator's RenderResult of ``state`` from cameras ``c [B, 25]`` (square output)
        -> ``(image [B, 3, H, H], semantic [B, K, H, H])`` with the photos laid over each item."""
        from ide3d_core.networks.detail import surface_points

        image, semantic = result.image, result.semantic
        scope = self.scope(state)
        if not scope.active or not self.photos:
            return image, semantic
        h = image.shape[-1]
        c = c.reshape(-1, 25).float().cpu()
        far = generator.far_bounds(c)
        points = surface_points(result.depth.float().cpu(), result.opacity.float().cpu(), c, far, h)
        backdrop = getattr(result, "backdrop", None)  # absent from stand-in results
        backdrop = None if backdrop is None else backdrop.float().cpu()
        out_img, out_sem = [], []
        for b in range(image.shape[0]):
            im, se = lay_photos(image[b:b + 1].cpu(), semantic[b:b + 1].cpu(), points[b:b + 1], c[b:b + 1],
                                self.photos, self.config, scope, None if backdrop is None else backdrop[b:b + 1])
            out_img.append(im)
            out_sem.append(se)
        dev = image.device
        return torch.cat(out_img).to(dev), torch.cat(out_sem).to(dev)


def projected_photo(image: torch.Tensor, camera: torch.Tensor, points: torch.Tensor, head: torch.Tensor,
                    mask: torch.Tensor | None, fitted_labels: torch.Tensor,
                    config: ProjectionConfig = ProjectionConfig()) -> ProjectedPhoto:
    """One photo ready to project, from the surface its camera sees.

    Args:
        image: (1, 3, H, H) the photo, image range. camera: (25,) its label.
        points: (1, H*H, 3) the surface point of each of its pixels (model world; anything where ``head`` is 0).
        head: (1, 1, H, H) 1 where that surface is head. mask: (1, H, H) int64 class ids of the photo, or None.
        fitted_labels: (1, H, H) int64 the fitted render's class ids (the colour's class check without a mask).
    """
    h = image.shape[-1]
    if image.shape[-2] != h or points.shape[1] != h * h:
        raise ValueError(f"need a square photo [1, 3, H, H] with H*H points; got {tuple(image.shape)} and "
                         f"{tuple(points.shape)}")
    cam = camera.reshape(1, 25).float()
    depth = project_points(cam, points.float())[1].reshape(1, 1, h, h)  # along the photo's optical axis
    head = head.float()
    if mask is not None:
        head = head * (mask[:, None] != BACKGROUND_CLASS).float()
    return ProjectedPhoto(image=image.float(), labels=(mask if mask is not None else fitted_labels).long(),
                          exact_labels=mask is not None, camera=cam[0], depth=depth,
                          usable=erode(head, config.erode_px))


def prepare_projection(generator: Any, fitted_ws: torch.Tensor,
                       photos: Sequence[tuple[Any, np.ndarray, np.ndarray | None]],
                       config: ProjectionConfig = ProjectionConfig()) -> PhotoProjection:
    """Render the fitted surface from every photo's camera once and keep what :meth:`PhotoProjection.apply`
    needs (:func:`projected_photo`).

    Args:
        generator: the portrait's (tuned) generator.
        fitted_ws: [1, num_ws, w_dim] the codes the photos were inverted to.
        photos: (image (H, H, 3) uint8 RGB or [1, 3, H, H] float in the image range, camera (25,) label,
            mask (H, H) class ids or None) each, as inverted (a photo's camera describes that image).
    """
    from ide3d_core.images import from_uint8_hwc
    from ide3d_core.networks.detail import surface_points

    dev = next(generator.parameters()).device
    ws = fitted_ws.to(dev)
    prepared = []
    with torch.no_grad():
        planes = generator.planes(ws)
        for image, camera, mask in photos:
            if torch.is_tensor(image) and image.is_floating_point():  # [1, 3, H, W] image range already
                img = image.detach().float().cpu().reshape(1, 3, *image.shape[-2:]).clamp(-1.0, 1.0)
            else:
                img = from_uint8_hwc(np.asarray(image)).float().cpu()  # [1, 3, H, W]
            h = img.shape[-1]
            if img.shape[-2] != h:
                raise ValueError(f"photos to project must be square, got {img.shape[-1]}x{img.shape[-2]}")
            cam = torch.as_tensor(np.asarray(camera, np.float32)).reshape(1, 25)
            out = generator.render(planes, cam.to(dev), ws, detail=False)  # semantics and depth only
            sem = out.semantic.float().cpu()
            if sem.shape[-1] != h:
                sem = F.interpolate(sem, size=(h, h), mode="bilinear", align_corners=False)
            points = surface_points(out.depth.float().cpu(), out.opacity.float().cpu(), cam,
                                    generator.far_bounds(cam).cpu(), h)
            head = (sem.softmax(1)[:, BACKGROUND_CLASS:BACKGROUND_CLASS + 1] < 0.5).float()
            labels = None if mask is None else torch.from_numpy(np.asarray(mask, np.int64)).reshape(1, h, h)
            prepared.append(projected_photo(img, cam[0], points, head, labels, sem.argmax(1), config))
    return PhotoProjection(tuple(prepared), fitted_ws.detach().cpu().float(), int(generator.config.num_shape_ws),
                           config)


#: Where a portrait's mask came from (its inversion record's ``mask_source``) when its labels may be laid
#: over renders: a mask the user gave or a face parser's. The photo pipeline's rule masks ("landmarks",
#: "box") are rough shapes drawn from landmarks: such a photo gives colour only.
TRUSTED_MASK_SOURCES = ("given", "user", "parser")


def portrait_photos(portrait: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The photos of a :class:`~ide3d_core.portrait.Portrait` as :func:`prepare_projection` takes them: every
    source view of a multi-view portrait, else its one source image (none for a portrait without one).
    Masks not in :data:`TRUSTED_MASK_SOURCES` are left out (None)."""
    trusted = portrait.history[0].params.get("mask_source", "given") in TRUSTED_MASK_SOURCES
    if portrait.source_views:
        return [(v.image, v.camera, v.mask if trusted else None) for v in portrait.source_views]
    if portrait.source_image is None:
        return []
    return [(portrait.source_image, portrait.camera, portrait.source_mask if trusted else None)]


def portrait_projection(generator: Any, portrait: Any,
                        config: ProjectionConfig = ProjectionConfig()) -> PhotoProjection | None:
    """:func:`prepare_projection` of a portrait's photos against its inversion (history record 0) on
    ``generator`` (``portrait.generator(base)``); None when it has no photos (or ``generator`` is not an
    IDE-3D generator)."""
    photos = [p for p in portrait_photos(portrait) if _projectable(*p)]
    if not photos or not hasattr(generator, "far_bounds"):  # no photo, or a stand-in generator
        return None
    return prepare_projection(generator, portrait.history[0].state.ws, photos, config)


def _projectable(image: Any, camera: Any, mask: Any) -> bool:
    """A stored photo :func:`prepare_projection` can take: square (H, H, 3), a (25,) camera, a mask of its
    size or none. Documents only hold such photos; anything else renders without it rather than failing."""
    shape = np.shape(image)
    return (len(shape) == 3 and shape[0] == shape[1] and shape[0] >= 8 and shape[2] == 3
            and np.size(camera) == 25 and (mask is None or np.shape(mask) == shape[:2]))
