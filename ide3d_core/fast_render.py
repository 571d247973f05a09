# SPDX-License-Identifier: GPL-3.0-or-later
"""Fast rendering of cached tri-planes: an occupancy grid, empty-space skipping, early ray termination.

The reference path (:meth:`ide3d_core.networks.generator.Generator.render`) evaluates the field at every
one of its ``coarse + fine`` samples on every ray, most of them in the empty part of the tri-plane box or
behind the opaque skin. This path computes the same quadrature (the same stratified coarse depths, the
same importance samples from the coarse weights, the same compositing and super-resolution), but asks
the field only where a sample can matter:

1. **Occupancy grid, once per set of planes** (:func:`occupancy_grid`). The box is cut into ``R^3`` cells
   (``R = plane_resolution / 4`` by default). For each cell, every semantic-plane feature a point in it
   can read lies between the minimum and maximum of the texels its bilinear taps can touch (a max-pool of
   each plane, zero padding included), so the aggregated feature lies in a box; interval arithmetic
   through the semantic decoder (:meth:`SemanticDecoder.density_bounds`) bounds the density of *every*
   point of the cell. A cell is empty when that bound is at most ``empty_sigma``: whatever the weights
   (a trained or a re-trained model), skipping it removes at most ``empty_sigma`` times the ray's length
   in the box of optical depth. Cost: one pooled pass over the planes and ``R^3`` decoder evaluations
   (about 10 ms on one core for the ``default`` config).
2. **Coarse pass, depth-ordered chunks.** Coarse samples in empty cells get density 0 unevaluated; the
   others are evaluated chunk by chunk along the ray, and a ray whose optical depth already exceeds
   ``stop_optical_depth`` (transmittance below ``exp(-10)``) stops asking.
3. **Fine pass.** Importance samples are drawn from the coarse weights exactly as in the reference and
   evaluated where occupied and not behind the coarse stop. Then the merged samples are composited with
   unevaluated densities taken as 0; this *over*-estimates every transmittance, so any unevaluated
   occupied sample whose transmittance is still above ``min_transmittance`` is evaluated and the
   composite redone, until none is left (usually none or one round).
4. **Values only where they count.** Colour features (texture planes + texture decoder) and class
   probabilities are computed only for samples whose final weight exceeds ``min_weight``; the dropped
   weight mass per ray is at most ``samples * min_weight``.
5. The composited features go through the same :meth:`Generator.finish_render` (background class,
   log-probabilities) as the reference; the super-resolution is its twin with the codes folded into the
   weights (:func:`ide3d_core.fast_networks.superresolve`), in bfloat16 where the CPU has native bf16
   convolutions (``network_dtype="auto"``; about 75 dB against float32 on the bundled model).

Differences from the reference are bounded by the three thresholds (defaults: optical depth
``1e-3 * sqrt(3)`` from skipped space, ``1e-4`` transmittance, ``64e-5`` weight per ray); the tests
check >= 40 dB image PSNR and >= 99.5 % identical label pixels on the bundled model over many cameras,
Blender cameras with shift and odd aspects included.

The march of steps 2-4 runs in :mod:`ide3d_core.fast_march`: one fused C call per batch item
(:func:`ops.ray_march.ray_march`) where the kernel is built, else PyTorch ops over all rays
(``FastRenderSettings.march``).

Data-dependent shapes and host synchronisation make this an inference path for the CPU (and eager
CUDA); the reference path stays the one for training and CUDA graphs. Without gradients only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ide3d_core import triplane
from ide3d_core.fast_march import MARCHES, _Planes, decoder_mlp, march
from ops.denormals import flush_denormals
from ops.triplane import IMPLS, kernel_available
from ops.triplane_decode import MLP, decode_semantic

#: Default density bound below which a cell is empty (per model unit).
EMPTY_SIGMA = 1e-3
#: A ray stops asking for coarse samples past this optical depth (transmittance exp(-10)).
STOP_OPTICAL_DEPTH = 10.0
#: Unevaluated occupied samples whose (over-estimated) transmittance exceeds this are evaluated.
MIN_TRANSMITTANCE = 1e-4
#: Samples whose compositing weight is at most this get no colour or class values.
MIN_WEIGHT = 1e-5
#: Coarse samples per depth-ordered chunk of the coarse pass.
COARSE_CHUNK = 8
#: dtypes of the super-resolution twin ("auto": bfloat16 on CPUs with native bf16, else float32).
NETWORK_DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class FastRenderSettings:
    """Thresholds of the fast path (see the module docstring for what each one bounds)."""

    empty_sigma: float = EMPTY_SIGMA
    stop_optical_depth: float = STOP_OPTICAL_DEPTH
    min_transmittance: float = MIN_TRANSMITTANCE
    min_weight: float = MIN_WEIGHT
    coarse_chunk: int = COARSE_CHUNK
    #: Tri-plane sampling kernel (:func:`ops.triplane.triplane_sample`): "auto", "torch" or "c".
    impl: str = "auto"
    #: dtype of the super-resolution convolutions, one of :data:`NETWORK_DTYPES`.
    network_dtype: str = "auto"
    #: With the C kernels (``impl`` "c", or "auto" where built): sample and decode in one fused pass
    #: (:func:`ops.triplane_decode.triplane_decode`) instead of sampling kernel + decoder module.
    fused: bool = True
    #: Flush denormals to zero in the calling thread during the render (:mod:`ops.denormals`).
    flush_denormals: bool = True
    #: The march of the rays (:mod:`ide3d_core.fast_march`): "torch" (PyTorch ops over all rays), "c"
    #: (:func:`ops.ray_march.ray_march`, one fused call per item) or "auto" ("c" where it is built and
    #: applies, else "torch").
    march: str = "auto"

    def __post_init__(self) -> None:
        if self.impl not in IMPLS:
            raise ValueError(f"fast render impl must be one of {IMPLS}, got {self.impl!r}")
        if self.network_dtype not in NETWORK_DTYPES:
            raise ValueError(f"fast render network_dtype must be one of {NETWORK_DTYPES}, got {self.network_dtype!r}")
        if self.march not in MARCHES:
            raise ValueError(f"fast render march must be one of {MARCHES}, got {self.march!r}")
        if not (self.empty_sigma >= 0 and self.stop_optical_depth > 0 and 0 <= self.min_transmittance < 1
                and 0 <= self.min_weight < 1 and self.coarse_chunk >= 1):
            raise ValueError(f"invalid fast render settings: {self}")


@dataclass(frozen=True)
class OccupancyGrid:
    """Which cells of the tri-plane box can hold density.

    Cell ``(i, j, k)`` of ``occupied [B, R, R, R]`` (axes x, y, z) is the cube
    ``[-box/2 + i * box/R, -box/2 + (i + 1) * box/R] x ...``; ``sigma_max [B, R, R, R]`` is the bound of
    the density of every point in it (float32, per model unit).
    """

    occupied: torch.Tensor
    sigma_max: torch.Tensor
    box_size: float

    @property
    def resolution(self) -> int:
        return int(self.occupied.shape[-1])

    def fraction(self) -> float:
        """Fraction of the cells that are occupied (all batch items)."""
        return float(self.occupied.float().mean())

    def lookup(self, points: torch.Tensor, batch: int) -> torch.Tensor:
        """Occupancy ``[...]`` (bool) of model-world ``points [..., 3]`` for batch item ``batch``;
        points outside the box are empty (the renderer gives them no density)."""
        r, half = self.resolution, 0.5 * self.box_size
        inside = (points.abs() <= half).all(dim=-1)
        idx = ((points + half) * (r / self.box_size)).floor().long().clamp_(0, r - 1)
        flat = (idx[..., 0] * r + idx[..., 1]) * r + idx[..., 2]
        return self.occupied[batch].reshape(-1)[flat] & inside


def _plane_at_vertices(planes: torch.Tensor, cells: int) -> torch.Tensor:
    """``planes [B, 3, C, P, P]`` bilinearly sampled (as :func:`triplane.sample_planes` does) at the
    ``cells + 1`` grid vertices along each axis -> ``[B, 3, C, V, V]`` (V = cells + 1)."""
    b, n, c, p, _ = planes.shape
    v = torch.linspace(-1.0, 1.0, cells + 1, device=planes.device)
    gy, gx = torch.meshgrid(v, v, indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(b * n, cells + 1, cells + 1, 2)
    out = F.grid_sample(planes.reshape(b * n, c, p, p).float(), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.reshape(b, n, c, cells + 1, cells + 1)


def _to_cells(plane: torch.Tensor, axes: tuple[int, int]) -> torch.Tensor:
    """``[B, C, V(height axis), V(width axis)]`` of a plane seeing world axes ``(width, height)`` ->
    ``[B, C, Vx|1, Vy|1, Vz|1]`` broadcastable over the vertices (x, y, z)."""
    a, h = axes
    t = plane if h < a else plane.transpose(-1, -2)  # dims in increasing world-axis order
    b, c, v = t.shape[0], t.shape[1], t.shape[-1]
    return t.reshape(b, c, *[v if d in (a, h) else 1 for d in range(3)])


@torch.no_grad()
def occupancy_grid(generator, planes, resolution: int | None = None, empty_sigma: float = EMPTY_SIGMA,
                   dilation: int = 1, fused: bool = True) -> OccupancyGrid:
    """The occupancy grid of cached tri-planes (see the module docstring).

    The density is sampled at the ``(R + 1)^3`` cell corners (the plane features of a regular grid
    are three ``(R + 1)^2`` samplings, added by broadcasting); a cell is occupied when one of its
    corners exceeds ``empty_sigma``, and the occupied set grows by ``dilation`` cells in every
    direction.

    Args:
        generator: the :class:`~ide3d_core.networks.generator.Generator` the planes belong to.
        planes: its ``TriPlanes`` (only the semantic planes are read).
        resolution: cells per axis (default ``plane_resolution / 4``, at least 4).
        empty_sigma: density (per model unit) at or below which a corner counts as empty.
        dilation: cells added around the occupied set.
        fused: the vertex densities through the fused sample + decode kernel where it is built
            (:mod:`ops.triplane_decode`; else, or with False, the decoder module on broadcast features).
    """
    cfg = generator.config
    sem = planes.semantic
    r = max(4, sem.shape[-1] // 4) if resolution is None else int(resolution)
    if r < 1 or dilation < 0:
        raise ValueError(f"occupancy resolution must be >= 1 and dilation >= 0, got {r}, {dilation}")
    mlp = decoder_mlp(generator.semantic_decoder) if fused and kernel_available(sem) else None
    if mlp is not None:
        sigma = _vertex_density_fused(generator, sem, r, mlp)
    else:
        sigma = _vertex_density(generator, sem, r)
    sigma_max = F.max_pool3d(sigma, kernel_size=2, stride=1)  # [B, 1, R, R, R]: max over the corners
    occupied = sigma_max > empty_sigma
    if dilation:
        occupied = F.max_pool3d(occupied.float(), 2 * dilation + 1, stride=1, padding=dilation) > 0
    return OccupancyGrid(occupied=occupied[:, 0], sigma_max=sigma_max[:, 0], box_size=cfg.box_size)


def _vertex_density_fused(generator, sem: torch.Tensor, r: int, mlp: MLP) -> torch.Tensor:
    """The density ``[B, 1, V, V, V]`` at the ``V = r + 1`` grid vertices per axis (x, y, z) through the
    fused kernel: the vertices are points like any other (same features as :func:`_vertex_density`'s
    broadcast sums, to float rounding)."""
    cfg = generator.config
    v = (torch.linspace(-1.0, 1.0, r + 1) * (0.5 * cfg.box_size)).to(sem.device)
    pts = torch.stack(torch.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)  # x slowest
    axes = tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes)
    out = [decode_semantic(sem[i], pts, axes, cfg.box_size, cfg.aggregation, mlp.rows(1),
                           float(generator.semantic_decoder.density_bias), impl="c")[0]
           for i in range(sem.shape[0])]
    return torch.stack(out).reshape(sem.shape[0], 1, r + 1, r + 1, r + 1)


def _vertex_density(generator, sem: torch.Tensor, r: int) -> torch.Tensor:
    """The density ``[B, 1, V, V, V]`` at the grid vertices: three ``V^2`` plane samplings added by
    broadcasting, then the semantic decoder module."""
    cfg = generator.config
    at = _plane_at_vertices(sem, r)
    b, n, c = sem.shape[:3]
    v = r + 1
    axes = [triplane.PLANE_AXES[name] for name in cfg.plane_axes]
    per_plane = [_to_cells(at[:, i], axes[i]) for i in range(n)]
    if cfg.aggregation == "concat":
        feats = torch.cat([p.expand(b, c, v, v, v) for p in per_plane], 1)
    else:
        feats = per_plane[0] + per_plane[1] + per_plane[2]
        if cfg.aggregation == "mean":
            feats = feats / n
    feats = feats.reshape(b, -1, v ** 3).transpose(1, 2)  # [B, V^3, F]
    return generator.semantic_decoder(feats)[0].reshape(b, 1, v, v, v).float()


def bf16_is_native(device: torch.device | str) -> bool:
    """True where bfloat16 arithmetic runs natively: CPUs with AVX-512 BF16 or AMX, CUDA devices that
    support it. Elsewhere (an AVX2-only CPU such as AMD Zen 3, most laptops) oneDNN falls back to slow
    reference kernels: measured on a Zen 3 core, an auto-decoder step took 94 s under bf16 autocast
    against about 2 s in float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, probe, None) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def network_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype ``name`` (one of :data:`NETWORK_DTYPES`) stands for on ``device``: "auto" is bfloat16 on
    CPUs with native bf16 instructions (AVX-512 BF16 or AMX; elsewhere oneDNN would emulate it, slower
    than float32) and float32 everywhere else."""
    if name not in NETWORK_DTYPES:
        raise ValueError(f"network dtype must be one of {NETWORK_DTYPES}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cpu" and bf16_is_native(device) else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


@dataclass(frozen=True)
class FastRenderStats:
    """What the fast path asked of the field: semantic + colour evaluations against the reference's."""

    evaluated: int
    reference: int


