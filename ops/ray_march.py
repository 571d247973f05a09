# SPDX-License-Identifier: GPL-3.0-or-later
"""The fast renderer's ray march in one call: occupancy, coarse and fine decodes, fix-up, compositing.

``ray_march(field, occupied, origins, dirs, near, far, steps, impl)`` marches the rays ``origins,
dirs [n, 3]`` (model world, unit directions) of one batch item through cached tri-planes and returns
:class:`MarchResult` (``features [n, F]``, ``probs [n, K]``, ``opacity [n, 1]``, ``depth [n, 1]``,
float32, and the count of field evaluations). Per ray (``ide3d_core.fast_render``'s quadrature, which
this layer restates instead of importing: ops is below ide3d_core):

1. ``Nc`` coarse depths, the centres of ``Nc`` equal bins of ``[near, far]`` (as
   ``ide3d_core.rendering.stratified_depths`` without a generator); a sample is occupied when it is in
   the box and its cell of ``occupied [R, R, R]`` (axes x, y, z) is set (:mod:`ops.ray_occupancy`).
2. Coarse decodes of occupied samples chunk by chunk (``coarse_chunk`` in depth order); a ray whose
   optical depth after a chunk is ``>= stop_optical_depth`` asks for no more. Unasked samples have
   density 0.
3. Compositing (``rendering.ray_weights``): interval edges at the mid-points, ``near`` and ``far``;
   ``tau_i = sigma_i delta_i``, transmittance ``exp(-(cumsum(tau)_i - tau_i))``, weight ``T_i (1 -
   exp(-tau_i))``; cumulative sums accumulate in float64 and round to float32 per element (PyTorch's CPU
   ``cumsum`` does the same for float32).
4. ``Nf`` fine depths by inverse CDF of the coarse weights + 1e-5 at the quantiles ``(k + 0.5) / Nf``
   (``rendering.sample_pdf`` without a generator); merged with the coarse ones in depth order (coarse
   first on ties); the fine samples that are occupied and not beyond the stop depth (the first coarse
   depth whose optical depth exceeds ``stop_optical_depth``, else ``far``) are decoded.
5. Fix-up: compositing with unevaluated densities taken as 0 over-estimates every transmittance; the
   occupied unevaluated samples whose transmittance exceeds ``min_transmittance`` are decoded and the
   composite redone, at most ``max_rounds`` times.
6. Samples with final weight ``> min_weight`` get the texture decoder's colour ``[F]`` (from the swap
   texture where their arg-max class is swapped: :class:`MarchField`) and the softmax of their class
   logits ``[K]``; ``features``/``probs`` are the weighted sums, ``opacity`` the sum of the
   weights, ``depth = sum w t + (1 - opacity) far``.

The field (:class:`MarchField`) is decoded as :func:`ops.triplane_decode.triplane_decode` does (semantic
head: density + ``K`` logits; colour head: ``2 sigmoid - 1``).

* ``impl``: "torch" the twin (plain PyTorch, any device; it decodes every sample densely and applies the
  rules above as masks: the specification, slow); "c" the CPU kernel (rays in tiles of 16: each step
  gathers the tile's wanted samples and decodes them in one fused call; chunks of 256 rays handed to
  ``threads`` Python threads as they come free, ctypes releasing the GIL; flush-to-zero inside the call as in
  :mod:`ops.triplane_decode`; its source is ``ops/_ray_march_kernel.py``); "auto" the kernel where it
  is built and the tensors are on the CPU.
* The kernel and the twin agree to float32 rounding; a sample whose transmittance or weight sits within
  rounding of a threshold may be decided differently (tests: ``tests/test_ray_march.py``).
Inference only (no gradients).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from ops import _native
from ops._ray_march_kernel import Args, load
from ops.ray_occupancy import ray_occupancy_torch
from ops.triplane import channels_last_planes
from ops.triplane_decode import MAX_WIDTH, MLP, triplane_decode_torch

IMPLS = ("auto", "torch", "c")
_AGG_CODE = {"mean": 0, "sum": 1, "concat": 2}
PDF_EPS = 1e-5  # ide3d_core.rendering.PDF_EPS
__all__ = ["MarchField", "MarchResult", "MarchSteps", "coarse_depths", "kernel_available", "load", "ray_march",
           "ray_march_torch"]


@dataclass(frozen=True, eq=False)
class MarchField:
    """One item's cached field: ``semantic``/``texture`` planes ``[n, C, P, P]`` (plane ``k`` sees world
    axes ``plane_axes[k]``, ``grid_sample`` semantics on ``point * 2 / box_size``), ``aggregation``, the
    decoders packed as :class:`ops.triplane_decode.MLP` (semantic: density + ``K`` logits, with
    ``density_bias``; texture: ``F`` colour features). ``semantic_cl``/``texture_cl``: the planes'
    :func:`ops.triplane.channels_last_planes`, built on first use by the kernel when None.
    ``swap_texture`` (planes shaped like ``texture``) and ``swap_classes`` (class ids): region restyling,
    the colour of a sample whose arg-max class logit is one of ``swap_classes`` comes from
    ``swap_texture`` (same texture decoder)."""

    semantic: torch.Tensor
    texture: torch.Tensor
    plane_axes: tuple
    box_size: float
    aggregation: str
    semantic_mlp: MLP
    density_bias: float
    texture_mlp: MLP
    semantic_cl: torch.Tensor | None = None
    texture_cl: torch.Tensor | None = None
    swap_texture: torch.Tensor | None = None
    swap_classes: tuple = ()


@dataclass(frozen=True)
class MarchSteps:
    """Samples per ray and the thresholds of the march (see the module docstring)."""

    coarse: int
    fine: int
    stop_optical_depth: float
    min_transmittance: float
    min_weight: float
    coarse_chunk: int
    max_rounds: int = 64


@dataclass(frozen=True)
class MarchResult:
    """``features [n, F]``, ``probs [n, K]``, ``opacity``/``depth [n, 1]`` (float32); ``evaluated``: the
    semantic decodes plus the colour decodes of the march."""

    features: torch.Tensor
    probs: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    evaluated: int


def coarse_depths(near, far, n: int) -> torch.Tensor:
    """``[n]`` bin centres of ``[near, far]`` (float32, the arithmetic of ``stratified_depths``)."""
    near = torch.as_tensor(near, dtype=torch.float32).reshape(1, 1)
    far = torch.as_tensor(far, dtype=torch.float32).reshape(1, 1)
    step = (far - near) / n
    base = near + step * torch.arange(n, dtype=torch.float32, device=near.device)
    return (base + torch.full((1, n), 0.5, device=near.device) * step)[0]


def _deltas(depths: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval edges ``[r, N + 1]`` and lengths ``[r, N]`` of sorted depths ``[r, N]``."""
    r = depths.shape[0]
    edges = torch.cat([near.expand(r, 1), 0.5 * (depths[:, 1:] + depths[:, :-1]), far.expand(r, 1)], -1)
    return edges, edges[:, 1:] - edges[:, :-1]


