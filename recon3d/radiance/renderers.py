"""Open a trained radiance model (any kind) as a renderer of Views: the one place that knows the kinds.

`open_model(model, device)` reads the model file and its `model.json` (kind, background, views) beside
it and returns a `Renderer` whose `render(view)` gives rgb (H, W, 3), alpha (H, W, 1) and depth (H, W, 1)
float32 CPU tensors, without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from recon3d.errors import DataError
from recon3d.io.files import read_json
from recon3d.radiance.views import BACKGROUNDS, View
from recon3d.scene import RadianceModel


class Renderer(Protocol):
    meta: dict[str, Any]

    def render(self, view: View) -> tuple[Tensor, Tensor, Tensor]: ...


@dataclass
class GaussianRenderer:
    model: Any  # GaussianModel
    meta: dict[str, Any]
    rasterizer: str

    def render(self, view: View) -> tuple[Tensor, Tensor, Tensor]:
        from recon3d.radiance.gaussians.trainer import render_view

        bg = torch.tensor(BACKGROUNDS[self.meta["background"]])
        with torch.no_grad():
            rgb, alpha, depth, _ = render_view(self.model, view, bg, self.rasterizer)
        return rgb.clamp(0, 1).cpu(), alpha.cpu(), depth.cpu()


def model_meta(model: RadianceModel) -> dict[str, Any]:
    path = Path(model.path).with_name("model.json")
    if not path.is_file():
        raise DataError(f"{model.path} has no model.json beside it", "re-run the training node that wrote it")
    return read_json(path)


def open_model(model: RadianceModel, device: str = "cpu", rasterizer: str = "auto") -> Renderer:
    meta = model_meta(model)
    if model.kind == "gaussians":
        from recon3d.radiance.gaussians.model import GaussianModel

        return GaussianRenderer(GaussianModel.load(model.path, device), meta,
                                meta["rasterizer"] if rasterizer == "auto" else rasterizer)
    raise DataError(f"unknown radiance model kind {model.kind!r} at {model.path}", "recon3d renders: gaussians")
