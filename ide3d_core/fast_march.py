# SPDX-License-Identifier: GPL-3.0-or-later
"""The fast renderer's march of one batch item's rays (:mod:`ide3d_core.fast_render` owns the quadrature,
the thresholds and the occupancy grid; its module docstring states what each step bounds).

Two marches compute the same thing (the same samples, decodes, fix-up and compositing, to float32
rounding; ``tests/test_ray_march.py``):

* ``"torch"`` (:func:`march_torch`): PyTorch over all rays at once: boolean masks, ``nonzero`` compaction,
  gathers and scatters, a sort, cumulative sums, a fix-up loop; the decodes through the fused
  :mod:`ops.triplane_decode` kernel or the decoder modules.
* ``"c"`` (:func:`march_c`): :func:`ops.ray_march.ray_march`, the whole march in one C call per item,
  parallel over tiles of rays (``torch.get_num_threads()`` threads): none of the PyTorch glue above, which
  took about half of a 256 px frame on one core. The texture swap (region restyling) included.

``"auto"`` (the default of ``FastRenderSettings.march``) is "c" where the kernel is built, the tensors
are on the CPU, the decoders pack for the fused kernel, ``impl`` is not "torch" and ``fused`` is on; else
"torch". "c" where the kernel is not built raises with the reason.
"""
from __future__ import annotations

import torch

from ide3d_core import triplane
from ide3d_core.rendering import interval_edges, ray_weights, sample_pdf, stratified_depths
from ops import _native
from ops import ray_march as rm
from ops.ray_occupancy import ray_occupancy
from ops.triplane import channels_last_planes, kernel_available, triplane_sample
from ops.triplane_decode import MLP, decode_semantic, pack_mlp, triplane_decode

#: Marches :func:`march` chooses from (``FastRenderSettings.march``).
MARCHES = ("auto", "torch", "c")
#: At most this many fix-up rounds per ray (each decodes every pending sample at once).
MAX_FIXUP_ROUNDS = 64

# ------------------------------------------------------------------------------------------------
# Field evaluation at compacted points
# ------------------------------------------------------------------------------------------------

def decoder_mlp(decoder) -> MLP | None:
    """The effective weights of a decoder (:class:`~ide3d_core.networks.decoders.SemanticDecoder` or
    ``TextureDecoder``: a softplus hidden layer, a linear output) packed for the fused kernel
    (:func:`ops.triplane_decode.pack_mlp`); None for a decoder of another shape."""
    hidden, out = getattr(decoder, "hidden", None), getattr(decoder, "out", None)
    layers_ok = all(hasattr(layer, name) for layer in (hidden, out)
                    for name in ("weight", "bias", "weight_gain", "lr_mult", "activation"))
    if not layers_ok or hidden.activation != "softplus" or out.activation != "linear" \
            or hidden.bias is None or out.bias is None:
        return None
    w = lambda layer: (layer.weight.detach().float() * layer.weight_gain,  # noqa: E731
                       layer.bias.detach().float() * layer.lr_mult)
    return pack_mlp(*w(hidden), *w(out))


class _Planes:
    """One item's planes ``[3, C, P, P]`` and, for the C kernels, their channels-last copy and the
    decoder packed for the fused sample + decode kernel (:mod:`ops.triplane_decode`; ``mlp`` None: the
    decoder module runs on sampled features instead). ``packed``: the packed decoder whatever the impl
    (the C march converts planes of any dtype to float32 itself)."""

    def __init__(self, planes: torch.Tensor, impl: str, mlp: MLP | None = None) -> None:
        if impl == "auto":
            impl = "c" if kernel_available(planes) else "torch"
        self.planes, self.impl, self.packed = planes, impl, mlp
        self.cl = channels_last_planes(planes) if impl == "c" else None
        self.mlp = mlp if impl == "c" else None


def _features_at(planes: _Planes, points: torch.Tensor, cfg) -> torch.Tensor:
    """Aggregated plane features ``[M, F]`` at ``points [M, 3]``."""
    axes = tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes)
    return triplane_sample(planes.planes, points, axes, cfg.box_size, cfg.aggregation, impl=planes.impl,
                           planes_cl=planes.cl)


def _decode_colour(generator, texture: _Planes, points: torch.Tensor) -> torch.Tensor:
    """The texture decoder's colour features ``[M, F]`` at ``points [M, 3]`` (fused kernel or module)."""
    cfg = generator.config
    if texture.mlp is not None:
        axes = tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes)
        return triplane_decode(texture.planes, points, axes, cfg.box_size, cfg.aggregation, texture.mlp,
                               "colour", impl="c", planes_cl=texture.cl)
    return generator.texture_decoder(_features_at(texture, points, cfg))


def _decode_semantic(generator, semantic: _Planes, points: torch.Tensor):
    """``(sigma [M], logits [M, 19])`` of the semantic decoder at ``points [M, 3]``."""
    cfg = generator.config
    if semantic.mlp is not None:
        axes = tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes)
        return decode_semantic(semantic.planes, points, axes, cfg.box_size, cfg.aggregation, semantic.mlp,
                               float(generator.semantic_decoder.density_bias), impl="c", planes_cl=semantic.cl)
    sigma, logits = generator.semantic_decoder(_features_at(semantic, points, cfg))
    return sigma.reshape(-1), logits