def _transmittance(sigma: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tau = sigma * delta
    optical = torch.cumsum(tau.double(), -1).float()
    return tau, torch.exp(-(optical - tau))


def ray_march_torch(field: MarchField, occupied: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                    near, far, steps: MarchSteps) -> MarchResult:
    """The twin: every sample decoded, the rules of the module docstring applied as masks."""
    r, nc, nf = origins.shape[0], steps.coarse, steps.fine
    dev = origins.device
    near_t = torch.as_tensor(near, dtype=torch.float32, device=dev).reshape(1, 1)
    far_t = torch.as_tensor(far, dtype=torch.float32, device=dev).reshape(1, 1)
    args = (field.plane_axes, field.box_size, field.aggregation)

    def decode(depths):  # -> sigma [r, N], logits [r, N, K], points [r * N, 3]
        pts = (origins[:, None] + dirs[:, None] * depths[..., None]).reshape(-1, 3)
        y = triplane_decode_torch(field.semantic, pts, *args, field.semantic_mlp, "semantic", field.density_bias)
        return y[:, 0].reshape(depths.shape), y[:, 1:].reshape(*depths.shape, -1), pts

    coarse = coarse_depths(near_t, far_t, nc).expand(r, nc)
    occ_c = ray_occupancy_torch(occupied, origins, dirs, coarse, field.box_size)
    sigma_c_all, logits_c, _ = decode(coarse)
    edges_c, delta_c = _deltas(coarse, near_t, far_t)
    asked_c = torch.zeros_like(occ_c)
    tau = torch.zeros(r, 1, device=dev)
    for j0 in range(0, nc, steps.coarse_chunk):
        sl = slice(j0, min(nc, j0 + steps.coarse_chunk))
        asked_c[:, sl] = occ_c[:, sl] & (tau < steps.stop_optical_depth)
        tau = tau + (torch.where(asked_c[:, sl], sigma_c_all[:, sl], 0.0) * delta_c[:, sl]).sum(-1, keepdim=True)
    depths, sigma_all, logits, occ, asked = coarse, sigma_c_all, logits_c, occ_c, asked_c
    if nf > 0:
        tau_c, tr_c = _transmittance(torch.where(asked_c, sigma_c_all, 0.0), delta_c)
        w = tr_c * (1.0 - torch.exp(-tau_c)) + PDF_EPS
        cdf = torch.cumsum((w / w.sum(-1, keepdim=True)).double(), -1).float().clamp(max=1.0)
        cdf = torch.cat([torch.zeros(r, 1, device=dev), cdf], -1).contiguous()
        u = ((torch.arange(nf, dtype=torch.float32, device=dev) + 0.5) / nf).expand(r, nf).contiguous()
        hi = torch.searchsorted(cdf, u, right=True).clamp(1, nc)
        lo = hi - 1
        den = cdf.gather(-1, hi) - cdf.gather(-1, lo)
        frac = ((u - cdf.gather(-1, lo)) / torch.where(den > 1e-12, den, torch.ones_like(den))).clamp(0.0, 1.0)
        e_lo = edges_c.gather(-1, lo)
        fine = torch.sort(e_lo + frac * (edges_c.gather(-1, hi) - e_lo), -1).values
        beyond = torch.cumsum(tau_c.double(), -1).float() > steps.stop_optical_depth
        stop = torch.where(beyond.any(-1, keepdim=True), coarse.gather(-1, beyond.float().argmax(-1, keepdim=True)),
                           far_t.expand(r, 1))
        sigma_f_all, logits_f, _ = decode(fine)
        occ_f = ray_occupancy_torch(occupied, origins, dirs, fine, field.box_size)
        depths, order = torch.sort(torch.cat([coarse, fine], -1), dim=-1, stable=True)
        sigma_all = torch.cat([sigma_c_all, sigma_f_all], -1).gather(-1, order)
        logits = torch.cat([logits_c, logits_f], 1).gather(1, order[..., None].expand(-1, -1, logits_c.shape[-1]))
        occ = torch.cat([occ_c, occ_f], -1).gather(-1, order)
        asked = torch.cat([asked_c, occ_f & (fine <= stop)], -1).gather(-1, order)
    _, delta = _deltas(depths, near_t, far_t)
    for _ in range(steps.max_rounds):
        _, tr = _transmittance(torch.where(asked, sigma_all, 0.0), delta)
        pending = occ & ~asked & (tr > steps.min_transmittance)
        if not bool(pending.any()):
            break
        asked = asked | pending
    tau, tr = _transmittance(torch.where(asked, sigma_all, 0.0), delta)
    weights = tr * (1.0 - torch.exp(-tau))
    opacity = weights.sum(-1, keepdim=True)
    depth = (weights * depths).sum(-1, keepdim=True) + (1.0 - opacity) * far_t
    keep = (weights > steps.min_weight) & asked
    pts = (origins[:, None] + dirs[:, None] * depths[..., None]).reshape(-1, 3)
    colour = triplane_decode_torch(field.texture, pts, *args, field.texture_mlp, "colour")
    colour = colour.reshape(r, depths.shape[1], -1)
    if field.swap_texture is not None:
        other = triplane_decode_torch(field.swap_texture, pts, *args, field.texture_mlp, "colour")
        label = logits.argmax(-1, keepdim=True)
        swapped = torch.isin(label, torch.tensor(sorted(set(field.swap_classes)), dtype=label.dtype, device=dev))
        colour = torch.where(swapped, other.reshape(colour.shape), colour)
    wk = torch.where(keep, weights, 0.0)[..., None]
    features = (wk * colour).sum(1)
    probs = (wk * logits.float().softmax(-1)).sum(1)
    return MarchResult(features, probs, opacity, depth, int(asked.sum()) + int(keep.sum()))


def kernel_available(*tensors: torch.Tensor) -> bool:
    """Whether ``impl="auto"`` runs the kernel (CPU tensors, library built)."""
    return all(t.device.type == "cpu" for t in tensors) and load() is not None


#: Rays per work item of a multi-threaded march (a multiple of the kernel's tile of 16).
CHUNK_RAYS = 256


def _parallel_rays(fn, n: int, threads: int) -> None:
    """``fn(start, end)`` over ``range(n)`` in chunks of :data:`CHUNK_RAYS` handed to ``threads`` Python
    threads as they come free (ctypes releases the GIL): the rays through the face cost more than those
    beside it, so fixed halves of the image leave one thread waiting (measured 10.4 / 12.5 ms of CPU for
    the top / bottom half of a bundled-model frame). Serially for one thread or a single chunk."""
    threads = max(1, min(threads, -(-n // CHUNK_RAYS)))
    if threads == 1:
        fn(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: fn(s, min(n, s + CHUNK_RAYS)), range(0, n, CHUNK_RAYS)))


def _kernel(field: MarchField, occupied, origins, dirs, near, far, steps: MarchSteps, threads: int) -> MarchResult:
    lib = load()
    r = origins.shape[0]
    sem_cl = field.semantic_cl if field.semantic_cl is not None else channels_last_planes(field.semantic)
    tex_cl = field.texture_cl if field.texture_cl is not None else channels_last_planes(field.texture)
    sm, tm = field.semantic_mlp, field.texture_mlp
    k, f = sm.out_features - 1, tm.out_features
    occ = occupied.to(torch.uint8).contiguous()
    o, d = (x.detach().float().contiguous() for x in (origins, dirs))
    coarse = coarse_depths(near, far, steps.coarse).contiguous()
    near_f, far_f = float(torch.as_tensor(near, dtype=torch.float32)), float(torch.as_tensor(far, dtype=torch.float32))
    axes = torch.tensor([int(i) for a in field.plane_axes for i in a], dtype=torch.int32)
    features, probs = torch.empty(r, f), torch.empty(r, k)
    opacity, depth = torch.empty(r, 1), torch.empty(r, 1)
    evaluated = torch.zeros(r, dtype=torch.int64)
    swap_cl = None if field.swap_texture is None else channels_last_planes(field.swap_texture)
    swap_mask = torch.zeros(k, dtype=torch.uint8)
    swap_mask[[int(i) for i in field.swap_classes]] = 1
    keep = (sem_cl, tex_cl, occ, o, d, coarse, axes, swap_cl, swap_mask)  # alive for the call
    args = Args(sem_cl.data_ptr(), tex_cl.data_ptr(), sem_cl.shape[1], sem_cl.shape[3], tex_cl.shape[1],
                 tex_cl.shape[3], sem_cl.shape[0], axes.data_ptr(), float(field.box_size),
                 _AGG_CODE[field.aggregation], sm.w1t.data_ptr(), sm.b1p.data_ptr(), sm.w2t.data_ptr(),
                 sm.b2p.data_ptr(), sm.w1t.shape[1], sm.w2t.shape[1], sm.out_features, float(field.density_bias),
                 tm.w1t.data_ptr(), tm.b1p.data_ptr(), tm.w2t.data_ptr(), tm.b2p.data_ptr(), tm.w1t.shape[1],
                 tm.w2t.shape[1], f, None if swap_cl is None else swap_cl.data_ptr(), swap_mask.data_ptr(),
                 occ.data_ptr(), occ.shape[-1], o.data_ptr(), d.data_ptr(), coarse.data_ptr(),
                 steps.coarse, steps.fine, near_f, far_f, float(steps.stop_optical_depth),
                 float(steps.min_transmittance), float(steps.min_weight), steps.coarse_chunk, steps.max_rounds,
                 features.data_ptr(), probs.data_ptr(), opacity.data_ptr(), depth.data_ptr(), evaluated.data_ptr())
    failed = []

    def run(start, end):
        if lib.ray_march(ctypes.byref(args), start, end):
            failed.append((start, end))

    _parallel_rays(run, r, threads)
    del keep
    if failed:
        raise MemoryError("ray_march: scratch memory could not be allocated")
    return MarchResult(features, probs, opacity, depth, int(evaluated.sum()))


def ray_march(field: MarchField, occupied: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, near, far,
              steps: MarchSteps, impl: str = "auto", threads: int | None = None) -> MarchResult:
    """March rays ``origins, dirs [n, 3]`` of one item (see the module docstring); ``occupied [R, R, R]``
    bool; ``near``/``far`` floats or one-element tensors; ``threads``: default ``torch.get_num_threads()``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    n = origins.shape[0]
    if origins.shape != (n, 3) or dirs.shape != (n, 3):
        raise ValueError(f"origins and dirs must be [n, 3], got {tuple(origins.shape)}, {tuple(dirs.shape)}")
    rr = occupied.shape[-1]
    if occupied.shape != (rr, rr, rr):
        raise ValueError(f"occupied must be [R, R, R], got {tuple(occupied.shape)}")
    if steps.coarse < 1 or steps.fine < 0 or steps.coarse_chunk < 1 or steps.max_rounds < 0:
        raise ValueError(f"invalid march steps: {steps}")
    if field.semantic_mlp.out_features < 2:
        raise ValueError("the semantic decoder needs a density and at least one class logit")
    if field.swap_texture is not None and (field.swap_texture.shape != field.texture.shape or not all(
            0 <= int(i) < field.semantic_mlp.out_features - 1 for i in field.swap_classes)):
        raise ValueError(f"swap_texture must be shaped like texture {tuple(field.texture.shape)} and swap_classes "
                         f"in 0..{field.semantic_mlp.out_features - 2}, got {tuple(field.swap_texture.shape)}, "
                         f"{field.swap_classes}")
    tensors = (field.semantic, field.texture, occupied, origins, dirs)
    if impl == "auto":
        impl = "c" if kernel_available(*tensors) else "torch"
    if impl == "torch":
        return ray_march_torch(field, occupied, origins, dirs, near, far, steps)
    if load() is None:
        raise RuntimeError(f"the C kernel is not available: {_native.unavailable_reason('ray_march')}")
    if not all(t.device.type == "cpu" for t in tensors):
        raise ValueError("impl='c' runs on CPU tensors")
    widths = (field.semantic_mlp.w1t.shape[0], field.semantic_mlp.w1t.shape[1], field.semantic_mlp.w2t.shape[1],
              field.texture_mlp.w1t.shape[0], field.texture_mlp.w1t.shape[1], field.texture_mlp.w2t.shape[1])
    if max(widths) > MAX_WIDTH:
        raise ValueError(f"impl='c' takes feature, hidden and output widths up to {MAX_WIDTH}")
    if n == 0:
        z = torch.zeros(0, 1)
        return MarchResult(torch.zeros(0, field.texture_mlp.out_features),
                           torch.zeros(0, field.semantic_mlp.out_features - 1), z, z.clone(), 0)
    threads = torch.get_num_threads() if threads is None else int(threads)
    return _kernel(field, occupied, origins, dirs, near, far, steps, threads)
