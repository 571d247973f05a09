# SPDX-License-Identifier: GPL-3.0-or-later
"""The batched head value (:class:`HeadBatch`) and the builder that assembles it from primitives.

A head is a fixed list of ``P`` primitive *slots* (the same for every head, so batches are dense
tensors): each slot has a label (ide3d_core.labels id), a material (how :mod:`.textures` paints it) and
per-head geometry (clipped quadric, see :mod:`.quadrics`), colours, a pattern parameter and an
``active`` flag (a bald head simply has its hair slots switched off).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum

import torch


class Material(IntEnum):
    """How a primitive's surface is painted (see :func:`training.procedural.textures.albedo`)."""

    SKIN = 0
    EYE = 1
    BROW = 2
    LIP = 3
    MOUTH = 4
    HAIR = 5
    CLOTH = 6
    HAT = 7
    LENS = 8
    FRAME = 9
    METAL = 10
    BEADS = 11


NUM_MATERIALS = len(Material)
#: HeadBatch fields shared by all heads of a batch (the slot layout).
_SHARED = ("plane_slots", "label", "material", "n_plain", "names")


@dataclass(frozen=True, eq=False)
class HeadBatch:
    """Parameters of ``B`` procedural heads with ``P`` primitive slots and ``L`` clipping planes.

    Geometry (model world, units of the head box [-0.5, 0.5]^3):
        centre (B, P, 3); rot (B, P, 3, 3) local axes as rows; inv_radii (B, P, 3) (0 = infinite axis);
        planes (B, L, 4) half-spaces ``n . x <= h``; plane_slots (P, 2) int64 (``L`` = none);
        active (B, P) bool.
    Appearance:
        label (P,) int64 class ids; material (P,) int64 :class:`Material`;
        colour1, colour2 (B, P, 3) linear-ish RGB in [0, 1]; param (B, P) material parameter (cloth
        pattern kind, blush strength, lens tint ...); light (B, 3) unit key-light direction (world);
        background (B, 7) two colours and a pattern kind; symmetric (B,) bool (textures use |x|).
    Bookkeeping:
        n_plain: the first ``n_plain`` slots have no clipping planes (the builder puts them first so the
        intersection skips their plane arithmetic); names: (P,) slot names ("l_eye", "hair_cap" ...);
        traits: name -> (B,) int64 tensors describing the head (hair style, hat kind, glasses ...),
        used by the class-frequency statistics and the docs.
    """

    centre: torch.Tensor
    rot: torch.Tensor
    inv_radii: torch.Tensor
    planes: torch.Tensor
    plane_slots: torch.Tensor
    active: torch.Tensor
    label: torch.Tensor
    material: torch.Tensor
    colour1: torch.Tensor
    colour2: torch.Tensor
    param: torch.Tensor
    light: torch.Tensor
    background: torch.Tensor
    symmetric: torch.Tensor
    traits: dict[str, torch.Tensor] = field(default_factory=dict)
    n_plain: int = 0
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        b, p = self.centre.shape[:2]
        if self.rot.shape != (b, p, 3, 3) or self.inv_radii.shape != (b, p, 3):
            raise ValueError("HeadBatch: inconsistent primitive shapes")
        if self.plane_slots.shape != (p, 2) or self.planes.shape[0] != b or self.planes.shape[2] != 4:
            raise ValueError("HeadBatch: inconsistent plane shapes")
        if not 0 <= self.n_plain <= p:
            raise ValueError("HeadBatch: n_plain out of range")

    @property
    def batch_size(self) -> int:
        return self.centre.shape[0]

    @property
    def device(self) -> torch.device:
        return self.centre.device

    def __len__(self) -> int:
        return self.batch_size

    def index(self, i: int | slice | torch.Tensor) -> "HeadBatch":
        """Select heads (an int keeps a batch of one)."""
        sel = slice(i, i + 1) if isinstance(i, int) else i
        if isinstance(i, int) and not -self.batch_size <= i < self.batch_size:
            raise IndexError(f"head index {i} out of range for a batch of {self.batch_size}")
        if isinstance(i, int) and i < 0:
            sel = slice(i + self.batch_size, i + self.batch_size + 1)
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _SHARED:
                kw[f.name] = v
            elif f.name == "traits":
                kw[f.name] = {k: t[sel] for k, t in v.items()}
            else:
                kw[f.name] = v[sel]
        return HeadBatch(**kw)

    def to(self, device: torch.device | str) -> "HeadBatch":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw = {k: ({n: t.to(device) for n, t in v.items()} if k == "traits" else
                  v if k in ("n_plain", "names") else v.to(device)) for k, v in kw.items()}
        return HeadBatch(**kw)

    def without_class(self, class_id: int) -> "HeadBatch":
        """The same heads with every slot of class ``class_id`` switched off (e.g. the hair: the exact
        head a perfect "remove the hair" edit would give; what was behind it shows)."""
        off = (self.label == int(class_id)).to(self.active.device)
        return replace(self, active=self.active & ~off[None])

    @staticmethod
    def concat(batches: list["HeadBatch"]) -> "HeadBatch":
        first = batches[0]
        kw = {}
        for f in fields(first):
            if f.name in _SHARED:
                kw[f.name] = getattr(first, f.name)
            elif f.name == "traits":
                kw[f.name] = {k: torch.cat([b.traits[k] for b in batches]) for k in first.traits}
            else:
                kw[f.name] = torch.cat([getattr(b, f.name) for b in batches])
        return HeadBatch(**kw)

    def select_slots(self, keep: torch.Tensor) -> "HeadBatch":
        """The same heads with only the slots where ``keep`` (P,) bool is true (order kept). The
        renderer drops slots inactive in every head of a CPU chunk this way (a quarter of the work);
        on a GPU it does not, as reading ``keep`` would synchronise with the device."""
        keep = keep.cpu()
        idx = torch.nonzero(keep).reshape(-1)
        per_slot = ("centre", "rot", "inv_radii", "active", "colour1", "colour2", "param")
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in per_slot:
            kw[name] = kw[name][:, idx.to(self.device)]
        kw["plane_slots"] = self.plane_slots[idx.to(self.plane_slots.device)]
        kw["label"] = self.label[idx.to(self.label.device)]
        kw["material"] = self.material[idx.to(self.material.device)]
        kw["n_plain"] = int(keep[: self.n_plain].sum())
        kw["names"] = tuple(n for n, k in zip(self.names, keep.tolist()) if k) if self.names else ()
        return HeadBatch(**kw)


