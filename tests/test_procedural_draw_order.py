# SPDX-License-Identifier: GPL-3.0-or-later
"""The order of the procedural heads' random draws is pinned: the bundled model's training heads (its
auto-decoder bank, its distillation targets) are ``heads_from_latent`` of stored latents, so a refactor of
``training/procedural/anatomy.py`` that moved one draw would silently change every head of that set.

Two kinds of check:
* independent truth: coordinate ``k`` of ``z`` is the ``k``-th draw (the documented contract), so the first
  eight coordinates set the traits by the inverse CDF of the module's probability tables, computed here by
  hand; a coordinate past ``LATENT_DRAWS`` changes nothing;
* bit-for-bit regression guard: SHA-256 digests of every tensor of the heads for fixed latents and seeds.
  The expected digests were computed by :func:`_digest` on anatomy.py as of commit 7a7adf0 (before
  ``_build_heads`` was split into focused functions), with torch 2.13 CPU:
  ``nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python -c "from tests.test_procedural_draw_order import
  _current_digests; print(_current_digests())"``.
"""
from __future__ import annotations

import hashlib
from dataclasses import fields
from statistics import NormalDist

import pytest
import torch

from training.procedural import anatomy
from training.procedural.anatomy import LATENT_DRAWS, heads_from_latent, sample_heads
from training.procedural.heads import HeadBatch

#: LATENT_DRAWS and the digests of anatomy.py at commit 7a7adf0 (see the module docstring).
EXPECTED_DRAWS = 121
EXPECTED = {
    "latent_seed1234_b5": "30124b77ce76fd649ec7dcab4bb35868552190462af40ebc522d5aad8b0ff74b",
    "latent_zero_b1": "0320bc98b9c02e1ad51f053963f7044fb9e7dff47d6825c23d012681b9a13982",
    "sample_seed0_n6": "460f7b1679721379a5116c4d7390ca0ce3fece9a0f78f477fb9eec8e97d5d43d",
    "sample_seed7_n3_symmetric": "161d38428a25d843745260a5b16b3c39532d01203a453e14d55c9865ecfc069e",
}


def _digest(heads: HeadBatch) -> str:
    """SHA-256 over every field of ``heads`` (tensors as their bytes, in field order; traits by name)."""
    h = hashlib.sha256()
    for f in fields(heads):
        value = getattr(heads, f.name)
        if f.name == "traits":
            for k in sorted(value):
                h.update(k.encode())
                h.update(value[k].contiguous().numpy().tobytes())
        elif torch.is_tensor(value):
            h.update(f"{f.name}{tuple(value.shape)}{value.dtype}".encode())
            h.update(value.contiguous().numpy().tobytes())
        else:
            h.update(f"{f.name}={value!r}".encode())
    return h.hexdigest()


def _current_digests() -> dict[str, str]:
    z = torch.randn(5, 512, generator=torch.Generator().manual_seed(1234))
    return {
        "latent_seed1234_b5": _digest(heads_from_latent(z)),
        "latent_zero_b1": _digest(heads_from_latent(torch.zeros(1, LATENT_DRAWS))),
        "sample_seed0_n6": _digest(sample_heads(6, torch.Generator().manual_seed(0))),
        "sample_seed7_n3_symmetric": _digest(sample_heads(3, torch.Generator().manual_seed(7), symmetric=True)),
    }


def test_draw_count_is_pinned():
    assert LATENT_DRAWS == EXPECTED_DRAWS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_heads_are_bit_for_bit_those_of_the_pinned_draw_order(name):
    assert _current_digests()[name] == EXPECTED[name]


def _z_for(u: float) -> float:
    """The standard-normal coordinate whose uniform ``Phi(z)`` is ``u``."""
    return NormalDist().inv_cdf(u)


def _inverse_cdf(probs, u: float) -> int:
    """The category a uniform ``u`` picks from ``probs`` (first index whose cumulative share exceeds ``u``)."""
    total, acc = sum(probs), 0.0
    for i, p in enumerate(probs):
        acc += p / total
        if u < acc:
            return i
    return len(probs) - 1


@pytest.mark.parametrize("u", [0.03, 0.27, 0.52, 0.81, 0.97])
def test_the_first_coordinates_are_the_trait_draws_in_order(u):
    """Coordinates 0..7 drive hair style, hat, glasses, earrings, necklace, open mouth, collar and cloth
    pattern, in that order, by the inverse CDF of the module's tables; the same uniform at another
    coordinate would pick a different category, so the order itself is checked."""
    tables = [anatomy.HAIR_STYLE_P, anatomy.HAT_P, anatomy.GLASSES_P, anatomy.EARRING_P,
              (1 - anatomy.NECKLACE_P, anatomy.NECKLACE_P), (1 - anatomy.MOUTH_OPEN_P, anatomy.MOUTH_OPEN_P),
              anatomy.COLLAR_P, anatomy.CLOTH_PATTERN_P]
    names = ["hair_style", "hat", "glasses", "earrings", "necklace", "mouth_open", "collar", "cloth_pattern"]
    # head j puts u at coordinate j and the median elsewhere, so only trait j moves away from its median value
    z = torch.zeros(len(names), LATENT_DRAWS, dtype=torch.float64)
    for j in range(len(names)):
        z[j, j] = _z_for(u)
    heads = heads_from_latent(z)
    for j, (name, probs) in enumerate(zip(names, tables)):
        if name in ("necklace", "mouth_open"):  # Bernoulli: ``u < p`` is True
            expected = [int(0.5 < probs[1])] * len(names)
            expected[j] = int(u < probs[1])
        else:
            expected = [_inverse_cdf(probs, 0.5)] * len(names)
            expected[j] = _inverse_cdf(probs, u)
        assert heads.traits[name].tolist() == expected, name


def test_coordinates_past_the_draws_change_nothing():
    z = torch.randn(2, LATENT_DRAWS + 8, generator=torch.Generator().manual_seed(3))
    z2 = z.clone()
    z2[:, LATENT_DRAWS:] = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    assert _digest(heads_from_latent(z)) == _digest(heads_from_latent(z2))
    # the last draw is the background pattern (0.4, 0.3, 0.3): u ~ 0.001 picks 0, u ~ 0.999 picks 2
    lo, hi = z.clone(), z.clone()
    lo[:, LATENT_DRAWS - 1], hi[:, LATENT_DRAWS - 1] = -3.0, 3.0
    assert heads_from_latent(lo).background[:, 6].tolist() == [0.0, 0.0]
    assert heads_from_latent(hi).background[:, 6].tolist() == [2.0, 2.0]
