# SPDX-License-Identifier: GPL-3.0-or-later
"""The IDE-3D generator: mapping, tri-plane synthesis, dual decoders, volume rendering, super-resolution.

Public API (others code against it; see docs/generator.md)::

    G = Generator(cfg)                        # plain nn.Module, deterministic initialisation (seed 0)
    ws = G.mapping(z, c, truncation_psi, truncation_cutoff)      # [B, num_ws, w_dim]
    ws = G.codes_from_seeds([0, 1], truncation_psi=0.7)          # canonical-camera conditioning
    planes = G.planes(ws)                     # TriPlanes
    out = G.render(planes, c, ws)             # RenderResult
    f = G.query(planes, points)               # FieldSample (camera independent)
    out = G(ws, c)                            # == G.render(G.planes(ws), c, ws)

Semantics are composited as **probabilities** (softmax of the per-point logits) and returned as
log-probabilities, ``semantic_raw = log(sum_i w_i softmax(l_i) + (1 - opacity) e_background + 1e-6)``.
*Decision (reference: unknown):* the pixel's class distribution is then the mixture of its points'
class distributions weighted by where the ray ends, so a point with extreme logits but little weight
cannot flip the pixel label (linear compositing of logits is not invariant to logit scale), rays that
hit nothing are background, and ``softmax(semantic_raw)`` sums to one. Consumers take argmax or
softmax as for any logits.

Ray bounds follow the camera. *Decision:* ``ray_near``/``ray_far`` are the interval for a camera at
the canonical orbit radius (2.7, as in EG3D, whose bounds are fixed); a camera at distance ``d`` from
the model-world origin samples ``[ray_near + d - 2.7, ray_far + d - 2.7]`` (near clamped to
``MIN_NEAR``), i.e. the same stretch of space around the head with the same sample spacing. Free
cameras (a Blender camera two metres away, a close-up) then see the head; fixed bounds render nothing
from beyond ``ray_far``. Densities outside the tri-plane box (``|x|, |y|, |z| > box_size / 2``) are
zero in renders: there two of the three planes read zero padding and the third smears the head's
cross-section along the missing axis (a ghost column above and below the head from far cameras).

Inference is CUDA-graph capturable and bf16-autocast safe: no host synchronisation, no data-dependent
shapes or Python branches on tensor values, random draws only from an explicit ``generator``
(``generator=None`` renders deterministically), compositing in float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ide3d_core import triplane
from ide3d_core.cameras import CANONICAL_RADIUS, canonical_camera, rays_from_labels
from ide3d_core.networks.background import EnvironmentBackground, composite_background
from ide3d_core.networks.config import CONFIGS, GeneratorConfig
from ide3d_core.networks.decoders import SemanticDecoder, TextureDecoder
from ide3d_core.networks.detail import SurfaceDetail
from ide3d_core.networks.layers import init_parameters
from ide3d_core.networks.mapping import MappingNetwork
from ide3d_core.networks.prior import CodePrior
from ide3d_core.networks.superres import SuperResolution
from ide3d_core.networks.synthesis import SynthesisNetwork
from ide3d_core.rendering import render_rays

#: Default truncation of a generator with a mapping network (StyleGAN's convention).
GAN_TRUNCATION = 0.7
#: Default truncation of a generator with a fitted code prior (none).
PRIOR_TRUNCATION = 1.0

#: Added to composited class probabilities before the log (floor of the semantic log-probabilities).
SEMANTIC_LOG_EPS = 1e-6
#: Smallest near bound (model units) for cameras inside the ray interval (close-ups).
MIN_NEAR = 1e-2
BACKGROUND_CLASS = 0


@dataclass(frozen=True)
class TriPlanes:
    """Cached tri-planes of a batch of codes; planes ``plane_axes`` (xy, yz, xz) of ``[-0.5, 0.5]^3``."""

    #: [B, 3, Cs, P, P] semantic/geometry planes (a function of w_s only).
    semantic: torch.Tensor
    #: [B, 3, Ct, P, P] texture planes.
    texture: torch.Tensor


@dataclass(frozen=True)
class FieldSample:
    """The field at a batch of points (camera independent)."""

    #: [B, N, 1] activated density (>= 0, per model unit).
    sigma: torch.Tensor
    #: [B, N, 19] semantic logits.
    semantic: torch.Tensor
    #: [B, N, F] colour features in (-1, 1); the first 3 are RGB.
    features: torch.Tensor


@dataclass(frozen=True)
class RenderResult:
    """Output of :meth:`Generator.render` (H = img_resolution, h = neural rendering resolution)."""

    #: [B, 3, H, W] final image, nominal range [-1, 1].
    image: torch.Tensor
    #: [B, 3, h, w] low-resolution RGB (first 3 composited feature channels).
    image_raw: torch.Tensor
    #: [B, 19, H, W] semantic logits after super-resolution.
    semantic: torch.Tensor
    #: [B, 19, h, w] composited semantic log-probabilities (see module docstring).
    semantic_raw: torch.Tensor
    #: [B, 1, h, w] expected distance along the ray (model units; background at ``ray_far``).
    depth: torch.Tensor
    #: [B, 1, h, w] accumulated opacity in [0, 1].
    opacity: torch.Tensor
    #: [B, F, h, w] composited colour features.
    features_raw: torch.Tensor
    #: [B, 3, H, W] the environment backdrop ``image`` was composited over (its matte: the background
    #: class's probability in ``semantic`` before the label offsets), or None without an environment background.
    backdrop: torch.Tensor | None = None


TextureSwap = tuple[torch.Tensor, tuple[int, ...]]


class Generator(nn.Module):
    """The 3D semantic-aware generator (see the module docstring). ``seed`` fixes the initial weights."""

    def __init__(self, config: GeneratorConfig | str = "default", seed: int = 0) -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"unknown generator config {config!r}; known: {', '.join(CONFIGS)}")
            config = CONFIGS[config]
        cfg = self.config = config
        self.z_dim, self.w_dim, self.c_dim = cfg.z_dim, cfg.w_dim, cfg.c_dim
        self.num_ws, self.num_shape_ws = cfg.num_ws, cfg.num_shape_ws
        self.num_texture_ws = cfg.num_texture_ws
        self.img_resolution, self.neural_resolution = cfg.img_resolution, cfg.neural_resolution
        if cfg.code_prior_dim:  # an auto-decoded model: a fitted prior draws the codes
            self.mapping = CodePrior(cfg.z_dim, cfg.w_dim, cfg.num_shape_ws, cfg.num_ws, cfg.code_prior_dim,
                                     cfg.code_prior_components)
        else:
            self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws, cfg.mapping_layers,
                                          cfg.mapping_lr_mult)
        self.synthesis = SynthesisNetwork(cfg)
        self.semantic_decoder = SemanticDecoder(cfg.plane_feature_dim(cfg.semantic_plane_channels),
                                                cfg.decoder_hidden, cfg.num_classes, cfg.density_bias)
        self.texture_decoder = TextureDecoder(cfg.plane_feature_dim(cfg.texture_plane_channels),
                                              cfg.decoder_hidden, cfg.feature_channels)
        self.superresolution = SuperResolution(cfg)
        #: the environment background (None: the super-resolution paints the backdrop)
        self.background = EnvironmentBackground(cfg.w_dim, cfg.background_hidden) if cfg.background_hidden else None
        #: the surface detail over the super-resolved head (None: none, the paper)
        self.detail = SurfaceDetail(cfg.num_classes, cfg.box_size, cfg.detail_levels, cfg.detail_min_res,
                                    cfg.detail_max_res, cfg.detail_log2_table, cfg.detail_features,
                                    cfg.detail_hidden, BACKGROUND_CLASS) if cfg.detail_levels else None
        #: [19] per-class offsets added to the returned semantic logits after everything the image reads from
        #: them (the detail's matte, the backdrop's), so they move label maps only; zero as trained, a
        #: portrait's inversion solves its own at its views (:mod:`ide3d_core.inversion.label_offsets`)
        self.register_buffer("label_offsets", torch.zeros(cfg.num_classes))
        init_parameters(self, torch.Generator().manual_seed(seed))

    def optional_state(self) -> dict[str, torch.Tensor]:
        """``label_offsets`` is newer than the first saved models: files without it load with zeros
        (:func:`~ide3d_core.weights_io.optional_state`)."""
        return {"label_offsets": torch.zeros(self.config.num_classes)}

    # -- codes ---------------------------------------------------------------------------------
    def canonical_labels(self, batch: int) -> torch.Tensor:
        """[batch, 25] labels of the canonical front camera (the mapping's default conditioning)."""
        label = torch.from_numpy(canonical_camera().label()).to(self.mapping.w_avg.device)
        return label.unsqueeze(0).expand(batch, -1).contiguous()

    def latents_from_seeds(self, seeds) -> torch.Tensor:
        """[len(seeds), z_dim] latents; z of seed s is ``randn(z_dim)`` from ``Generator().manual_seed(s)``
        (drawn on the CPU, so the same on every device), on the model's device."""
        if len(seeds) == 0:
            raise ValueError("no seeds given")
        return torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.mapping.w_avg.device)

    def codes_from_seeds(self, seeds: list[int], truncation_psi: float = 1.0,
                         c: torch.Tensor | None = None) -> torch.Tensor:
        """[len(seeds), num_ws, w_dim] codes; z of seed s is ``randn(z_dim)`` from ``Generator().manual_seed(s)``
        (CPU, so the same on every device)."""
        z = self.latents_from_seeds(seeds)
        if c is None:
            c = self.canonical_labels(len(seeds))
        return self.mapping(z, c, truncation_psi=truncation_psi)

    @property
    def default_truncation(self) -> float:
        """The truncation used when none is asked for (``ide3d generate``, ``mesh --seed``, restyle
        seeds, the service): :data:`PRIOR_TRUNCATION` (1, none) for a code prior, which is fitted to
        the learned codes of the training heads so that its untruncated draws match their distribution
        (measured: SWD against procedural heads 194-206 at 1 vs 201-213 at 0.7, diversity 0.80 vs 0.59
        of theirs, the same sharpness; ``scripts/eval_model.py --truncation``), and StyleGAN's
        :data:`GAN_TRUNCATION` (0.7) for a mapping network, whose tails are poor."""
        return PRIOR_TRUNCATION if self.config.code_prior_dim else GAN_TRUNCATION

    def average_codes(self, batch: int = 1) -> torch.Tensor:
        """[batch, num_ws, w_dim] average codes (per group for a code prior): the truncation centre and
        the start of inversion without an encoder."""
        return self.mapping.average_ws(batch)

    def split_codes(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_s [B, num_shape_ws, w_dim], w_t [B, num_texture_ws, w_dim])``."""
        return ws[:, :self.num_shape_ws], ws[:, self.num_shape_ws:]

    def background_code(self, ws: torch.Tensor) -> torch.Tensor:
        """[B, w_dim] code of the environment background: the mean of the texture codes (all equal for an
        auto-decoded code)."""
        return ws[:, self.num_shape_ws:].mean(dim=1)

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")

    # -- tri-planes and field ------------------------------------------------------------------
    def planes(self, ws: torch.Tensor) -> TriPlanes:
        """Tri-planes of the codes (the expensive 2D part; cache them for camera changes)."""
        self._check_ws(ws)
        semantic, texture = self.synthesis(ws)
        return TriPlanes(semantic=semantic, texture=texture)

    def _coords(self, points: torch.Tensor) -> torch.Tensor:
        """[B, N, 3] points -> [B, 3, N, 2] plane coordinates (shared by both plane sets)."""
        return triplane.project_onto_planes(points, self.config.plane_axes, self.config.box_size)

    def _sample(self, planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return triplane.sample_planes(planes, coords, self.config.aggregation)

    def density(self, planes: TriPlanes, points: torch.Tensor) -> torch.Tensor:
        """Activated density ``[B, N, 1]`` at ``points [B, N, 3]`` (semantic planes only: the cheap query
        for mesh extraction and density regularisation); equal to ``query(...).sigma``."""
        return self.semantic_decoder(self._sample(planes.semantic, self._coords(points)))[0]

    def query(self, planes: TriPlanes, points: torch.Tensor,
              texture_swap: TextureSwap | None = None) -> FieldSample:
        """The field at ``points [B, N, 3]`` (model world). With ``texture_swap = (texture planes
        [B, 3, Ct, P, P], class ids)``, points whose semantic argmax is one of the ids take their colour
        features from the other texture planes; all other points keep theirs exactly."""
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != planes.semantic.shape[0]:
            raise ValueError(f"points must be [B={planes.semantic.shape[0]}, N, 3], "
                             f"got {tuple(points.shape)}")
        coords = self._coords(points)
        sigma, logits = self.semantic_decoder(self._sample(planes.semantic, coords))
        features = self.texture_decoder(self._sample(planes.texture, coords))
        if texture_swap is not None:
            other, class_ids = texture_swap
            if other.shape != planes.texture.shape:
                raise ValueError(f"swap texture planes must be {tuple(planes.texture.shape)}, "
                                 f"got {tuple(other.shape)}")
            bad = [i for i in class_ids if not 0 <= int(i) < self.config.num_classes]
            if not class_ids or bad:
                raise ValueError(f"texture_swap needs class ids in 0..{self.config.num_classes - 1}, "
                                 f"got {tuple(class_ids)}")
            label = logits.argmax(dim=-1, keepdim=True)
            mask = torch.zeros_like(label, dtype=torch.bool)
            for i in sorted(set(int(i) for i in class_ids)):
                mask = mask | (label == i)
            other_features = self.texture_decoder(self._sample(other, coords))
            features = torch.where(mask, other_features.to(features.dtype), features)
        return FieldSample(sigma=sigma, semantic=logits, features=features)

    def mirror_planes(self, planes: TriPlanes) -> TriPlanes:
        """Tri-planes of the field mirrored through x = 0 (the semantic classes are not swapped)."""
        axes = self.config.plane_axes
        return TriPlanes(triplane.mirror_planes(planes.semantic, axes),
                         triplane.mirror_planes(planes.texture, axes))

    # -- rendering -----------------------------------------------------------------------------
    def render(self, planes: TriPlanes, c: torch.Tensor, ws: torch.Tensor,
               neural_resolution: int | None = None, generator: torch.Generator | None = None,
               texture_swap: TextureSwap | None = None,
               occupied: Callable[[torch.Tensor], torch.Tensor] | None = None,
               backdrop_camera_grad: bool = False, detail: bool = True) -> RenderResult:
        """Render cached tri-planes from cameras ``c [B, 25]``; ``ws`` supplies the super-resolution codes.

        ``generator`` jitters the ray samples (training); None renders deterministically.
        ``occupied``: ``points [B, M, 3] -> bool [B, M]``, False where the field may be taken as empty
        (for example an occupancy grid's lookup, :func:`ide3d_core.fast_render.occupancy_grid`); only the
        True points are evaluated (and get gradients), the others get no density. None evaluates all.
        ``backdrop_camera_grad``: let the environment background's pixels pull on ``c``
        (:meth:`EnvironmentBackground.render`). ``detail``: lay the surface detail over the head (models
        with one; False renders the image without it, as inversion fits, :class:`InversionPolicy`)."""
        cfg = self.config
        self._check_ws(ws)
        b = planes.semantic.shape[0]
        if c.ndim != 2 or c.shape != (b, cfg.c_dim) or ws.shape[0] != b:
            raise ValueError(f"c must be [B={b}, 25] and ws [B={b}, ...], got {tuple(c.shape)}, "
                             f"{tuple(ws.shape)}")
        h = cfg.neural_resolution if neural_resolution is None else int(neural_resolution)
        features, probs, opacity, depth = self.render_neural(planes, c, h, generator, texture_swap, occupied)
        return self.finish_render(features, probs, opacity, depth, ws, h, c=c,
                                  backdrop_camera_grad=backdrop_camera_grad, detail=detail)

    def render_neural(self, planes: TriPlanes, c: torch.Tensor, h: int,
                      generator: torch.Generator | None = None, texture_swap: TextureSwap | None = None,
                      occupied: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The volume-rendering pass of :meth:`render` alone, at ``h`` x ``h`` rays of cameras ``c [B, 25]``
        (no super-resolution, no backdrop): ``(features [B, h*h, F], composited class probabilities
        [B, h*h, 19] (before the background class fills the transparency), opacity [B, h*h, 1], depth
        [B, h*h, 1])``, rays in row-major pixel order. The other arguments are :meth:`render`'s."""
        cfg = self.config
        b = planes.semantic.shape[0]
        origins, dirs, near, far = self.camera_rays(c, h)
        half = 0.5 * cfg.box_size

        def field_of(pl: TriPlanes, swap: TextureSwap | None):
            def field(points: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
                f = self.query(pl, points, swap)
                inside = (points.abs() <= half).all(dim=-1, keepdim=True)
                return f.sigma * inside.to(f.sigma.dtype), (f.features, f.semantic.float().softmax(dim=-1))
            return field

        field = field_of(planes, texture_swap)
        if occupied is not None:
            def item_field(i: int):
                swap = None if texture_swap is None else (texture_swap[0][i:i + 1], texture_swap[1])
                return field_of(TriPlanes(planes.semantic[i:i + 1], planes.texture[i:i + 1]), swap)
            field = _only_where(item_field, occupied, b, cfg.num_classes)
        rays = render_rays(field, origins, dirs, near, far, cfg.coarse_samples, cfg.fine_samples, generator)
        comp = rays.composite
        features, probs = comp.values
        return features, probs, comp.opacity, comp.depth

    def camera_rays(self, c: torch.Tensor, h: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rays of an ``h`` x ``h`` neural render from cameras ``c [B, 25]``: ``(origins [B, h*h, 3],
        unit directions [B, h*h, 3], near [B, 1, 1], far [B, 1, 1])`` (bounds follow the camera's
        distance, see the module docstring)."""
        if h < 4:
            raise ValueError(f"neural_resolution must be >= 4, got {h}")
        cfg = self.config
        origins, dirs = rays_from_labels(c.to(torch.float32), h, h)
        shift = range_shift(origins)
        return origins, dirs, (cfg.ray_near + shift).clamp_min(MIN_NEAR), cfg.ray_far + shift

    def far_bounds(self, c: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 1]`` the far bound of the rays of cameras ``c [B, 25]`` (as :meth:`camera_rays`; the
        composited depth puts the background there)."""
        return self.config.ray_far + range_shift(rays_from_labels(c.detach().float(), 1, 1)[0])

    def finish_render(self, features: torch.Tensor, probs: torch.Tensor, opacity: torch.Tensor,
                      depth: torch.Tensor, ws: torch.Tensor, h: int, superresolution=None,
                      c: torch.Tensor | None = None, backdrop_camera_grad: bool = False,
                      detail: bool = True) -> RenderResult:
        """Composited rays -> :class:`RenderResult`: background class where rays end in nothing, the
        semantic log-probabilities, super-resolution, the environment background behind the head.
        ``features [B, h*h, F]``, ``probs [B, h*h, 19]`` (composited class probabilities),
        ``opacity``/``depth`` ``[B, h*h, 1]`` (float32). ``superresolution``: a callable with
        :attr:`superresolution`'s signature to use instead (the fast renderer's folded twin,
        :func:`ide3d_core.fast_networks.superresolve`). ``c [B, 25]``: the cameras, needed by a model with
        an environment background; ``backdrop_camera_grad`` and ``detail`` as in :meth:`render`."""
        cfg = self.config
        b = features.shape[0]

        def to_image(x: torch.Tensor) -> torch.Tensor:  # [B, h*w, C] -> [B, C, h, w]
            return x.permute(0, 2, 1).reshape(b, x.shape[-1], h, h)

        features_raw = to_image(features)
        semantic_raw = to_image(semantic_log_probs(probs, opacity))
        w_sr = ws[:, cfg.num_shape_ws + cfg.num_head_ws:]
        image, semantic = (superresolution or self.superresolution)(features_raw, semantic_raw, w_sr)
        if self.detail is not None and detail:
            if c is None:
                raise ValueError("this model has surface detail: finish_render needs the cameras c")
            image = self.detail(image, semantic, to_image(depth), to_image(opacity), c, self.far_bounds(c))
        backdrop = None
        if self.background is not None:
            if c is None:
                raise ValueError("this model has an environment background: finish_render needs the cameras c")
            backdrop = self.background.render(c, self.background_code(ws), image.shape[-1], backdrop_camera_grad)
            image = composite_background(image, semantic, backdrop, BACKGROUND_CLASS)
        semantic = semantic + self.label_offsets.view(1, -1, 1, 1).to(semantic.dtype)
        return RenderResult(image=image, image_raw=features_raw[:, :3], semantic=semantic,
                            semantic_raw=semantic_raw, depth=to_image(depth),
                            opacity=to_image(opacity), features_raw=features_raw, backdrop=backdrop)

    def forward(self, ws: torch.Tensor, c: torch.Tensor, neural_resolution: int | None = None,
                generator: torch.Generator | None = None) -> RenderResult:
        return self.render(self.planes(ws), c, ws, neural_resolution=neural_resolution, generator=generator)


def semantic_log_probs(probs: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Composited class probabilities ``probs [B, N, 19]`` and ``opacity [B, N, 1]`` of rays -> their
    semantic log-probabilities ``[B, N, 19]``: the background class fills the transparency (module
    docstring), then ``log(p + SEMANTIC_LOG_EPS)``."""
    background = torch.zeros_like(probs)
    background[..., BACKGROUND_CLASS] = 1.0
    return torch.log(probs + (1.0 - opacity) * background + SEMANTIC_LOG_EPS)


def range_shift(origins: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1]`` how far each camera (``origins [B, N, 3]``, one per ray) is beyond the canonical
    radius: the ray interval ``[ray_near, ray_far]`` moves by it (see the module docstring)."""
    return origins[:, :1].norm(dim=-1, keepdim=True) - CANONICAL_RADIUS


def _only_where(item_field, occupied: Callable[[torch.Tensor], torch.Tensor], batch: int, num_classes: int):
    """A field (points ``[B, M, 3]`` -> (sigma ``[B, M, 1]``, (features ``[B, M, F]``, class probabilities
    ``[B, M, K]``))) that evaluates ``item_field(i)`` (the field of batch item ``i``, on ``[1, M', 3]``)
    only where ``occupied(points)`` is True; elsewhere sigma and features are 0 and the probabilities are
    the background class's (weightless without density). Differentiable through the evaluated points."""

    def sparse(points: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        keep = occupied(points)
        m = points.shape[1]
        sig, feat, prob = [], [], []
        for i in range(batch):
            idx = keep[i].nonzero()[:, 0]
            s_i, (f_i, p_i) = item_field(i)(points[i:i + 1, idx])
            sig.append(s_i.new_zeros(m, s_i.shape[-1]).index_put((idx,), s_i[0]))
            feat.append(f_i.new_zeros(m, f_i.shape[-1]).index_put((idx,), f_i[0]))
            background = p_i.new_zeros(m, num_classes)
            background[:, BACKGROUND_CLASS] = 1.0
            prob.append(background.index_put((idx,), p_i[0]))
        return torch.stack(sig), (torch.stack(feat), torch.stack(prob))

    return sparse
