# SPDX-License-Identifier: GPL-3.0-or-later
"""The environment background: a colour for every ray that leaves the head, from its direction and the
texture code.

Why: the tri-plane volume covers only the head's box, so rays that miss the head composite to zero
features and the super-resolution had to paint the backdrop from its codes and the head's surroundings.
It paints a flat average colour: stripes, blotches and gradients are lost, and from a new view the
backdrop cannot follow the camera. Measured on the bundled model (8 held-out heads inverted from yaw 20,
views at -40/0/+40; docs/generator.md, "Environment background"): the pixels off the head carried most
of the novel-view error, and with them right the whole-image PSNR would rise from 21.5 to about 26.9 dB.

*Decision (reference: none; IDE-3D renders FFHQ backgrounds with the volume and the super-resolution):*
the background is an environment at infinity, ``rgb = f(d, w_bg)`` for a unit world ray direction ``d``
and the mean texture code ``w_bg`` (appearance belongs to ``w_t``; the shape code never sees it, so
density and semantics still depend on ``w_s`` alone). ``f`` is a small MLP over a Fourier encoding of
``d`` giving a few pattern channels shared by every head, mixed into RGB by a matrix that is an affine
map of ``w_bg`` (:class:`EnvironmentBackground`). A function of the
direction alone is what a backdrop far behind the subject is, so the same code gives a backdrop that
turns correctly with any camera (orbit, Blender's free cameras), and a backdrop seen from one photo
predicts the others.

*Decision:* the backdrop reads the texture code but never pulls on it (the code is detached): the head's
pixels decide the code. A portrait's backdrop is instead solved in closed form from its views' background
pixels (:func:`solve_mixing`, :mod:`ide3d_core.inversion.backdrop`) and fixed in the portrait's generator
(:meth:`EnvironmentBackground.fix_mixing`), so a photo's backdrop cannot trade against its head's texture
and editing the head never moves it.
The map from codes to mixings serves generated heads; the encoders' codes carry almost nothing of a
backdrop, so it gives them a plausible average one.

Compositing (:func:`composite_background`): after the super-resolution, with the super-resolved
semantics' background probability as the matte (detached), ``image + p_bg (background - image)``: the
labels and the RGB agree on what is head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import rays_from_labels
from ide3d_core.networks.layers import FullyConnected

#: Octaves of the direction's Fourier encoding: ``sin/cos(2^k pi d)``, k = 0 .. OCTAVES - 1 (a band
#: of stripes over the field of view needs about 2^6).
OCTAVES = 7
#: Shared pattern channels of the environment (the procedural backdrops need 4: grain, and grain times
#: each of three patterns).
PATTERNS = 8


def encode_directions(dirs: torch.Tensor, octaves: int = OCTAVES) -> torch.Tensor:
    """``[..., 3]`` unit directions -> ``[..., 3 + 6 octaves]``: the direction and its sines and cosines."""
    freqs = (2.0 ** torch.arange(octaves, device=dirs.device, dtype=dirs.dtype)) * math.pi
    x = dirs[..., None, :] * freqs[:, None]  # [..., K, 3]
    return torch.cat([dirs, x.sin().flatten(-2), x.cos().flatten(-2)], dim=-1)


def parameter_count(w_dim: int, hidden: int, patterns: int = PATTERNS, octaves: int = OCTAVES) -> int:
    """Parameters of an :class:`EnvironmentBackground` (weights and biases of its four layers)."""
    return ((3 + 6 * octaves + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * patterns
            + (w_dim + 1) * 3 * (patterns + 1))


class EnvironmentBackground(nn.Module):
    """``(dirs [B, N, 3] unit world directions, w [B, w_dim]) -> rgb [B, N, 3]`` (image range [-1, 1],
    not clamped).

    ``rgb = M(w) phi(d) + b(w)``: ``phi`` is a small MLP over the Fourier encoding of ``d`` giving
    ``patterns`` pattern channels **shared by every head**; only the ``3 x patterns`` mixing matrix and
    the bias come from the code. *Decision (measured, docs/generator.md):* a network whose hidden layers
    the code modulates (FiLM) memorised each head's seen directions (36 dB on them) and guessed the rest
    (22 dB on other views of the same heads); shared patterns must explain every head's backdrop at once,
    so what one view shows of a pattern holds in the others. A backdrop that is a blend of two colours by
    a pattern, shaded by a grain (the procedural heads' kind), is exactly of this form."""

    def __init__(self, w_dim: int, hidden: int, patterns: int = PATTERNS, octaves: int = OCTAVES) -> None:
        super().__init__()
        self.octaves, self.patterns = octaves, patterns
        self.fc0 = FullyConnected(3 + 6 * octaves, hidden, activation="lrelu")
        self.fc1 = FullyConnected(hidden, hidden, activation="lrelu")
        self.pattern = FullyConnected(hidden, patterns)
        self.mix = FullyConnected(w_dim, 3 * (patterns + 1), weight_init=0.1)

    def patterns_of(self, dirs: torch.Tensor) -> torch.Tensor:
        """``[..., 3]`` directions -> ``[..., patterns]`` shared pattern values."""
        return self.pattern(self.fc1(self.fc0(encode_directions(dirs, self.octaves))))

    def mixing(self, w: torch.Tensor) -> torch.Tensor:
        """``[B, w_dim]`` codes -> ``[B, 3, patterns + 1]`` mixing matrices, the bias in the last column. The
        code is read, never pulled on (detached): see the module docstring."""
        return self.mix(w.detach().to(self.mix.weight.dtype)).reshape(-1, 3, self.patterns + 1)

    def fix_mixing(self, mixing: torch.Tensor) -> None:
        """Make every code's mixing matrix ``mixing [3, patterns + 1]``: a portrait's own backdrop
        (:func:`solve_mixing`), which no later change of its codes (a restyle, a global style) moves."""
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.bias.copy_((mixing.reshape(-1) / self.mix.lr_mult).to(self.mix.bias))

    def forward(self, dirs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if dirs.ndim != 3 or dirs.shape[-1] != 3 or w.ndim != 2 or w.shape[0] != dirs.shape[0]:
            raise ValueError(f"need dirs [B, N, 3] and w [B, w_dim], got {tuple(dirs.shape)}, {tuple(w.shape)}")
        m = self.mixing(w).to(dirs.dtype)
        return mix_patterns(self.patterns_of(dirs), m)

    def render(self, c: torch.Tensor, w: torch.Tensor, resolution: int, camera_grad: bool = False) -> torch.Tensor:
        """The backdrop seen by cameras ``c [B, 25]``: ``[B, 3, resolution, resolution]``. Evaluated at half
        the resolution and upsampled bilinearly (the backdrops are smooth at that scale; a quarter of the
        cost).

        ``camera_grad``: whether the backdrop pulls on the cameras (default: no). *Decision (measured,
        docs/multiview.md):* inversion solves a portrait's mixing under the cameras of the moment. With
        one view that mixing agrees with its camera by construction, and the backdrop holds a refined pose
        near it: issue 14's evaluation scored 26.06 dB with the pull, 25.52 without. With several views
        whose poses are refined, the mixing is a compromise between cameras that are still wrong, and the
        pull holds them there: with 3 degrees of pose noise, three views fell below one (25.86 vs 26.23 dB);
        without it, 26.75. So :class:`~ide3d_core.inversion.objective.Objective` asks for it with one view
        only."""
        r = max(4, resolution // 2)
        _origins, dirs = rays_from_labels((c if camera_grad else c.detach()).to(torch.float32), r, r)
        rgb = self(dirs, w.float())
        img = rgb.permute(0, 2, 1).reshape(c.shape[0], 3, r, r)
        if r != resolution:
            img = F.interpolate(img, size=(resolution, resolution), mode="bilinear", align_corners=False)
        return img


def mix_patterns(phi: torch.Tensor, mixing: torch.Tensor) -> torch.Tensor:
    """``phi [B, N, K]`` pattern values and ``mixing [B, 3, K + 1]`` (bias last) -> ``[B, N, 3]`` RGB."""
    return torch.einsum("bnk,bck->bnc", phi, mixing[..., :-1]) + mixing[:, None, :, -1]


def solve_mixing(phi: torch.Tensor, rgb: torch.Tensor, prior: torch.Tensor, strength: float = 1e-4) -> torch.Tensor:
    """The mixing matrix that best explains observed backdrop pixels: ridge least squares, closed form.

    ``phi [P, K]`` pattern values at the pixels' directions, ``rgb [P, 3]`` their colours (image range),
    ``prior [3, K + 1]`` the mixing to fall back on where the pixels say nothing (the code's), ``strength``
    the pull towards it per pixel. Returns ``[3, K + 1]`` minimising
    ``sum_p |M [phi_p, 1] - rgb_p|^2 + strength P |M - prior|^2``.

    *Decision (measured, docs/generator.md "Environment background"):* the shared patterns are fixed and
    only the 3 (K + 1) mixing numbers are per head, so one view's backdrop determines them and the
    patterns carry them to directions that view never saw: on 64 held-out bank heads, solved from the
    128 px view, the other views' backdrops scored 28.6 dB (a flat colour: 18.7 dB). A strength of 1e-4
    was best of 0 / 1e-4 / 1e-3 / 1e-2 (1e-2 lost 4 dB)."""
    if phi.ndim != 2 or rgb.shape != (phi.shape[0], 3) or prior.shape != (3, phi.shape[1] + 1):
        raise ValueError(f"need phi [P, K], rgb [P, 3], prior [3, K + 1]; got {tuple(phi.shape)}, "
                         f"{tuple(rgb.shape)}, {tuple(prior.shape)}")
    a = torch.cat([phi, phi.new_ones(phi.shape[0], 1)], 1).double()  # [P, K + 1]
    reg = (strength * phi.shape[0] + 1e-6) * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    m = torch.linalg.solve(a.T @ a + reg, a.T @ rgb.double() + reg @ prior.double().T)  # [K + 1, 3]
    return m.T.to(prior.dtype)


def composite_background(image: torch.Tensor, semantic: torch.Tensor, background: torch.Tensor,
                         background_class: int = 0) -> torch.Tensor:
    """``image [B, 3, H, W]`` over ``background [B, 3, H, W]`` with the matte ``p_bg``, the background
    class's probability in ``semantic [B, K, H, W]`` (logits): ``image + p_bg (background - image)``."""
    # the matte is the semantics' (fitted by their own losses): a backdrop that does not match yet must not
    # pull the silhouette (detached)
    p_bg = semantic.detach().float().softmax(dim=1)[:, background_class:background_class + 1]
    return image + p_bg.to(image.dtype) * (background.to(image.dtype) - image)
