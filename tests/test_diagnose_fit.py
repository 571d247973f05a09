"""scripts/diagnose_fit.py pairs each render with the right exact target, mask and resolution."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diagnose_fit.py"


def _load():
    spec = importlib.util.spec_from_file_location("diagnose_fit", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _head(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img128 = torch.rand(3, 128, 128, generator=g) * 2 - 1
    lab128 = (torch.rand(128, 128, generator=g) > 0.5).to(torch.uint8)
    img64 = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    lab64 = (torch.rand(2, 64, 64, generator=g) > 0.5).to(torch.uint8)
    cam64 = torch.zeros(2, 25)
    cam64[1, 0] = 1.0
    cam128 = torch.full((25,), 2.0)
    return {"cam64": cam64, "img64": img64, "lab64": lab64, "cam128": cam128, "img128": img128,
            "lab128": lab128}


class _ExactG:
    """Renders the bank's own exact targets: view 0 of the 64 px set, the 128 px view at 256 px."""

    def __init__(self, head: dict[str, torch.Tensor], scale: float = 1.0) -> None:
        self.head, self.scale = head, scale

    def planes(self, ws):
        return None

    def render(self, planes, c, ws):
        h = self.head
        if torch.equal(c[0], h["cam128"]):
            big = F.interpolate(h["img128"][None], size=256, mode="nearest") * self.scale
            return SimpleNamespace(image=big, image_raw=F.avg_pool2d(h["img128"][None], 2) * self.scale)
        assert torch.equal(c[0], h["cam64"][0]), "the field column must use the bank's first 64 px view"
        return SimpleNamespace(image=None, image_raw=h["img64"][0][None] * self.scale)


def test_exact_renders_score_as_exact_and_the_ceiling_is_the_bicubic_of_the_box_filter():
    mod = _load()
    head = _head()
    res = mod.decompose(_ExactG(head), torch.zeros(1, 1, 1), head)
    assert res["field 64"][0] > 100 and res["field 64"][1] > 100
    assert res["output"][0] > 100 and res["output"][1] > 100
    # a perfect field upsampled bicubically is exactly the ceiling column
    assert abs(res["field bicubic"][0] - res["exact 64 bicubic"][0]) < 1e-4
    assert res["exact 64 bicubic"][0] < 40


def test_head_columns_average_only_inside_the_exact_mask():
    mod = _load()
    head = _head(1)
    res = mod.decompose(_ExactG(head, scale=0.0), torch.zeros(1, 1, 1), head)  # renders all zero
    t, m = head["img64"][0], head["lab64"][0] > 0
    whole = 10 * math.log10(4.0 / float(t.square().mean()))
    inside = 10 * math.log10(4.0 / float(t.square().mean(0)[m].mean()))
    assert abs(res["field 64"][0] - whole) < 1e-3
    assert abs(res["field 64"][1] - inside) < 1e-3
    t, m = head["img128"], head["lab128"] > 0
    assert abs(res["output"][1] - 10 * math.log10(4.0 / float(t.square().mean(0)[m].mean()))) < 1e-3
