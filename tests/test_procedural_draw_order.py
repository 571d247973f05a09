# SPDX-License-Identifier: GPL-3.0-or-later
"""The order of the procedural heads' random draws is pinned: the bundled model's training heads (its
auto-decoder bank, its distillation targets) are ``heads_from_latent`` of stored latents, so a refactor of
``training/procedural/anatomy.py`` that moved one draw would silently change every head of that set.

Two kinds of check:
* independent truth: coordinate ``k`` of ``z`` is the ``k``-th draw (the documented contract), so the first
  eight coordinates set the traits by the inverse CDF of the module's probability tables, computed here by
  hand; a coordinate past ``LATENT_DRAWS`` changes nothing;
* regression guard: the discrete fields (traits, labels, slots, active parts, materials, symmetry) are
  compared bit for bit by SHA-256; every float field by a float64 fingerprint (sum, sum of magnitudes and a
  fixed-weight projection) to a relative 1e-5. A moved draw changes these by orders more than that; an
  exact digest of the floats was tried first and broke when the same torch 2.13 CPU wheel ran on another
  machine (one-ulp differences in trigonometry), with anatomy.py unchanged.
  anatomy.py was pinned bit for bit at commit 7a7adf0 and is unchanged since fe292ca (which passed that
  pin); the fingerprints were recomputed on that code, torch 2.13 CPU:
  ``.venv/bin/python -c "from tests.test_procedural_draw_order import _current_fingerprints as f;
  import pprint; pprint.pprint(f())"``.
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

#: LATENT_DRAWS and the fingerprints of anatomy.py (see the module docstring).
EXPECTED_DRAWS = 121
EXPECTED: dict = {'latent_seed1234_b5': {'background': [15.966751911, 15.966751911, 2.30487102],
                        'centre': [4.160678851, 45.033298311, -0.08079354],
                        'colour1': [258.216502756, 258.216502756, -3.863147948],
                        'colour2': [218.451645114, 218.451645114, -2.860879335],
                        'discrete': '7d0086229500effbda65ceffa9f02f5e6ee6b8e7c7b3448a64ade37090a8215f',
                        'inv_radii': [31153.540591002, 31153.540591002, -1414.334117614],
                        'light': [6.750087321, 8.049773157, -0.770443755],
                        'param': [295.06283119, 295.06283119, -25.281197693],
                        'planes': [-18.910547418, 159.080153327, -11.726483716],
                        'rot': [523.617211376, 609.458833821, -0.538254998]},
 'latent_zero_b1': {'background': [4.065625012, 4.065625012, 0.848633897],
                    'centre': [0.906170065, 8.976190122, 0.16593172],
                    'colour1': [55.824700419, 55.824700419, -0.939361635],
                    'colour2': [46.010200806, 46.010200806, -2.163538775],
                    'discrete': 'bff7a396c3a0b91a5c5bc26afab139382f3bbe2e4db2f3266f7bad9749a35d84',
                    'inv_radii': [6184.116716146, 6184.116716146, -1168.784468883],
                    'light': [1.33233431, 1.33233431, 1.067063427],
                    'param': [53.049475031, 53.049475031, -42.930438705],
                    'planes': [-4.036161313, 31.805877699, 2.47035456],
                    'rot': [104.82197467, 121.773427301, 0.618548445]},
 'sample_seed0_n6': {'background': [26.736712635, 26.736712635, 0.751681692],
                     'centre': [6.543311489, 54.3566075, -0.524920257],
                     'colour1': [355.586967908, 355.586967908, 9.003899297],
                     'colour2': [301.776293989, 301.776293989, 8.905981305],
                     'discrete': '972157a3eb1359316ea267398d13df7f74a8dec845b4127f332a6f5f066f25f4',
                     'inv_radii': [36870.385612726, 36870.385612726, -50.940391773],
                     'light': [7.666404895, 9.367301859, 0.923150773],
                     'param': [302.903047368, 302.903047368, -14.370790896],
                     'planes': [-24.018439567, 190.599854477, -11.407867006],
                     'rot': [627.976326875, 733.568183042, -1.335592124]},
 'sample_seed7_n3_symmetric': {'background': [12.37315762, 12.37315762, 1.605068266],
                               'centre': [3.166706643, 27.081090183, -0.322420139],
                               'colour1': [155.179281261, 155.179281261, -4.440245283],
                               'colour2': [138.228477877, 138.228477877, -4.243005652],
                               'discrete': '21cef07f4fe969d1a769c33a6c53aa5973653bb462a8b6c9722c5213987f4cb8',
                               'inv_radii': [18314.053070784, 18314.053070784, 75.085148041],
                               'light': [3.891797513, 3.891797513, -0.327564204],
                               'param': [171.202413916, 171.202413916, 2.798192819],
                               'planes': [-13.199469667, 96.183670413, -1.403149521],
                               'rot': [314.406506061, 365.371236692, 0.861551014]}}
RTOL = 1e-5


def _digest(heads: HeadBatch) -> str:
    """SHA-256 over every field of ``heads`` (tensors as their bytes, in field order; traits by name): exact
    within one process, used to show that unused coordinates change nothing."""
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


def _fingerprint(heads: HeadBatch) -> dict:
    """``{"discrete": sha256 of the traits, integer/bool fields and plain values, field: [sum, sum |x|,
    sum x * cos(0.37 i)], ...}`` with the float sums in float64 over the flattened field."""
    h = hashlib.sha256()
    out: dict = {}
    for f in fields(heads):
        value = getattr(heads, f.name)
        if f.name == "traits":
            for k in sorted(value):
                h.update(k.encode())
                h.update(value[k].contiguous().numpy().tobytes())
        elif torch.is_tensor(value) and value.is_floating_point():
            x = value.detach().double().flatten()
            w = torch.cos(0.37 * torch.arange(x.numel(), dtype=torch.float64))
            out[f.name] = [round(float(v), 9) for v in (x.sum(), x.abs().sum(), (x * w).sum())]
        elif torch.is_tensor(value):
            h.update(f"{f.name}{tuple(value.shape)}{value.dtype}".encode())
            h.update(value.contiguous().numpy().tobytes())
        else:
            h.update(f"{f.name}={value!r}".encode())
    out["discrete"] = h.hexdigest()
    return out


def _current_fingerprints() -> dict[str, dict]:
    z = torch.randn(5, 512, generator=torch.Generator().manual_seed(1234))
    return {
        "latent_seed1234_b5": _fingerprint(heads_from_latent(z)),
        "latent_zero_b1": _fingerprint(heads_from_latent(torch.zeros(1, LATENT_DRAWS))),
        "sample_seed0_n6": _fingerprint(sample_heads(6, torch.Generator().manual_seed(0))),
        "sample_seed7_n3_symmetric": _fingerprint(sample_heads(3, torch.Generator().manual_seed(7),
                                                               symmetric=True)),
    }


def test_draw_count_is_pinned():
    assert LATENT_DRAWS == EXPECTED_DRAWS


@pytest.mark.parametrize("name", ["latent_seed1234_b5", "latent_zero_b1", "sample_seed0_n6",
                                  "sample_seed7_n3_symmetric"])
def test_heads_match_the_pinned_draw_order(name):
    got, want = _current_fingerprints()[name], EXPECTED[name]
    assert got["discrete"] == want["discrete"]
    assert sorted(got) == sorted(want)
    for field, sums in want.items():
        if field != "discrete":
            scale = max(abs(sums[1]), 1e-3)  # sum |x| bounds every sum's size
            for g, e in zip(got[field], sums):
                assert abs(g - e) <= RTOL * scale, (field, got[field], sums)


def test_the_guard_sees_a_moved_draw():
    """Swapping two latent coordinates (what moving one draw does) changes the fingerprints far beyond
    the tolerance, so the guard can fail."""
    z = torch.randn(2, LATENT_DRAWS, generator=torch.Generator().manual_seed(5))
    moved = z.clone()
    moved[:, [40, 41]] = z[:, [41, 40]]
    a, b = _fingerprint(heads_from_latent(z)), _fingerprint(heads_from_latent(moved))
    worst = max(abs(x - y) / max(abs(a[k][1]), 1e-3) for k in a if k != "discrete" for x, y in zip(a[k], b[k]))
    assert worst > 100 * RTOL


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
