# SPDX-License-Identifier: GPL-3.0-or-later
"""The generator configuration: a frozen dataclass saved as JSON, with the three named presets.

Code layout in W+ (``num_ws`` codes; the split follows the paper's 8 shallow + 10 deep layers):

====================  ==============================================================================
``ws[:, :S]``         ``w_s`` (``S = num_shape_ws``): two modulated convs per shape block
                      (resolutions ``8 .. shared_resolution``), each conv its own code. The shape
                      branch's to-semantic-plane layers reuse the code of the conv before them.
``ws[:, S:S+H]``      texture-head codes (``H = num_head_ws``): one conv at the shared resolution, then
                      two per doubling up to ``plane_resolution``. The three heads read the *same*
                      codes with their own weights.
``ws[:, S+H:]``       super-resolution codes: two per SR block, plus one for the final to-RGB and
                      to-semantic layers.
====================  ==============================================================================

``paper``: S = 8 (blocks 8, 16, 32, 64), H = 5 (64, 128, 256), SR = 5 (256, 512): 8 + 10 = 18 codes,
as in the released IDE-3D checkpoint (``ws[:, :8]`` geometry and semantics, ``ws[:, 8:]`` texture).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ide3d_core.triplane import AGGREGATIONS, PLANE_AXES


def _is_pow2(n: int) -> bool:
    return n >= 4 and (n & (n - 1)) == 0


class ConfigError(ValueError):
    """A generator config field has the wrong type or is out of range, or the whole config would not
    fit the memory limit; the message is one line naming the field and its allowed range."""


#: Every numeric field: (type, smallest, largest). Wide enough for the paper's model and for GPU
#: experiments several times its size; narrow enough that no single field can ask for terabytes.
FIELD_LIMITS: dict[str, tuple[type, float, float]] = {
    "z_dim": (int, 1, 4096), "w_dim": (int, 1, 4096), "c_dim": (int, 25, 25),
    "mapping_layers": (int, 1, 16), "mapping_lr_mult": (float, 1e-6, 10.0),
    "channel_base": (int, 1, 1 << 20), "channel_max": (int, 1, 4096),
    "shared_resolution": (int, 8, 512), "shared_channels": (int, 1, 4096),
    "head_channel_base": (int, 1, 1 << 20), "head_channel_max": (int, 1, 4096),
    "plane_resolution": (int, 16, 2048),
    "semantic_plane_channels": (int, 1, 512), "texture_plane_channels": (int, 1, 512),
    "box_size": (float, 1e-3, 1e3), "decoder_hidden": (int, 1, 4096),
    "feature_channels": (int, 3, 1024), "num_classes": (int, 1, 256), "density_bias": (float, -1e3, 1e3),
    "neural_resolution": (int, 4, 2048), "img_resolution": (int, 16, 4096),
    "ray_near": (float, 1e-4, 1e4), "ray_far": (float, 1e-4, 1e4),
    "coarse_samples": (int, 2, 1024), "fine_samples": (int, 0, 1024),
    "code_prior_dim": (int, 0, 1024), "code_prior_components": (int, 0, 256),
    "background_hidden": (int, 0, 1024),
    "detail_levels": (int, 0, 32), "detail_min_res": (int, 1, 1 << 14), "detail_max_res": (int, 1, 1 << 14),
    "detail_log2_table": (int, 4, 24), "detail_features": (int, 1, 16), "detail_hidden": (int, 1, 1024),
}
#: Keys a config file may omit (added after the first bundled model; the default keeps its behaviour).
OPTIONAL_KEYS = {"code_prior_dim": 0, "code_prior_components": 0, "background_hidden": 0,
                 "semantic_logit_bias": (), "detail_levels": 0, "detail_min_res": 32, "detail_max_res": 1024,
                 "detail_log2_table": 16, "detail_features": 2, "detail_hidden": 32}
#: Largest :meth:`GeneratorConfig.memory_estimate` (parameters + activations, bytes) accepted from a
#: file. The paper's config needs about 2 GiB, the bundled one under 0.3 GiB.
MAX_MODEL_BYTES = 12 * 2**30


def _check_field(name: str, value: Any, kind: type, lo: float, hi: float) -> None:
    ok_type = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else \
        (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok_type or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ConfigError(f"generator config: {name} must be {what} in [{lo:g}, {hi:g}], got {shown}")


@dataclass(frozen=True)
class GeneratorConfig:
    """Every architecture and rendering number of the generator. See the module docstring for the
    code layout; sizes are in pixels, depths in model units along unit rays."""

    #: Latent ``z`` size (paper: 512).
    z_dim: int = 512
    #: Intermediate ``w`` size (paper: 512).
    w_dim: int = 512
    #: Camera label size (always 25, see :mod:`ide3d_core.cameras`).
    c_dim: int = 25
    #: Fully connected layers after the (z, embed(c)) concatenation (EG3D: 2).
    mapping_layers: int = 2
    #: Learning-rate multiplier of the mapping layers (StyleGAN: 0.01).
    mapping_lr_mult: float = 0.01
    #: 0: the mapping network draws codes (the paper). d > 0: a fitted code prior does instead
    #: (:mod:`ide3d_core.networks.prior`; the bundled auto-decoded model): ``d`` PCA directions per code
    #: group and ``code_prior_components`` mixture components; needs ``z_dim >= 2 + 2 d``.
    code_prior_dim: int = 0
    code_prior_components: int = 0

    #: Width of the shape branch at resolution r: ``min(channel_base // r, channel_max)``.
    channel_base: int = 32768
    channel_max: int = 512
    #: Resolution and width of the shape branch's last feature map, shared by the three texture heads
    #: (paper: 64 x 64 x 64).
    shared_resolution: int = 64
    shared_channels: int = 64
    #: Width of a texture head at resolution r: ``min(head_channel_base // r, head_channel_max)``.
    head_channel_base: int = 16384
    head_channel_max: int = 256
    #: Tri-plane resolution P (both plane sets; paper: 256).
    plane_resolution: int = 256
    #: Channels per semantic plane (Cs) and per texture plane (Ct; paper: 32).
    semantic_plane_channels: int = 32
    texture_plane_channels: int = 32
    #: The three projection planes, each named by the two world axes it sees as (width, height)
    #: coordinates. Default xy, yz, xz (not EG3D's accidental (z, x) third plane).
    plane_axes: tuple[str, ...] = ("xy", "yz", "xz")
    #: How the three plane features of a point are combined: "mean", "sum" or "concat".
    aggregation: str = "mean"
    #: Edge length of the cube the planes cover, centred at the origin (model units).
    box_size: float = 1.0

    #: Hidden width of both decoder MLPs (paper: 64).
    decoder_hidden: int = 64
    #: Colour-feature channels (first 3 = low-resolution RGB; paper: 32).
    feature_channels: int = 32
    #: Number of semantic classes (19, :mod:`ide3d_core.labels`).
    num_classes: int = 19
    #: Added to the raw density before softplus (EG3D: -1; starts the field half transparent).
    density_bias: float = -1.0

    #: Neural-rendering resolution h (paper: 64 or 128) and output resolution H (paper: 512).
    neural_resolution: int = 64
    img_resolution: int = 512
    #: Ray interval and samples per ray (stratified + importance).
    ray_near: float = 2.25
    ray_far: float = 3.3
    coarse_samples: int = 48
    fine_samples: int = 48
    #: Widths of the two super-resolution blocks (at H/2 and H).
    sr_channels: tuple[int, int] = (256, 128)
    #: Hidden width of the environment background (:mod:`ide3d_core.networks.background`: a backdrop
    #: colour from each ray's direction and the texture code, laid behind the super-resolved head);
    #: 0 = none, the super-resolution paints the backdrop (the paper).
    background_hidden: int = 0
    #: Per-class offsets added to the super-resolved semantic logits (empty: none, or ``num_classes``
    #: numbers): a logit adjustment fitted after training (``scripts/fit_semantic_bias.py``) so the argmax
    #: label maps give the thin parts (brows, eyes, lips) their share; it shifts the decision, not the
    #: field (the 3D semantics and the raw 64 px maps are untouched).
    semantic_logit_bias: tuple[float, ...] = ()
    #: Surface detail (:mod:`ide3d_core.networks.detail`): levels of its shared 3D hash grid (0 = none, the
    #: paper), the coarsest and finest level's cells across the box, rows per level (log2), numbers per
    #: row, and the hidden width of its per-pixel MLP.
    detail_levels: int = 0
    detail_min_res: int = 32
    detail_max_res: int = 1024
    detail_log2_table: int = 16
    detail_features: int = 2
    detail_hidden: int = 32

    # -- derived numbers -----------------------------------------------------------------------
    @property
    def shape_resolutions(self) -> tuple[int, ...]:
        """Resolutions of the shape blocks: 8, 16, ..., shared_resolution (input constant at 4)."""
        out, r = [], 8
        while r <= self.shared_resolution:
            out.append(r)
            r *= 2
        return tuple(out)

    @property
    def head_resolutions(self) -> tuple[int, ...]:
        """Resolutions of the texture-head up-blocks: 2 * shared, ..., plane_resolution."""
        out, r = [], self.shared_resolution * 2
        while r <= self.plane_resolution:
            out.append(r)
            r *= 2
        return tuple(out)

    @property
    def sr_input_resolution(self) -> int:
        """The neural render is resized to this (H / 4) before the two SR blocks."""
        return self.img_resolution // 4

    @property
    def num_shape_ws(self) -> int:
        return 2 * len(self.shape_resolutions)

    @property
    def num_head_ws(self) -> int:
        return 1 + 2 * len(self.head_resolutions)

    @property
    def num_sr_ws(self) -> int:
        return 2 * 2 + 1

    @property
    def num_texture_ws(self) -> int:
        return self.num_head_ws + self.num_sr_ws

    @property
    def num_ws(self) -> int:
        return self.num_shape_ws + self.num_texture_ws

    def channels(self, resolution: int) -> int:
        """Width of the shape branch at ``resolution`` (the last block has ``shared_channels``)."""
        if resolution == self.shared_resolution:
            return self.shared_channels
        return min(self.channel_base // resolution, self.channel_max)

    def head_channels(self, resolution: int) -> int:
        return min(self.head_channel_base // resolution, self.head_channel_max)

    def plane_feature_dim(self, plane_channels: int) -> int:
        """Decoder input size after aggregating the three planes."""
        return plane_channels * (len(self.plane_axes) if self.aggregation == "concat" else 1)

    # -- validation ----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        # Types and ranges first, one field at a time, so nothing below (nor a constructor that
        # allocates from these numbers) ever sees a string, a bool, a NaN or 1e9 channels.
        for name, (kind, lo, hi) in FIELD_LIMITS.items():
            _check_field(name, getattr(self, name), kind, lo, hi)
        for name in ("shared_resolution", "plane_resolution", "neural_resolution", "img_resolution"):
            if not _is_pow2(getattr(self, name)):
                raise ConfigError(f"generator config: {name} must be a power of two >= 4, got {getattr(self, name)}")
        if not 8 <= self.shared_resolution < self.plane_resolution:
            raise ConfigError("generator config: need 8 <= shared_resolution < plane_resolution")
        if self.neural_resolution > self.img_resolution:
            raise ConfigError("generator config: neural_resolution must not exceed img_resolution")
        if not isinstance(self.plane_axes, tuple) or len(self.plane_axes) != 3 \
                or any(not isinstance(p, str) or p not in PLANE_AXES for p in self.plane_axes):
            raise ConfigError(f"generator config: plane_axes must be three of {sorted(PLANE_AXES)}, "
                              f"got {self.plane_axes!r}"[:200])
        if not isinstance(self.aggregation, str) or self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"generator config: aggregation must be one of {AGGREGATIONS}, "
                              f"got {self.aggregation!r}"[:200])
        if not 0 < self.ray_near < self.ray_far:
            raise ConfigError("generator config: need 0 < ray_near < ray_far")
        if not isinstance(self.sr_channels, tuple) or len(self.sr_channels) != 2:
            raise ConfigError("generator config: sr_channels holds the widths of exactly two SR blocks")
        for i, c in enumerate(self.sr_channels):
            _check_field(f"sr_channels[{i}]", c, int, 1, 4096)
        if not isinstance(self.semantic_logit_bias, tuple) or len(self.semantic_logit_bias) not in (0, self.num_classes):
            raise ConfigError(f"generator config: semantic_logit_bias holds 0 or num_classes ({self.num_classes}) "
                              "numbers")
        for i, b in enumerate(self.semantic_logit_bias):
            _check_field(f"semantic_logit_bias[{i}]", b, float, -20.0, 20.0)
        if self.detail_min_res > self.detail_max_res:
            raise ConfigError("generator config: need detail_min_res <= detail_max_res")
        if self.code_prior_dim and (self.code_prior_components < 1 or self.z_dim < 2 + 2 * self.code_prior_dim
                                    or self.code_prior_dim > self.w_dim):
            raise ConfigError(f"generator config: code_prior_dim {self.code_prior_dim} needs "
                              f"code_prior_components >= 1, z_dim >= {2 + 2 * self.code_prior_dim} and <= w_dim")

    def memory_estimate(self) -> tuple[int, int]:
        """(parameter bytes, activation bytes) of one float32 forward pass at batch 1, estimated from
        the layer sizes (the parameter count is exact for the current architecture up to a few
        biases; activations count the planes, the feature maps of the branches, one chunk of ray
        samples through the decoders and the super-resolution maps, each live once). Used to refuse
        a model folder whose config would exhaust the machine before anything is allocated."""
        w = self.w_dim

        def conv(cin: int, cout: int, k: int = 3) -> int:  # modulated conv + its affine layer
            return k * k * cin * cout + cout + w * cin + cin

        params = (self.c_dim + 1) * w + sum((a + 1) * w for a in [self.z_dim + w] + [w] * (self.mapping_layers - 1))
        c_in = self.channels(4)
        params += c_in * 16
        for r in self.shape_resolutions:
            params += conv(c_in, self.channels(r)) + conv(self.channels(r), self.channels(r)) \
                + conv(self.channels(r), 3 * self.semantic_plane_channels, 1)
            c_in = self.channels(r)
        c0 = self.head_channels(self.shared_resolution)
        head = conv(self.shared_channels, c0) + conv(c0, self.texture_plane_channels, 1)
        c_in = c0
        for r in self.head_resolutions:
            c = self.head_channels(r)
            head += conv(c_in, c) + conv(c, c) + conv(c, self.texture_plane_channels, 1)
            c_in = c
        params += 3 * head
        h = self.decoder_hidden
        params += (self.plane_feature_dim(self.semantic_plane_channels) + 1) * h + (h + 1) * (1 + self.num_classes)
        params += (self.plane_feature_dim(self.texture_plane_channels) + 1) * h + (h + 1) * self.feature_channels
        s0, s1 = self.sr_channels
        k = self.num_classes
        params += conv(self.feature_channels + k, s0) + conv(s0, s0) + conv(s0, 3, 1) + conv(s0, k, 1) \
            + conv(s0, s1) + conv(s1, s1) + conv(s1, 3, 1) + conv(s1, k, 1)
        if self.background_hidden:
            from ide3d_core.networks.background import parameter_count

            params += parameter_count(w, self.background_hidden)
        if self.detail_levels:
            from ide3d_core.networks import detail

            params += detail.parameter_count(self.detail_levels, self.detail_log2_table, self.detail_features,
                                             self.detail_hidden, k)

        p2 = self.plane_resolution ** 2
        act = 3 * (self.semantic_plane_channels + self.texture_plane_channels) * p2
        act += max([self.channels(r) * r * r for r in self.shape_resolutions] + [0]) * 3
        act += 3 * max([self.head_channels(r) * r * r for r in self.head_resolutions] + [0]) * 3
        samples = self.neural_resolution ** 2 * (self.coarse_samples + self.fine_samples)
        width = 3 * (self.semantic_plane_channels + self.texture_plane_channels) + 2 * h \
            + 1 + k + self.feature_channels
        act += samples * width * 2
        r = self.img_resolution
        act += (r // 2) ** 2 * s0 * 3 + r * r * (s1 * 3 + 2 * (3 + k))
        return 4 * params, 4 * act

    def check_memory(self, max_bytes: int | None = None) -> None:
        """Raise :class:`ConfigError` when :meth:`memory_estimate` exceeds ``max_bytes`` (default
        :data:`MAX_MODEL_BYTES`). Called on every config read from a file, before the generator is built."""
        limit = MAX_MODEL_BYTES if max_bytes is None else max_bytes
        params, act = self.memory_estimate()
        if params + act > limit:
            raise ConfigError(f"generator config needs about {params / 2**30:.1f} GiB of parameters and "
                              f"{act / 2**30:.1f} GiB of activations, above the {limit / 2**30:.0f} GiB limit")

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        """Strict: unknown or missing keys, wrong types and out-of-range values raise
        :class:`ConfigError` (a ``ValueError``) naming the field; lists become tuples."""
        if not isinstance(data, dict):
            raise ConfigError(f"generator config must be a JSON object, got {type(data).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        missing = sorted(set(names) - set(data) - set(OPTIONAL_KEYS))
        if unknown or missing:
            unknown = [k if len(k) <= 40 else k[:37] + "..." for k in unknown[:5]]
            raise ConfigError(f"generator config: unknown keys {unknown}, missing keys {missing[:5]}")
        kwargs = {**OPTIONAL_KEYS, **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorConfig":
        return cls.from_dict(json.loads(text))


#: ``paper``: 512 px output, 64 px neural rendering (128 via ``neural_resolution``), 256 px planes,
#: 64 x 64 x 64 shared map, 48 + 48 samples, 18 codes (8 shape + 10 texture).
PAPER = GeneratorConfig()

#: ``default``: the shipped CPU model: 256 px output from 64 px rendering, 128 px planes.
#: ``z_dim`` 128: the bundled model is distilled from the procedural heads, whose 121 random draws each
#: read one latent coordinate (training/distill.py); with 512 coordinates, 391 would be pure noise in
#: ``w`` that the regression must first learn to ignore (it stalled on the mean head for 860 steps).
DEFAULT = GeneratorConfig(
    z_dim=128, channel_base=8192, channel_max=256, shared_resolution=32, shared_channels=64,
    head_channel_base=4096, head_channel_max=128, plane_resolution=128,
    semantic_plane_channels=16, texture_plane_channels=16,
    neural_resolution=64, img_resolution=256, coarse_samples=32, fine_samples=32,
    sr_channels=(64, 32),
)

#: ``tiny``: unit tests (forward well under a second on 2 CPU cores).
TINY = GeneratorConfig(
    z_dim=32, w_dim=32, channel_base=256, channel_max=32, shared_resolution=8, shared_channels=16,
    head_channel_base=128, head_channel_max=16, plane_resolution=16,
    semantic_plane_channels=8, texture_plane_channels=8, decoder_hidden=16,
    neural_resolution=16, img_resolution=32, coarse_samples=8, fine_samples=8,
    sr_channels=(16, 8),
)

CONFIGS: dict[str, GeneratorConfig] = {"tiny": TINY, "default": DEFAULT, "paper": PAPER}