@torch.no_grad()
def render_fast(generator, planes, c: torch.Tensor, ws: torch.Tensor, grid: OccupancyGrid | None = None,
                neural_resolution: int | None = None, texture_swap=None,
                settings: FastRenderSettings = FastRenderSettings(), stats: list | None = None):
    """Render cached tri-planes like :meth:`Generator.render` (deterministic samples), fast; see
    :func:`_render_fast` for the arguments. With ``settings.flush_denormals`` the calling thread flushes
    denormals to zero for the call (:func:`ops.denormals.flush_denormals`; values below 1.2e-38 only)."""
    with flush_denormals(settings.flush_denormals):
        return _render_fast(generator, planes, c, ws, grid, neural_resolution, texture_swap, settings, stats)


def _render_fast(generator, planes, c: torch.Tensor, ws: torch.Tensor, grid: OccupancyGrid | None = None,
                 neural_resolution: int | None = None, texture_swap=None,
                 settings: FastRenderSettings = FastRenderSettings(), stats: list | None = None):
    """Render cached tri-planes like :meth:`Generator.render` (deterministic samples), fast.

    Args:
        generator: the generator (eval mode; no gradients flow).
        planes: its ``TriPlanes`` [B, ...].
        c: [B, 25] camera labels; ws: [B, num_ws, w_dim] codes (super-resolution codes).
        grid: :func:`occupancy_grid` of ``planes`` (computed here when None; cache it per planes).
        neural_resolution, texture_swap: as for :meth:`Generator.render`.
        settings: thresholds (see the module docstring).
        stats: when a list, a :class:`FastRenderStats` is appended to it.
    Returns:
        the generator's ``RenderResult``.
    """
    cfg = generator.config
    b = planes.semantic.shape[0]
    if c.ndim != 2 or c.shape != (b, cfg.c_dim) or ws.shape[0] != b:
        raise ValueError(f"c must be [B={b}, 25] and ws [B={b}, ...], got {tuple(c.shape)}, {tuple(ws.shape)}")
    if planes.semantic.device.type != "cpu" and planes.semantic.device.type != "cuda":
        raise ValueError(f"the fast renderer runs on CPU or CUDA tensors, got {planes.semantic.device}")
    if grid is None:
        grid = occupancy_grid(generator, planes, empty_sigma=settings.empty_sigma)
    if grid.occupied.shape[0] != b:
        raise ValueError(f"the occupancy grid is for {grid.occupied.shape[0]} planes, got {b}")
    h = cfg.neural_resolution if neural_resolution is None else int(neural_resolution)
    origins, dirs, near, far = generator.camera_rays(c, h)
    outs = []
    evaluated = 0
    sem_mlp = decoder_mlp(generator.semantic_decoder) if settings.fused else None
    tex_mlp = decoder_mlp(generator.texture_decoder) if settings.fused else None
    for i in range(b):
        swap = None if texture_swap is None else (texture_swap[0][i], texture_swap[1])
        f, p, o, d, n = march(generator, _Planes(planes.semantic[i], settings.impl, sem_mlp),
                              _Planes(planes.texture[i], settings.impl, tex_mlp), swap, grid, i,
                              origins[i], dirs[i], near[i], far[i], settings)
        outs.append((f, p, o, d))
        evaluated += n
    features, probs, opacity, depth = (torch.stack(x) for x in zip(*outs))
    if stats is not None:
        stats.append(FastRenderStats(evaluated, 2 * b * h * h * (cfg.coarse_samples + cfg.fine_samples)))
    from ide3d_core import fast_networks  # here: stand-in generators never import the real networks

    dtype = network_dtype(settings.network_dtype, features.device)
    sr = generator.superresolution

    def superresolution(f, sem, w_sr):
        return fast_networks.superresolve(sr, f, sem, w_sr, dtype)

    return generator.finish_render(features, probs, opacity, depth, ws, h, superresolution=superresolution, c=c)


