# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit the code prior (PCA + diagonal Gaussian mixture per code group) and export an auto-decoded model.

The exported generator folder is an ordinary ``ide3d-generator`` folder whose config has
``code_prior_dim > 0``: :class:`ide3d_core.networks.prior.CodePrior` replaces the mapping network, so
``codes_from_seeds`` draws new heads from the prior and everything downstream works unchanged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ide3d_core.networks.generator import Generator
from ide3d_core.networks.io import save_generator
from training.autodecoder.bank import bank_latents
from training.checkpoint import latest_checkpoint, load_checkpoint

#: Default PCA dimensions per group (z_dim 128 holds at most 63) and mixture components.
PRIOR_DIM = 48
PRIOR_COMPONENTS = 8
#: Bank heads shipped with an exported model (their latents and learned codes) and its file name.
FIT_EXAMPLES = 16
FIT_EXAMPLES_FILE = "fit_examples.safetensors"


@dataclass(frozen=True)
class GroupPrior:
    """One group's prior: ``mean [w_dim]``, ``basis [d, w_dim]`` (orthonormal rows), mixture
    ``weights [K]``, ``loc [K, d]``, ``scale [K, d]``, and the fraction of code variance the basis keeps."""

    mean: np.ndarray
    basis: np.ndarray
    weights: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    explained: float


def fit_gmm(x: np.ndarray, k: int, seed: int = 0, iters: int = 200, floor: float = 1e-4
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal Gaussian mixture by EM: ``x [N, d] -> (weights [k], loc [k, d], scale [k, d])``.

    Initialised from ``k`` distinct random points; variances floored at ``floor`` times each
    dimension's variance (no collapse onto one code)."""
    n, d = x.shape
    k = min(k, n)
    rng = np.random.default_rng(seed)
    loc = x[rng.choice(n, k, replace=False)].copy()
    var_floor = floor * x.var(0) + 1e-12
    var = np.tile(x.var(0), (k, 1))
    weights = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(iters):
        log_p = (-0.5 * (((x[:, None] - loc[None]) ** 2) / var[None] + np.log(2 * np.pi * var[None])).sum(-1)
                 + np.log(weights[None]))
        top = log_p.max(1, keepdims=True)
        ll = float((top[:, 0] + np.log(np.exp(log_p - top).sum(1))).mean())
        resp = np.exp(log_p - top)
        resp /= resp.sum(1, keepdims=True)
        nk = resp.sum(0) + 1e-9
        weights = nk / n
        loc = (resp.T @ x) / nk[:, None]
        var = np.maximum((resp.T @ (x * x)) / nk[:, None] - loc ** 2, var_floor)
        if ll - prev < 1e-6 * abs(ll):
            break
        prev = ll
    return weights, loc, np.sqrt(var)


def fit_group(codes: np.ndarray, dim: int, components: int, seed: int = 0) -> GroupPrior:
    """PCA of ``codes [N, w_dim]`` to ``dim`` directions, then a ``components``-mixture over them."""
    mean = codes.mean(0)
    centred = codes - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    dim = min(dim, vt.shape[0])
    basis = vt[:dim]
    explained = float((s[:dim] ** 2).sum() / max((s ** 2).sum(), 1e-12))
    weights, loc, scale = fit_gmm(centred @ basis.T, components, seed)
    return GroupPrior(mean, basis, weights, loc, scale, explained)


def write_fit_examples(folder: Path, z: torch.Tensor, codes: torch.Tensor) -> Path:
    """``folder/fit_examples.safetensors``: bank latents ``z [n, z_dim]`` and their learned codes
    ``codes [n, 2, w_dim]`` (float16): heads whose exact procedural truth is known
    (``heads_from_latent(z)``), for the model's tests and evaluation."""
    from ide3d_core.weights_io import save_safetensors

    return save_safetensors(folder / FIT_EXAMPLES_FILE, {"z": z.float().contiguous(),
                                                         "codes": codes.half().contiguous()})


def run_codes(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """``(generator tensors, codes [N, 2, w_dim], state)`` of a run's newest checkpoint."""
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint")
    tensors, state = load_checkpoint(path)
    g = {k[2:]: v for k, v in tensors.items() if k.startswith("G/")}
    codes = tensors["codes/embedding.weight"]
    return g, codes.view(codes.shape[0], 2, -1), state


def export_run(run_dir: str | Path, out: str | Path, dim: int = PRIOR_DIM,
               components: int = PRIOR_COMPONENTS) -> Path:
    """Fit the prior to a run's codes and write the generator folder ``out`` (float16 weights)."""
    import json

    from training.autodecoder.loop import CONFIG_FILE, AutoDecoderConfig
    from ide3d_core.networks.io import load_config

    cfg = AutoDecoderConfig.from_dict(json.loads((Path(run_dir) / CONFIG_FILE).read_text()))
    g_tensors, codes, state = run_codes(run_dir)
    base = load_config(cfg.init_from)
    # no environment background: the run has none (loop._training_generator), and a background kept from
    # the starting model's config would be exported with freshly initialised weights; ``ide3d
    # train-background`` adds it to the exported folder
    # nor a semantic logit adjustment: it belongs to the super-resolution it was fitted to
    gcfg = dataclasses.replace(base, code_prior_dim=dim, code_prior_components=components, background_hidden=0,
                               semantic_logit_bias=())
    G = Generator(gcfg)
    own = G.state_dict()
    for k, v in g_tensors.items():
        if not k.startswith("mapping.") and k in own:
            own[k].copy_(v)
    groups = [fit_group(codes[:, g].double().numpy(), dim, components, seed=g) for g in range(2)]
    prior = G.mapping
    with torch.no_grad():
        for g, gp in enumerate(groups):
            k = len(gp.weights)
            prior.mean[g] = torch.from_numpy(gp.mean).float()
            prior.basis[g, :gp.basis.shape[0]] = torch.from_numpy(gp.basis).float()
            prior.mix_weights[g] = 0
            prior.mix_weights[g, :k] = torch.from_numpy(gp.weights).float()
            d = gp.loc.shape[1]
            prior.loc[g, :k, :d] = torch.from_numpy(gp.loc).float()
            prior.scale[g, :k, :d] = torch.from_numpy(gp.scale).float()
        prior.w_avg.copy_(prior.mean.mean(0))
    folder = save_generator(G, out, dtype=torch.float16)
    write_fit_examples(Path(folder), bank_latents(cfg.bank)[:FIT_EXAMPLES], codes[:FIT_EXAMPLES])
    info = {"run": str(run_dir), "step": state["step"], "bank_size": cfg.bank.size,
            "explained_variance": [gp.explained for gp in groups], "prior_dim": dim,
            "prior_components": components}
    from ide3d_core.atomic_file import write_atomic

    write_atomic(Path(folder) / "prior_fit.json", (json.dumps(info, indent=2) + "\n").encode())
    return Path(folder)
