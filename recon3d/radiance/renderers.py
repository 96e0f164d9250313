"""Open a trained radiance model (any kind) as a renderer of Views: the one place that knows the kinds.

`open_model(model, device)` reads the model file and its `model.json` (kind, background, views) beside
it and returns a `Renderer` whose `render(view)` gives rgb (H, W, 3), alpha (H, W, 1) and depth (H, W, 1)
float32 CPU tensors, without gradients; rgb at the view's recorded exposure when the model learned one
(`radiance.appearance.exposure_scale`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from recon3d.errors import DataError
from recon3d.io.files import read_json
from recon3d.radiance.appearance import exposure_scale
from recon3d.radiance.views import View, background_colour
from recon3d.scene import RadianceModel


class Renderer(Protocol):
    meta: dict[str, Any]

    def render(self, view: View) -> tuple[Tensor, Tensor, Tensor]: ...


class GaussianRenderer:
    """Renders a fixed Gaussian model; its activated parameters are computed once, not per frame."""

    def __init__(self, model: Any, meta: dict[str, Any], rasterizer: str):
        self.meta, self.rasterizer, self.sh_degree = meta, rasterizer, model.sh_degree
        with torch.no_grad():
            self.tensors = (model.means.detach(), model.quats.detach(), model.scales, model.opacities, model.sh)
        self.background = torch.tensor(background_colour(meta), device=model.means.device)
        self.envmap = model.envmap  # seen where the Gaussians leave a pixel uncovered, instead of the background

    def render(self, view: View) -> tuple[Tensor, Tensor, Tensor]:
        from recon3d.radiance.envmap import behind
        from recon3d.radiance.gaussians.rasterize import rasterize

        dev = self.background.device
        with torch.no_grad():
            rgb, alpha, depth, _ = rasterize(*self.tensors, view.cam_from_world.to(dev), view.K.to(dev), view.width,
                                             view.height, sh_degree=self.sh_degree,
                                             background=self.background if self.envmap is None else None,
                                             backend=self.rasterizer)
            if self.envmap is not None:
                rgb = rgb + (1 - alpha) * behind(self.envmap, view)
        return (rgb * exposure_scale(self.meta, view.exposure)).clamp(0, 1).cpu(), alpha.cpu(), depth.cpu()

    def planar_depth(self, view: View) -> Tensor:
        """(H, W, 1) camera z where each pixel's ray meets the opacity-weighted plane of the Gaussians it sees
        (PGSR's unbiased depth): a Gaussian's plane passes through its mean, normal to its shortest axis, facing
        the camera. Expected depth averages the Gaussians' centre depths, which pulls a surface seen at a grazing
        angle towards the camera by about a Gaussian's size; the plane does not. 0 where nothing is seen, the
        expected depth where the plane is seen edge-on."""
        from recon3d.geometry.projection import pixel_rays
        from recon3d.radiance.gaussians.project import quat_to_rotmat
        from recon3d.radiance.gaussians.rasterize import rasterize

        means, quats, scales, opacities, _ = self.tensors
        dev = means.device
        cfw, K = view.cam_from_world.to(dev), view.K.to(dev)
        rot = quat_to_rotmat(quats)  # (N, 3, 3), columns: the axes
        normal = torch.gather(rot, 2, scales.argmin(-1)[:, None, None].expand(-1, 3, 1))[..., 0] @ cfw[:3, :3].T
        centre = means @ cfw[:3, :3].T + cfw[:3, 3]
        offset = (normal * centre).sum(-1, keepdim=True)
        normal, offset = torch.where(offset > 0, -normal, normal), -offset.abs()  # facing the camera: n . x < 0
        with torch.no_grad():
            n_sum, alpha, depth, _ = rasterize(means, quats, scales, opacities, normal, cfw, K, view.width,
                                               view.height, backend=self.rasterizer)
            d_sum, _, _, _ = rasterize(means, quats, scales, opacities, offset.expand(-1, 3).contiguous(), cfw, K,
                                       view.width, view.height, backend=self.rasterizer)
        ray = torch.as_tensor(pixel_rays(view.K.double().numpy(), view.width, view.height), dtype=torch.float32,
                              device=dev)
        facing = (n_sum * ray).sum(-1, keepdim=True)  # sum w n . r; the plane: sum w n . (z r) = sum w d
        edge_on = facing > -1e-3 * n_sum.norm(dim=-1, keepdim=True) * ray.norm(dim=-1, keepdim=True)
        planar = torch.where(edge_on, depth, d_sum[..., :1] / facing.clamp(max=-1e-12))
        return torch.where(alpha > 0, planar, torch.zeros_like(planar)).cpu()


class NerfRenderer:
    """Renders a fixed NeRF model through its occupancy grid."""

    def __init__(self, model: Any, meta: dict[str, Any], backend: str):
        self.model, self.meta, self.backend = model, meta, backend
        self.background = torch.tensor(background_colour(meta))

    def render(self, view: View) -> tuple[Tensor, Tensor, Tensor]:
        from recon3d.radiance.nerf.trainer import render_view

        rgb, opacity, depth = render_view(self.model, view, self.background, self.backend)
        return (rgb * exposure_scale(self.meta, view.exposure)).clamp(0, 1), opacity, depth


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
    if model.kind == "nerf":
        from recon3d.radiance.nerf.model import NerfModel

        backend = meta["backend"] if device == "cpu" else "torch"  # the C++ kernels run on the CPU only
        return NerfRenderer(NerfModel.load(model.path).to(device), meta, backend)
    raise DataError(f"unknown radiance model kind {model.kind!r} at {model.path}", "recon3d renders: gaussians, nerf")