def psnr(a: torch.Tensor, b: torch.Tensor, peak_to_peak: float = 2.0) -> float:
    """PSNR in dB of two images in the same range (``peak_to_peak`` 2 for [-1, 1] images)."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(peak_to_peak ** 2 / mse)


#: :func:`render_quality` renders with the reference path when more of the box than this is occupied
#: (an untrained field has no empty space; skipping would only add overhead).
MAX_FAST_FRACTION = 0.6

#: Render qualities callers choose from (the service's ``quality`` field, the add-on's previews):
#: "reference" is :meth:`Generator.render`; "full" the fast path at the model's neural resolution (the
#: same image, see the module docstring); "preview" the fast path at half the neural resolution (a
#: quarter of the rays; the super-resolution still gives the full output size, a little softer).
QUALITIES = ("reference", "full", "preview")


def supports(generator) -> bool:
    """Whether ``generator`` has what the fast path needs (the project's ``Generator``; stand-ins that
    only render, e.g. the tests' analytic sphere, are rendered by their own ``render``)."""
    return all(hasattr(generator, name) for name in ("camera_rays", "finish_render", "semantic_decoder",
                                                      "texture_decoder", "superresolution", "synthesis"))


def render_quality(generator, planes, c: torch.Tensor, ws: torch.Tensor, quality: str = "full",
                   grid: OccupancyGrid | None = None, texture_swap=None):
    """Render cached tri-planes at one of :data:`QUALITIES` -> ``RenderResult``; ``grid`` as for
    :func:`render_fast` (ignored by "reference"). A generator the fast path does not support
    (:func:`supports`) renders with its own ``render`` at every quality."""
    if quality not in QUALITIES:
        raise ValueError(f"render quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    if quality == "reference" or not supports(generator):
        with torch.no_grad():
            return generator.render(planes, c, ws, texture_swap=texture_swap)
    h = int(generator.config.neural_resolution)
    if quality == "preview":
        h = max(16, h // 2)
    if grid is None:
        grid = occupancy_grid(generator, planes)
    if grid.fraction() > MAX_FAST_FRACTION:  # a field with no empty space (untrained): nothing to skip
        with torch.no_grad():
            return generator.render(planes, c, ws, neural_resolution=h, texture_swap=texture_swap)
    return render_fast(generator, planes, c, ws, grid, neural_resolution=h, texture_swap=texture_swap)