def _colour(generator, texture: _Planes, points: torch.Tensor, logits: torch.Tensor,
            swap) -> torch.Tensor:
    """Colour features ``[M, F]`` at ``points``, with the generator's texture swap rule."""
    cfg = generator.config
    feats = _decode_colour(generator, texture, points)
    if swap is not None:
        other, class_ids = swap
        label = logits.argmax(dim=-1, keepdim=True)
        mask = torch.zeros_like(label, dtype=torch.bool)
        for i in sorted(set(int(i) for i in class_ids)):
            mask = mask | (label == i)
        if bool(mask.any()):
            other_feats = _decode_colour(generator, _Planes(other, texture.impl, texture.mlp), points)
            feats = torch.where(mask, other_feats.to(feats.dtype), feats)
    return feats


class _RaySamples:
    """The samples of the rays of one batch item: densities known so far, logits of evaluated ones."""

    def __init__(self, generator, semantic: _Planes, origins: torch.Tensor, dirs: torch.Tensor,
                 depths: torch.Tensor, occupied: torch.Tensor) -> None:
        self.g, self.semantic = generator, semantic
        self.origins, self.dirs, self.depths, self.occupied = origins, dirs, depths, occupied
        r, n = depths.shape
        dev = depths.device
        self.sigma = torch.zeros(r, n, device=dev)
        self.evaluated = torch.zeros(r, n, dtype=torch.bool, device=dev)
        self.row = torch.full((r * n,), -1, dtype=torch.long, device=dev)  # flat sample -> row in self.logits
        self.logits: list[torch.Tensor] = []
        self.count = 0

    def points(self, flat: torch.Tensor) -> torch.Tensor:
        n = self.depths.shape[1]
        ray = flat // n
        return self.origins[ray] + self.dirs[ray] * self.depths.reshape(-1)[flat, None]

    def evaluate(self, mask: torch.Tensor) -> None:
        """Evaluate the semantic field at the samples ``mask [R, N]`` (not yet evaluated)."""
        flat = mask.reshape(-1).nonzero().squeeze(-1)
        if flat.numel() == 0:
            return
        sigma, logits = _decode_semantic(self.g, self.semantic, self.points(flat))
        self.sigma.view(-1)[flat] = sigma.float()
        self.evaluated.view(-1)[flat] = True
        self.row[flat] = torch.arange(self.count, self.count + flat.numel(), device=flat.device)
        self.logits.append(logits)
        self.count += flat.numel()


