# SPDX-License-Identifier: GPL-3.0-or-later
"""A pivotal-tuned generator stored as a difference from its base model, and the base model's identity.

:class:`WeightDelta` holds ``tuned - base`` for the tensors that changed; :func:`generator_fingerprint`
names the base model a delta (and a portrait document) applies to; :func:`generator_config` is the
JSON-able config a document records. Re-exported by :mod:`ide3d_core.portrait`.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ide3d_core.portrait_checks import PortraitError
from ide3d_core.weights_io import optional_state

#: dtype name of a stored delta -> its torch dtype
DELTA_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def generator_fingerprint(generator: nn.Module) -> str:
    """SHA-256 (hex, first 32 digits) of a module's state (names, dtypes, shapes and values).

    Identifies the base model a :class:`WeightDelta` applies to. An optional buffer
    (:func:`~ide3d_core.weights_io.optional_state`) that holds its default is left out, so adding one to
    the code does not change the identity of the models (and portraits) made before it."""
    defaults = optional_state(generator)
    h = hashlib.sha256()
    for name, t in sorted(generator.state_dict().items()):
        t = t.detach().cpu().contiguous()
        if name in defaults and t.shape == defaults[name].shape and torch.equal(t.float(), defaults[name].float()):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def generator_config(generator: nn.Module) -> dict[str, Any]:
    """A generator's config as the JSON-able dict a :class:`~ide3d_core.portrait.Portrait` records
    (``generator_config``): dataclass configs as dicts, plain dict configs as they are, anything else as ``{}``."""
    from dataclasses import asdict, is_dataclass

    cfg = getattr(generator, "config", None)
    if is_dataclass(cfg):
        return asdict(cfg)
    return dict(cfg) if isinstance(cfg, dict) else {}


@dataclass(frozen=True, eq=False)
class WeightDelta:
    """A tuned generator stored as ``tuned - base`` for the tensors that changed.

    Attributes:
        base_fingerprint: :func:`generator_fingerprint` of the base model.
        deltas: state-dict name -> delta tensor (``dtype``), only for tensors that differ.
        dtype: "float16" (half the size; the delta of a pivotal tuning is small, so its rounding error
            is ~1e-3 of the change, far below the change itself) or "float32".

    :meth:`apply` is deterministic, so the tuned generator a portrait uses is *defined* as
    ``apply(base)``: inversion returns exactly that module, and a loaded document reproduces it bit for
    bit.
    """

    base_fingerprint: str
    deltas: dict[str, torch.Tensor]
    dtype: str = "float16"

    @classmethod
    def between(cls, base: nn.Module, tuned: nn.Module, dtype: str = "float16") -> "WeightDelta":
        if dtype not in DELTA_DTYPES:
            raise ValueError(f"delta dtype must be one of {sorted(DELTA_DTYPES)}, got {dtype!r}")
        bs, ts = base.state_dict(), tuned.state_dict()
        if bs.keys() != ts.keys():
            raise ValueError("tuned and base generators have different parameters")
        deltas = {}
        for name, b in bs.items():
            t = ts[name]
            if t.shape != b.shape:
                raise ValueError(f"tensor {name} changed shape {tuple(b.shape)} -> {tuple(t.shape)}")
            if not torch.is_floating_point(b):
                if not torch.equal(b, t):
                    raise ValueError(f"non-float tensor {name} differs; cannot store it as a delta")
                continue
            d = (t.detach().float() - b.detach().float()).to(DELTA_DTYPES[dtype]).cpu()
            if bool(d.any()):
                deltas[name] = d.contiguous()
        return cls(generator_fingerprint(base), deltas, dtype)

    def apply(self, base: nn.Module, check: bool = True) -> nn.Module:
        """A copy of ``base`` with the deltas added (base is left untouched)."""
        if check and generator_fingerprint(base) != self.base_fingerprint:
            raise PortraitError("the portrait was tuned from a different base model "
                                f"(fingerprint {self.base_fingerprint}); load the model it was made with")
        tuned = copy.deepcopy(base)
        state = tuned.state_dict()
        unknown = set(self.deltas) - set(state)
        if unknown:
            raise PortraitError(f"weight delta names unknown tensors: {sorted(unknown)[:3]}")
        wrong = [n for n, d in self.deltas.items() if tuple(d.shape) != tuple(state[n].shape)]
        if wrong:
            n = wrong[0]
            raise PortraitError(f"weight delta {n} has shape {tuple(self.deltas[n].shape)}, the model's "
                                f"tensor {tuple(state[n].shape)} (the portrait does not fit this model)")
        with torch.no_grad():
            for name, d in self.deltas.items():
                t = state[name]
                t.copy_((t.float() + d.to(t.device).float()).to(t.dtype))
        return tuned

    @property
    def nbytes(self) -> int:
        return sum(d.numel() * d.element_size() for d in self.deltas.values())
