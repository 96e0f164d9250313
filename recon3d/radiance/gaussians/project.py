"""Projection of 3D Gaussians into a pinhole camera (EWA splatting, Zwicker et al. 2001; 3DGS eq. 5).

Differentiable PyTorch on any device. Frames: `cam_from_world` (4, 4) maps world points into the OpenCV
camera (x right, y down, z forward); pixels in COLMAP's convention, so with `K` the centre of pixel
(row y, column x) is at (x + 0.5, y + 0.5), as gsplat rasterizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon3d.radiance.gaussians import kernel
from recon3d.radiance.gaussians.composite import ALPHA_MIN  # a Gaussian fainter than this covers no pixel


@dataclass
class Projected:
    """The Gaussians visible in one view, in front-to-back independent order (V of the model's N)."""

    ids: Tensor  # (V,) int64 rows of the model
    means2d: Tensor  # (V, 2) pixels
    conics: Tensor  # (V, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]], 1 / px^2
    depths: Tensor  # (V,) camera z
    opacities: Tensor  # (V,) in [0, 1]
    extents: Tensor  # (V, 2) half-width, half-height (px) of the region where alpha >= 1/255; no gradient


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """quats: (N, 4) (w, x, y, z), any norm -> (N, 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, cam_from_world: Tensor, K: Tensor,
            width: int, height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3) -> Projected:
    """Project Gaussians; keep those in front of the camera whose footprint reaches the image.

    means: (N, 3) world; quats: (N, 4) (w, x, y, z); scales: (N, 3) standard deviations along the Gaussian's
    axes (not log); opacities: (N,) in [0, 1]; cam_from_world: (4, 4); K: (3, 3) pinhole, pixels.
    The 2D covariance is `J W Sigma W^T J^T + eps2d I` (eps2d = 0.3 px^2 as 3DGS / gsplat's classic mode),
    with the Jacobian J of the projection at the mean, its x/z and y/z clamped to 1.3x the field of view
    (as 3DGS). The footprint extent is exact for the alpha cut-off: opacity * exp(-r^2 / 2) = 1/255 gives
    r = sqrt(2 ln(255 opacity)) standard deviations (3.33 at opacity 1, fewer for faint Gaussians).
    """
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    with torch.no_grad():
        z_all = means @ R[2] + t[2]
        ids = torch.nonzero((z_all > near) & (z_all < far) & (opacities > ALPHA_MIN)).squeeze(1)
    p = means[ids] @ R.T + t
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x, lim_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    tx = z * torch.clamp(x / z, -(cx / fx + lim_x), (width - cx) / fx + lim_x)
    ty = z * torch.clamp(y / z, -(cy / fy + lim_y), (height - cy) / fy + lim_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(-1, 2, 3)
    M = J @ R @ quat_to_rotmat(quats[ids]) * scales[ids][:, None, :]  # (V, 2, 3): cov2d = M M^T
    cov = M @ M.transpose(1, 2)
    a, b, c = cov[:, 0, 0] + eps2d, cov[:, 0, 1], cov[:, 1, 1] + eps2d
    det = a * c - b * b
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    op = opacities[ids]
    with torch.no_grad():
        r = torch.sqrt(2 * torch.log(255 * op))
        extents = torch.stack([r * torch.sqrt(a), r * torch.sqrt(c)], -1).clamp(max=4.0 * max(width, height))
        lo, hi = means2d - extents, means2d + extents
        keep = ((det > 0) & (hi[:, 0] > 0) & (lo[:, 0] < width) & (hi[:, 1] > 0) & (lo[:, 1] < height)
                & torch.isfinite(means2d).all(-1) & torch.isfinite(extents).all(-1))
        sel = torch.nonzero(keep).squeeze(1)
    det = det[sel]
    conics = torch.stack([c[sel] / det, -b[sel] / det, a[sel] / det], -1)
    return Projected(ids[sel], means2d[sel], conics, z[sel], op[sel], extents[sel])


class _ProjectSH(torch.autograd.Function):
    """`project_sh` forward, `project_sh_backward` backward: gradients to means, quats, scales, opacities and
    colours as `project` + `sh_to_rgb` give them by autograd."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, colors, sh_degree, cam_from_world, K, width, height, near, far,
                eps2d):
        lib = kernel.load()
        n = len(means)
        ins = [t.detach().float().contiguous() for t in (means, quats, scales, opacities, colors, cam_from_world, K)]
        degree = -1 if sh_degree is None else sh_degree
        n_coeffs = 1 if sh_degree is None else colors.shape[1]
        ids = torch.empty(n, dtype=torch.int64)
        outs = [torch.empty(n, 2), torch.empty(n, 3), torch.empty(n), torch.empty(n), torch.empty(n, 2),
                torch.empty(n, 3)]
        v = lib.project_sh(torch.get_num_threads(), n, *(t.data_ptr() for t in ins[:5]), n_coeffs, degree,
                           ins[5].data_ptr(), ins[6].data_ptr(), width, height, near, far, eps2d, ids.data_ptr(),
                           *(t.data_ptr() for t in outs))
        ids = ids[:v]
        means2d, conics, depths, opac, extents, rgb = (t[:v].contiguous() for t in outs)
        ctx.save_for_backward(*ins[:3], ins[5], ins[6], ids, rgb)
        ctx.settings = (n_coeffs, degree, width, height, eps2d, colors.shape)
        ctx.mark_non_differentiable(ids, extents)
        return ids, means2d, conics, depths, opac, extents, rgb

    @staticmethod
    def backward(ctx, _ids, g_means2d, g_conics, g_depths, g_opac, _extents, g_rgb):
        lib = kernel.load()
        means, quats, scales, cam_from_world, K, ids, rgb = ctx.saved_tensors
        n_coeffs, degree, width, height, eps2d, color_shape = ctx.settings
        grads_in = [(g if g is not None else torch.zeros_like(t)).float().contiguous()
                    for g, t in ((g_means2d, rgb[:, :2]), (g_conics, rgb), (g_depths, rgb[:, 0]),
                                 (g_opac, rgb[:, 0]), (g_rgb, rgb))]
        grads = [torch.zeros_like(means), torch.zeros_like(quats), torch.zeros_like(scales),
                 torch.zeros(len(means)), torch.zeros(color_shape)]
        lib.project_sh_backward(torch.get_num_threads(), len(ids), ids.data_ptr(), means.data_ptr(), quats.data_ptr(),
                                scales.data_ptr(), n_coeffs, degree, cam_from_world.data_ptr(), K.data_ptr(), width,
                                height, eps2d, rgb.data_ptr(), *(g.data_ptr() for g in grads_in),
                                *(g.data_ptr() for g in grads))
        return (*grads, None, None, None, None, None, None, None, None)


def project_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                sh_degree: int | None, cam_from_world: Tensor, K: Tensor, width: int, height: int,
                near: float = 0.01, far: float = 1e10, eps2d: float = 0.3) -> tuple[Projected, Tensor]:
    """`project` and the view-dependent colours (`sh_to_rgb`, or `colors` (N, 3) as given when `sh_degree` is
    None) in one pass of the C++ kernel, CPU float32, differentiable in means, quats, scales, opacities and colors
    by its hand-written backward (the camera gets no gradient). Returns the Projected and rgb (V, 3)."""
    ids, means2d, conics, depths, opac, extents, rgb = _ProjectSH.apply(
        means, quats, scales, opacities, colors, sh_degree, cam_from_world, K, width, height, near, far, eps2d)
    return Projected(ids, means2d, conics, depths, opac, extents), rgb