@torch.no_grad()
def march_torch(generator, sem: _Planes, tex: _Planes, swap, grid, batch: int,
           origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
           s):
    """Rays ``[R, 3]`` of one batch item -> (features [R, F], probs [R, 19], opacity [R, 1],
    depth [R, 1], samples evaluated): the march in PyTorch (``grid``: the ``OccupancyGrid``)."""
    cfg = generator.config
    nc, nf = cfg.coarse_samples, cfg.fine_samples
    r = origins.shape[0]
    near, far = near.reshape(1, 1), far.reshape(1, 1)
    coarse = stratified_depths((r,), nc, near, far, origins.device)  # [R, Nc]

    occupied = grid.occupied[batch]

    def occupancy(depths: torch.Tensor) -> torch.Tensor:
        return ray_occupancy(occupied, origins, dirs, depths, grid.box_size, impl=s.impl)

    # Coarse pass in depth-ordered chunks; a ray stops asking once opaque.
    occ_c = occupancy(coarse)
    delta_c = torch.diff(interval_edges(coarse, near, far), dim=-1)
    cs = _RaySamples(generator, sem, origins, dirs, coarse, occ_c)
    tau = torch.zeros(r, 1, device=origins.device)
    for j0 in range(0, nc, s.coarse_chunk):
        j1 = min(nc, j0 + s.coarse_chunk)
        want = torch.zeros_like(occ_c)
        want[:, j0:j1] = occ_c[:, j0:j1] & (tau < s.stop_optical_depth)
        cs.evaluate(want)
        tau = tau + (cs.sigma[:, j0:j1] * delta_c[:, j0:j1]).sum(-1, keepdim=True)
    if nf == 0:
        depths, samples = coarse, cs
    else:
        weights_c = ray_weights(cs.sigma, coarse, near, far)
        fine = sample_pdf(interval_edges(coarse, near, far), weights_c, nf)  # [R, Nf]
        optical = torch.cumsum(cs.sigma * delta_c, dim=-1)
        beyond = optical > s.stop_optical_depth
        hit = beyond.any(-1, keepdim=True)
        stop = torch.where(hit, coarse.gather(-1, beyond.float().argmax(-1, keepdim=True)), far.expand(r, 1))
        # Merge coarse and fine samples in depth order; the coarse ones keep their densities.
        depths, order = torch.sort(torch.cat([coarse, fine], dim=-1), dim=-1)
        occ = occupancy(depths)
        samples = _RaySamples(generator, sem, origins, dirs, depths, occ)
        from_coarse = order < nc
        src = order.clamp(max=nc - 1)
        samples.sigma = torch.where(from_coarse, cs.sigma.gather(-1, src), samples.sigma)
        samples.evaluated = from_coarse & cs.evaluated.gather(-1, src)
        # Logit rows of the coarse samples carry over.
        coarse_rows = cs.row.view(r, nc).gather(-1, src)
        samples.row = torch.where(samples.evaluated, coarse_rows, -1).reshape(-1)
        samples.logits, samples.count = cs.logits, cs.count
        samples.evaluate(occ & ~from_coarse & (depths <= stop))
    # Fix-up: unevaluated occupied samples the (over-estimated) transmittance still reaches.
    delta = torch.diff(interval_edges(depths, near, far), dim=-1)
    for _ in range(MAX_FIXUP_ROUNDS):
        tau_i = samples.sigma * delta
        transmittance = torch.exp(-(torch.cumsum(tau_i, -1) - tau_i))
        pending = samples.occupied & ~samples.evaluated & (transmittance > s.min_transmittance)
        if not bool(pending.any()):
            break
        samples.evaluate(pending)
    weights = ray_weights(samples.sigma, depths, near, far)  # [R, N]
    opacity = weights.sum(-1, keepdim=True)
    depth = (weights * depths).sum(-1, keepdim=True) + (1.0 - opacity) * far

    keep = (weights > s.min_weight).reshape(-1).nonzero().squeeze(-1)
    logits_all = torch.cat(samples.logits) if samples.logits else torch.zeros(0, cfg.num_classes, device=origins.device)
    logits = logits_all[samples.row[keep]]
    w = weights.reshape(-1)[keep, None]
    ray = keep // depths.shape[1]
    colour = _colour(generator, tex, samples.points(keep), logits, swap).float()
    features = torch.zeros(r, colour.shape[-1], device=origins.device).index_add_(0, ray, w * colour)
    probs = torch.zeros(r, cfg.num_classes, device=origins.device).index_add_(0, ray, w * logits.float().softmax(-1))
    return features, probs, opacity, depth, samples.count + keep.numel()


def march_impl(s, sem: _Planes, tex: _Planes, device: torch.device) -> str:
    """The march "torch" or "c" that settings ``s`` (``FastRenderSettings``) choose for an item."""
    if s.march not in MARCHES:
        raise ValueError(f"march must be one of {MARCHES}, got {s.march!r}")
    if s.march == "torch":
        return "torch"
    if s.march == "c":
        if rm.load() is None:
            raise RuntimeError(f"the C ray march is not available: {_native.unavailable_reason('ray_march')}")
        if sem.packed is None or tex.packed is None:
            raise ValueError("march='c' needs decoders the fused kernel packs (softplus hidden layer, linear out)")
        return "c"
    ok = (device.type == "cpu" and s.impl != "torch" and s.fused and sem.packed is not None
          and tex.packed is not None and rm.load() is not None)
    return "c" if ok else "torch"


@torch.no_grad()
def march_c(generator, sem: _Planes, tex: _Planes, swap, grid, batch: int, origins: torch.Tensor,
            dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor, s):
    """:func:`march_torch`'s contract through :func:`ops.ray_march.ray_march`."""
    cfg = generator.config
    other, classes = (None, ()) if swap is None else (swap[0], tuple(int(i) for i in swap[1]))
    field = rm.MarchField(sem.planes, tex.planes, tuple(triplane.PLANE_AXES[name] for name in cfg.plane_axes),
                          cfg.box_size, cfg.aggregation, sem.packed, float(generator.semantic_decoder.density_bias),
                          tex.packed, sem.cl, tex.cl, other, classes)
    steps = rm.MarchSteps(cfg.coarse_samples, cfg.fine_samples, s.stop_optical_depth, s.min_transmittance,
                          s.min_weight, s.coarse_chunk, MAX_FIXUP_ROUNDS)
    out = rm.ray_march(field, grid.occupied[batch], origins, dirs, near, far, steps, impl="c")
    return out.features, out.probs, out.opacity, out.depth, out.evaluated


def march(generator, sem: _Planes, tex: _Planes, swap, grid, batch: int, origins: torch.Tensor,
          dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor, s):
    """Rays ``origins, dirs [R, 3]`` of batch item ``batch`` (bounds ``near``/``far`` one-element
    tensors) through the march ``s`` (``FastRenderSettings``) chooses (:func:`march_impl`) ->
    ``(features [R, F], probs [R, 19], opacity [R, 1], depth [R, 1], samples evaluated)``."""
    if march_impl(s, sem, tex, origins.device) == "c":
        return march_c(generator, sem, tex, swap, grid, batch, origins, dirs, near, far, s)
    return march_torch(generator, sem, tex, swap, grid, batch, origins, dirs, near, far, s)
