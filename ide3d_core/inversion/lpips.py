# SPDX-License-Identifier: GPL-3.0-or-later
"""LPIPS (Zhang et al. 2018, VGG16 variant) as an optional inversion loss, with weights the user supplies.

The project ships no downloaded weights. To use LPIPS, convert the ImageNet VGG16 features and the
LPIPS linear layers into one safetensors file with these names (e.g. from torchvision's ``vgg16`` and
the ``lpips`` package's ``vgg.pth``, loaded with ``torch.load(..., weights_only=True)``):

* ``features.{i}.weight`` / ``features.{i}.bias`` for the 13 convolutions, ``i`` in
  0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 (torchvision's ``vgg16().features`` indices);
* ``lin{k}.weight`` [1, C_k, 1, 1] for the five taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3),
  the ``lpips`` package's ``lin{k}.model.1.weight``.

Loading is strict (missing, unexpected or mis-shaped tensors raise ``ValueError``). Inputs are
[B, 3, H, W] in [-1, 1]; the result is [B] (spatial mean per tap, summed over taps).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices (in torchvision's features) of the ReLUs LPIPS reads
_TAP_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS-VGG16 distance; build with :meth:`from_file` (weights are the user's)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(_TAP_CHANNELS):
            self.register_parameter(f"lin{k}", nn.Parameter(torch.ones(1, c, 1, 1)))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> "LPIPS":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no LPIPS weights at {path}")
        net = cls()
        state = load_file(str(path))
        own = {k: v for k, v in net.state_dict().items() if k not in ("shift", "scale")}
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"{path.name}: LPIPS weights do not match (missing {missing[:3]}, unexpected {extra[:3]})")
        bad = [k for k in own if own[k].shape != state[k].shape]
        if bad:
            raise ValueError(f"{path.name}: mis-shaped LPIPS tensors {bad[:3]}")
        net.load_state_dict({**state, "shift": net.shift, "scale": net.scale}, strict=True)
        return net.to(device).eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
                if i == _TAPS[-1]:
                    break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for k, (a, b) in enumerate(zip(self._taps(x), self._taps(y))):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((a - b) ** 2, getattr(self, f"lin{k}")).mean((1, 2, 3))
        return total
