# SPDX-License-Identifier: GPL-3.0-or-later
"""Volume rendering along rays: stratified and importance sampling, alpha compositing (stateless).

Conventions
-----------
* A ray is ``origin + t * direction`` with a unit direction, so ``t`` (the "depth" everywhere in the
  project) is a distance in model units. Samples lie in ``[near, far]``. ``near`` and ``far`` are floats
  (one interval for every ray) or tensors that broadcast against ``[B, R, 1]`` (per camera or per ray,
  e.g. ``[B, 1, 1]`` bounds that follow each camera's distance).
* **Quadrature.** Each sample ``t_i`` (sorted) stands for the interval between the mid-points to its
  neighbours; the first interval starts at ``near`` and the last ends at ``far``, so the intervals
  tile ``[near, far]`` exactly. With ``delta_i`` the interval lengths: ``alpha_i = 1 - exp(-sigma_i
  delta_i)``, transmittance ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` (an exclusive cumulative *sum*,
  more accurate than a product of ``1 - alpha`` and free of the 1e-10 fudge), weights ``w_i = T_i
  alpha_i``, so the accumulated opacity is exactly ``1 - exp(-sum sigma_i delta_i)``.
* **Depth** is ``sum w_i t_i + (1 - opacity) * far``: the expected termination distance with the
  missing mass on the far bound (no division by a vanishing opacity, no NaNs, nothing data dependent).
* Compositing always runs in float32, also under bf16 autocast (a bf16 transmittance loses the far
  samples).
* Without a ``generator`` every draw is deterministic (bin centres; evenly spaced CDF quantiles), so
  inference is reproducible and CUDA-graph capturable; with one, samples are jittered (training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: Added to the coarse weights before importance sampling: empty rays sample uniformly.
PDF_EPS = 1e-5

#: Per-sample values: one tensor [B, M, C] or a tuple of them (composited separately, no concatenation).
Values = torch.Tensor | tuple[torch.Tensor, ...]
#: A ray bound: a float, or a tensor broadcasting against [B, R, 1].
Bound = float | torch.Tensor
FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, Values]]


def stratified_depths(batch_shape: tuple[int, ...], n: int, near: Bound, far: Bound,
                      device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` sorted depths per ray, one in each of ``n`` equal bins of ``[near, far]``.

    Returns ``[*batch_shape, n]``: bin centres, or a uniform draw inside each bin with ``generator``
    (on the generator's device).
    """
    step = (far - near) / n
    base = near + step * torch.arange(n, device=device, dtype=dtype)
    if generator is None:
        u = torch.full((*batch_shape, n), 0.5, device=device, dtype=dtype)
    else:
        u = torch.rand((*batch_shape, n), generator=generator, device=device, dtype=dtype)
    return base + u * step


def _edge(bound: Bound, like: torch.Tensor) -> torch.Tensor:
    """``bound`` as a tensor shaped like ``like`` ([..., 1])."""
    if isinstance(bound, torch.Tensor):
        return bound.to(like.dtype).expand_as(like)
    return torch.full_like(like, bound)


def interval_edges(depths: torch.Tensor, near: Bound, far: Bound) -> torch.Tensor:
    """``[..., N]`` sorted depths -> ``[..., N + 1]`` edges of the intervals they stand for."""
    mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
    return torch.cat([_edge(near, depths[..., :1]), mids, _edge(far, depths[..., :1])], dim=-1)


@dataclass(frozen=True)
class Composite:
    """Result of :func:`composite` (R rays per batch item)."""

    #: [B, R, C] weighted sums of the values (a tuple of them when the values were a tuple).
    values: Values
    #: [B, R, N] per-sample weights.
    weights: torch.Tensor
    #: [B, R, 1] accumulated opacity (sum of weights).
    opacity: torch.Tensor
    #: [B, R, 1] expected depth with background at ``far``.
    depth: torch.Tensor


def ray_weights(sigma: torch.Tensor, depths: torch.Tensor, near: Bound, far: Bound) -> torch.Tensor:
    """Compositing weights ``[B, R, N]`` (float32) of sorted samples; ``sigma`` [B, R, N] (or [..., 1])."""
    if sigma.ndim == depths.ndim + 1:
        sigma = sigma.squeeze(-1)
    delta = torch.diff(interval_edges(depths.float(), near, far), dim=-1)  # [B, R, N]
    tau = sigma.float() * delta
    optical = torch.cumsum(tau, dim=-1)
    transmittance = torch.exp(-(optical - tau))  # exclusive
    return transmittance * (1.0 - torch.exp(-tau))


def weighted_sum(weights: torch.Tensor, values: Values) -> Values:
    """``sum_i weights[..., i] * values[..., i, :]`` as a batched matrix product, float32 (element-wise
    for a tuple of value tensors)."""
    if isinstance(values, tuple):
        return tuple(weighted_sum(weights, v) for v in values)
    return torch.matmul(weights.unsqueeze(-2), values.float()).squeeze(-2)


def _add(a: Values, b: Values) -> Values:
    return tuple(x + y for x, y in zip(a, b)) if isinstance(a, tuple) else a + b


