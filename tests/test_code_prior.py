# SPDX-License-Identifier: GPL-3.0-or-later
"""The code prior that replaces the mapping network of auto-decoded models (ide3d_core.networks.prior).

Truth: the mixture's analytic moments, the independence of the two groups' z coordinates, and the
generator's architecture (density and semantics read only the shape planes)."""
import dataclasses

import numpy as np
import pytest
import torch

from ide3d_core.networks import Generator
from ide3d_core.networks.config import TINY, GeneratorConfig
from ide3d_core.networks.mapping import mix_shape_texture
from ide3d_core.networks.prior import CodePrior
from training.autodecoder.prior import fit_gmm, fit_group

DIM, K = 4, 3


def fitted_prior(w_dim=32, seed=0) -> CodePrior:
    """A prior with a random orthonormal basis and a well separated mixture."""
    g = torch.Generator().manual_seed(seed)
    p = CodePrior(z_dim=32, w_dim=w_dim, num_shape_ws=4, num_ws=10, dim=DIM, components=K)
    with torch.no_grad():
        for grp in range(2):
            q, _ = torch.linalg.qr(torch.randn(w_dim, DIM, generator=g))
            p.basis[grp] = q.T
            p.mean[grp] = torch.randn(w_dim, generator=g)
            p.mix_weights[grp] = torch.tensor([0.5, 0.3, 0.2])
            p.loc[grp] = torch.randn(K, DIM, generator=g) * 3
            p.scale[grp] = torch.rand(K, DIM, generator=g) + 0.2
        p.w_avg.copy_(p.mean.mean(0))
    return p


@torch.no_grad()
def test_standard_normal_z_draws_the_mixture():
    p = fitted_prior()
    z = torch.randn(200_000, 32, generator=torch.Generator().manual_seed(1))
    w_s, w_t = p.group_codes(z)
    for grp, w in enumerate((w_s, w_t)):
        coords = ((w - p.mean[grp]) @ p.basis[grp].T).double()
        pi, mu, sd = p.mix_weights[grp].double(), p.loc[grp].double(), p.scale[grp].double()
        mean = (pi[:, None] * mu).sum(0)
        second = (pi[:, None] * (sd ** 2 + mu ** 2)).sum(0)
        assert torch.allclose(coords.mean(0), mean, atol=0.03)
        assert torch.allclose(coords.var(0), second - mean ** 2, rtol=0.03)
        # codes live in the basis' span around the mean
        resid = (w - p.mean[grp]) - ((w - p.mean[grp]) @ p.basis[grp].T) @ p.basis[grp]
        assert float(resid.abs().max()) < 1e-4


@torch.no_grad()
def test_groups_read_disjoint_z_coordinates_and_truncation_pulls_to_each_group_mean():
    p = fitted_prior()
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    z2 = z.clone()
    z2[:, 1 + DIM:] = torch.randn(5, 32 - 1 - DIM)  # new texture coordinates only
    ws, ws2 = p(z), p(z2)
    assert torch.equal(ws[:, :4], ws2[:, :4]) and not torch.allclose(ws[:, 4:], ws2[:, 4:])
    assert torch.equal(ws[:, 0], ws[:, 3]) and torch.equal(ws[:, 4], ws[:, 9])
    zero = p(z, truncation_psi=0.0)
    assert torch.allclose(zero[:, 0], p.mean[0].expand(5, -1)) and torch.allclose(zero[:, 5], p.mean[1].expand(5, -1))
    half = p(z, truncation_psi=0.5)
    assert torch.allclose(half, 0.5 * (ws + zero), atol=1e-5)
    assert torch.equal(p.average_ws(2)[:, :4], p.mean[0].expand(2, 4, -1))


def test_config_and_generator_with_a_prior():
    cfg = dataclasses.replace(TINY, code_prior_dim=DIM, code_prior_components=K)
    old = TINY.to_dict()
    del old["code_prior_dim"], old["code_prior_components"]
    assert GeneratorConfig.from_dict(old) == TINY  # files written before the prior still load
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="code_prior_dim"):
        dataclasses.replace(TINY, code_prior_dim=20, code_prior_components=2)  # z_dim 32 < 42
    G = Generator(cfg).eval()
    assert isinstance(G.mapping, CodePrior)
    with torch.no_grad():
        G.mapping.load_state_dict(fitted_prior().state_dict())
        a, b = G.codes_from_seeds([0, 1]), G.codes_from_seeds([0, 1])
        assert torch.equal(a, b)  # seeds name heads
        ws = mix_shape_texture(a, G.codes_from_seeds([5, 6]), G.num_shape_ws)
        pts = torch.rand(2, 300, 3) - 0.5
        f1, f2 = G.query(G.planes(a), pts), G.query(G.planes(ws), pts)
        assert torch.equal(f1.sigma, f2.sigma) and torch.equal(f1.semantic, f2.semantic)
        assert not torch.allclose(f1.features, f2.features)


def test_gmm_and_pca_fit_recover_a_known_mixture():
    rng = np.random.default_rng(0)
    locs = np.array([[-4.0, 0.0], [4.0, 1.0]])
    x = np.concatenate([rng.normal(locs[0], 0.5, (600, 2)), rng.normal(locs[1], 1.0, (400, 2))])
    w, loc, sd = fit_gmm(x, 2, seed=0)
    order = np.argsort(loc[:, 0])
    assert np.allclose(w[order], [0.6, 0.4], atol=0.03)
    assert np.allclose(loc[order], locs, atol=0.15)
    assert np.allclose(sd[order], [[0.5, 0.5], [1.0, 1.0]], atol=0.1)
    codes = rng.normal(size=(300, 3)) @ np.diag([5.0, 1.0, 0.01]) @ np.linalg.qr(rng.normal(size=(3, 16)).T)[0].T
    gp = fit_group(codes + 2.0, dim=2, components=1)
    assert gp.explained > 0.99 and gp.basis.shape == (2, 16)
    assert np.allclose(gp.basis @ gp.basis.T, np.eye(2), atol=1e-8)


def test_default_truncation_is_none_for_a_prior_and_stylegans_for_a_mapping(tmp_path):
    """A prior is fitted to the training codes and samples untruncated; a mapping network keeps 0.7.
    ``ide3d generate`` without ``--truncation`` writes the codes of that default."""
    import numpy as np

    from ide3d_core.cli import main
    from ide3d_core.networks import save_generator

    assert Generator(TINY).default_truncation == 0.7
    G = Generator(dataclasses.replace(TINY, code_prior_dim=DIM, code_prior_components=K)).eval()
    with torch.no_grad():
        G.mapping.load_state_dict(fitted_prior().state_dict())
    assert G.default_truncation == 1.0
    save_generator(G, tmp_path / "model")
    assert main(["generate", "--model", str(tmp_path / "model"), "--seeds", "3", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    ws = np.load(tmp_path / "out" / "seed0003_ws.npy")
    with torch.no_grad():
        untruncated, truncated = G.codes_from_seeds([3], 1.0)[0].numpy(), G.codes_from_seeds([3], 0.7)[0].numpy()
    assert np.allclose(ws, untruncated, atol=1e-6) and not np.allclose(ws, truncated, atol=1e-3)
