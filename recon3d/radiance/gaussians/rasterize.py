"""`rasterize`: render Gaussians into one view, behind one function with three backends.

* `cpu` (default on CPU): the C++ projection + SH kernel (`project_cpu`) and compositing kernel, each with its
  hand-written backward (PyTorch's projection when the camera itself takes a gradient: pose refinement);
* `reference`: PyTorch projection + `composite_reference` (autograd all the way; the test oracle);
* `gsplat`: `gsplat.rasterization` (CUDA only; gsplat has no CPU path).

The caller picks the backend and the device; nothing here moves tensors to another device on its own.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from recon3d.errors import ConfigError
from recon3d.radiance.gaussians.composite import composite_cpu, composite_reference
from recon3d.radiance.gaussians.project import project, project_cpu
from recon3d.radiance.sh import sh_to_rgb

Backend = Literal["cpu", "reference", "gsplat"]


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              cam_from_world: Tensor, K: Tensor, width: int, height: int, *, sh_degree: int | None = None,
              background: Tensor | None = None, backend: Backend = "cpu", near: float = 0.01, far: float = 1e10,
              eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Render one view.

    means: (N, 3) world; quats: (N, 4) (w, x, y, z), normalised here; scales: (N, 3) standard deviations
    (not log); opacities: (N,) in [0, 1]; colors: (N, 3) RGB, or (N, K, 3) SH coefficients when `sh_degree`
    is given (colour = SH + 0.5, clamped at 0); cam_from_world: (4, 4) world -> OpenCV camera; K: (3, 3)
    pixels, COLMAP pixel convention; background: (3,) RGB behind the Gaussians (default black).

    Returns rgb (H, W, 3), alpha (H, W, 1), depth (H, W, 1) (expected camera z: sum w_i z_i / alpha, 0 where
    alpha = 0) and meta: `ids` (V,) visible Gaussians, `means2d` (V, 2) (call `retain_grad()` on it before
    `backward()` for densification; gsplat gives (1, N, 2)), `extents` (V, 2), `depths` (V,).
    """
    if backend not in ("cpu", "reference", "gsplat"):
        raise ConfigError(f"unknown rasterizer backend {backend!r}", "choose cpu, reference or gsplat")
    if background is None:
        background = torch.zeros(3, device=means.device, dtype=means.dtype)
    if backend == "gsplat":
        return _rasterize_gsplat(means, quats, scales, opacities, colors, cam_from_world, K, width, height,
                                 sh_degree, background, near, far, eps2d)
    if backend == "cpu" and means.device.type != "cpu":
        raise ConfigError(f"rasterizer backend 'cpu' got tensors on {means.device}",
                          "use backend gsplat on CUDA, or move the model to the CPU")
    if backend == "cpu" and not (torch.is_grad_enabled() and cam_from_world.requires_grad):
        # projection and SH by the C++ kernel too, with its own backward (a camera being refined: PyTorch's)
        p, rgb = project_cpu(means, quats, scales, opacities, colors, sh_degree, cam_from_world, K, width, height,
                             near, far, eps2d)
    else:
        p = project(means, quats, scales, opacities, cam_from_world, K, width, height, near, far, eps2d)
        rgb = _colors(p, means, colors, sh_degree, cam_from_world)
    feats = torch.cat([rgb, p.depths[:, None]], -1)
    bg = torch.cat([background, background.new_zeros(1)])
    composite = composite_cpu if backend == "cpu" else composite_reference
    image, alpha = composite(p.means2d, p.conics, p.opacities, feats, p.depths, p.extents, bg, width, height)
    alpha = alpha[..., None]
    depth = torch.where(alpha > 0, image[..., 3:] / alpha.clamp_min(1e-10), torch.zeros_like(alpha))
    meta = {"ids": p.ids, "means2d": p.means2d, "extents": p.extents, "depths": p.depths}
    return image[..., :3], alpha, depth, meta


def _colors(p, means: Tensor, colors: Tensor, sh_degree: int | None, cam_from_world: Tensor) -> Tensor:
    """(V, 3) colours of the visible Gaussians: as given, or from SH at the view direction."""
    if sh_degree is None:
        return colors[p.ids]
    # SH of every Gaussian, then the visible rows: indexing (N, 3) is far cheaper than (N, K, 3)
    cam_center = -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]
    dirs = torch.nn.functional.normalize(means.detach() - cam_center, dim=-1)
    return sh_to_rgb(sh_degree, colors, dirs)[p.ids]


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is present (the only place it rasterizes)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _rasterize_gsplat(means, quats, scales, opacities, colors, cam_from_world, K, width, height, sh_degree,
                      background, near, far, eps2d):
    if means.device.type != "cuda":
        raise ConfigError(f"rasterizer backend 'gsplat' runs on CUDA only; the model is on {means.device}",
                          "set device=cuda (a machine with an NVIDIA GPU), or rasterizer=cpu")
    import gsplat

    render, alphas, meta = gsplat.rasterization(
        means, torch.nn.functional.normalize(quats, dim=-1), scales, opacities, colors,
        cam_from_world[None], K[None], width, height, near_plane=near, far_plane=far, eps2d=eps2d,
        sh_degree=sh_degree, packed=False, backgrounds=background[None], render_mode="RGB+ED",
        rasterize_mode="classic")
    radii = meta["radii"][0]
    visible = (radii > 0).all(-1) if radii.ndim == 2 else radii > 0
    out = {"ids": torch.nonzero(visible).squeeze(1), "means2d": meta["means2d"], "depths": meta["depths"][0]}
    return render[0, ..., :3], alphas[0], render[0, ..., 3:4], out