# ----------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------

def rotation_xyz(rx: torch.Tensor, ry: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """(B,) Euler angles in radians -> (B, 3, 3) ``rot`` whose rows are the local axes of a primitive
    rotated by ``Rz @ Ry @ Rx`` (world = R @ local, so rows of R^T)."""
    def axis(c, s, i, j):
        m = torch.zeros(c.shape[0], 3, 3, dtype=c.dtype)
        k = 3 - i - j
        m[:, k, k] = 1
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        return m

    r = (axis(torch.cos(rz), torch.sin(rz), 0, 1) @ axis(torch.cos(ry), torch.sin(ry), 2, 0)
         @ axis(torch.cos(rx), torch.sin(rx), 1, 2))
    return r.transpose(1, 2)


class HeadBuilder:
    """Collects primitive slots for a batch of ``b`` heads (CPU float32), then :meth:`build`."""

    def __init__(self, b: int) -> None:
        self.b = b
        self._slots: list[dict] = []
        self._planes: list[torch.Tensor] = []
        self.names: list[str] = []

    def _vec(self, v, n=3) -> torch.Tensor:
        t = torch.as_tensor(v, dtype=torch.float32)
        if t.ndim == 1 and n > 1:
            t = t.expand(self.b, n)
        elif t.ndim == 0:
            t = t.expand(self.b) if n == 1 else t.expand(self.b, n)
        return t.clone()

    def plane(self, normal, h) -> int:
        """Add a half-space ``normal . x <= h`` (normal (3,) or (B, 3), h scalar or (B,)); returns its
        index. A zero normal with positive h is "no constraint" (used to switch a clip off per head)."""
        n = self._vec(normal)
        self._planes.append(torch.cat([n, self._vec(h, 1)[:, None]], 1))
        return len(self._planes) - 1

    def add(self, name: str, label: int, material: Material, centre, radii, rot=None, planes=(),
            colour1=(0.5, 0.5, 0.5), colour2=(0.5, 0.5, 0.5), param=0.0, active=True) -> int:
        """Add a slot. radii (3,) or (B, 3) with ``inf`` for an infinite cylinder axis; rot (B, 3, 3)
        or None (axis aligned); planes: up to two indices from :meth:`plane`."""
        if len(planes) > 2:
            raise ValueError("a primitive has at most two clipping planes")
        radii = self._vec(radii)
        if torch.isinf(radii).any() and not planes:
            raise ValueError(f"slot {name!r}: an infinite cylinder needs clipping planes (plain slots must be "
                             "bounded, the intersection relies on it)")
        rot = torch.eye(3).expand(self.b, 3, 3).clone() if rot is None else rot.float()
        self._slots.append(dict(
            centre=self._vec(centre), rot=rot, inv_radii=torch.where(torch.isinf(radii), 0.0, 1.0 / radii),
            colour1=self._vec(colour1), colour2=self._vec(colour2), param=self._vec(param, 1),
            active=torch.as_tensor(active, dtype=torch.bool).expand(self.b).clone(),
            label=label, material=int(material), planes=tuple(planes)))
        self.names.append(name)
        return len(self._slots) - 1

    def build(self, light, background, symmetric, traits, device) -> HeadBatch:
        """Stack the slots (those without planes first, see ``HeadBatch.n_plain``) and move to ``device``."""
        order = sorted(range(len(self._slots)), key=lambda i: len(self._slots[i]["planes"]) > 0)
        self._slots = [self._slots[i] for i in order]
        names = tuple(self.names[i] for i in order)
        n_plain = sum(1 for s in self._slots if not s["planes"])
        n_planes = len(self._planes)
        slots = torch.full((len(self._slots), 2), n_planes, dtype=torch.int64)
        for i, s in enumerate(self._slots):
            for j, k in enumerate(s["planes"]):
                slots[i, j] = k
        planes = torch.stack(self._planes, 1) if self._planes else torch.zeros(self.b, 0, 4)
        stack = lambda key: torch.stack([s[key] for s in self._slots], 1)  # noqa: E731
        heads = HeadBatch(
            centre=stack("centre"), rot=stack("rot"), inv_radii=stack("inv_radii"), planes=planes,
            plane_slots=slots, active=stack("active"),
            label=torch.tensor([s["label"] for s in self._slots], dtype=torch.int64),
            material=torch.tensor([s["material"] for s in self._slots], dtype=torch.int64),
            colour1=stack("colour1"), colour2=stack("colour2"), param=stack("param"),
            light=light.float(), background=background.float(),
            symmetric=torch.as_tensor(symmetric, dtype=torch.bool).expand(self.b).clone(),
            traits=traits, n_plain=n_plain, names=names)
        return heads.to(device)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def deg(x: float) -> float:
    return math.radians(x)