def composite(sigma: torch.Tensor, values: Values, depths: torch.Tensor, near: Bound,
              far: Bound) -> Composite:
    """Alpha-composite samples along rays (see the module docstring for the quadrature).

    Args:
        sigma: [B, R, N] or [B, R, N, 1] activated densities (>= 0, per model unit).
        values: [B, R, N, C] per-sample values (or a tuple of such tensors).
        depths: [B, R, N] sorted sample depths in [near, far].
    """
    weights = ray_weights(sigma, depths, near, far)
    return _finish(weights, weighted_sum(weights, values), depths.float(), far)


def _finish(weights: torch.Tensor, values: Values, depths: torch.Tensor, far: Bound) -> Composite:
    opacity = weights.sum(dim=-1, keepdim=True)
    depth = (weights * depths).sum(dim=-1, keepdim=True) + (1.0 - opacity) * far
    return Composite(values, weights, opacity, depth)


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, n: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF sampling of the piecewise-constant density ``weights`` on the intervals ``edges``.

    Args:
        edges: [..., N + 1] increasing interval edges.
        weights: [..., N] non-negative (``PDF_EPS`` is added, so empty rays sample uniformly).
        n: samples per ray.
        generator: None -> the quantiles ``(k + 0.5) / n``; else uniform draws.
    Returns:
        [..., n] depths (unsorted with a generator), each inside the interval its quantile falls in.
    """
    weights = weights.float().detach() + PDF_EPS
    edges = edges.float().detach()
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    cdf = cdf.clamp(max=1.0).contiguous()
    shape = (*weights.shape[:-1], n)
    if generator is None:
        u = ((torch.arange(n, device=edges.device, dtype=torch.float32) + 0.5) / n).expand(shape)
    else:
        u = torch.rand(shape, generator=generator, device=edges.device, dtype=torch.float32)
    u = u.contiguous()
    n_bins = weights.shape[-1]
    above = torch.searchsorted(cdf, u, right=True).clamp(1, n_bins)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    e_lo, e_hi = edges.gather(-1, below), edges.gather(-1, above)
    denom = cdf_hi - cdf_lo
    frac = ((u - cdf_lo) / torch.where(denom > 1e-12, denom, torch.ones_like(denom))).clamp(0.0, 1.0)
    return e_lo + frac * (e_hi - e_lo)


@dataclass(frozen=True)
class RayRender:
    """Result of :func:`render_rays`: the final composite plus the merged samples."""

    composite: Composite
    #: [B, R, N] sorted depths of all samples (coarse and fine).
    depths: torch.Tensor


def _evaluate(field_fn: FieldFn, origins: torch.Tensor, dirs: torch.Tensor,
              depths: torch.Tensor) -> tuple[torch.Tensor, Values]:
    b, r, n = depths.shape
    points = origins.unsqueeze(2) + dirs.unsqueeze(2) * depths.unsqueeze(-1)  # [B, R, N, 3]
    sigma, values = field_fn(points.reshape(b, r * n, 3))
    if isinstance(values, tuple):
        return sigma.reshape(b, r, n), tuple(v.reshape(b, r, n, -1) for v in values)
    return sigma.reshape(b, r, n), values.reshape(b, r, n, -1)


def render_rays(field_fn: FieldFn, origins: torch.Tensor, dirs: torch.Tensor, near: Bound, far: Bound,
                coarse_samples: int, fine_samples: int,
                generator: torch.Generator | None = None) -> RayRender:
    """Two-pass (stratified, then importance) volume rendering of a field.

    Args:
        field_fn: ``points [B, M, 3] -> (sigma [B, M, 1] (>= 0), values [B, M, C] or a tuple of them)``.
        origins, dirs: [B, R, 3] ray origins and unit directions (model world).
        near, far: ray interval (floats, or tensors broadcasting against [B, R, 1]).
        coarse_samples, fine_samples: samples per ray of each pass; the fine samples are drawn from the
            coarse weights and the field is composited over all of them together.
        generator: None for deterministic samples (see module docstring).
    """
    b, r, _ = origins.shape
    depths = stratified_depths((b, r), coarse_samples, near, far, origins.device, generator)
    sigma, values = _evaluate(field_fn, origins, dirs, depths)
    if fine_samples == 0:
        return RayRender(composite(sigma, values, depths, near, far), depths)
    coarse_weights = ray_weights(sigma, depths, near, far)
    fine = sample_pdf(interval_edges(depths, near, far), coarse_weights, fine_samples, generator)
    sigma_f, values_f = _evaluate(field_fn, origins, dirs, fine)
    # Weights need the merged samples in depth order; the weighted sums do not, so only the densities
    # and depths are sorted and the weights are scattered back (no gather of the wide value tensors).
    merged, order = torch.sort(torch.cat([depths, fine], dim=-1), dim=-1)
    weights = ray_weights(torch.cat([sigma, sigma_f], dim=-1).gather(-1, order), merged, near, far)
    unsorted = torch.empty_like(weights).scatter_(-1, order, weights)
    out = _add(weighted_sum(unsorted[..., :coarse_samples], values),
               weighted_sum(unsorted[..., coarse_samples:], values_f))
    return RayRender(_finish(weights, out, merged, far), merged)
