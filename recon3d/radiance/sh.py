"""Real spherical harmonics up to degree 3, in the convention of the 3DGS reference code and gsplat.

Colour = `eval_sh(degree, coeffs, dirs) + 0.5`, so a DC coefficient c gives `C0 * c + 0.5`; the 3DGS `.ply`
layout stores exactly these coefficients (`f_dc_*`, `f_rest_*`), which is why splat viewers read them.
"""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def num_coeffs(degree: int) -> int:
    """Coefficients per colour channel for SH `degree` (0..3): (degree + 1)^2."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient (..., 3) that evaluates to `rgb` (..., 3) in [0, 1]."""
    return (rgb - 0.5) / C0


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The real SH basis at unit directions `dirs` (N, 3): (N, (degree + 1)^2)."""
    num_coeffs(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """coeffs: (N, K, 3) with K >= (degree + 1)^2; dirs: (N, 3) unit view directions (camera -> Gaussian),
    world frame. Returns (N, 3), before the +0.5 offset. One contraction, so the backward pass is one
    product instead of a pass over the coefficients per basis function."""
    k = num_coeffs(degree)
    if coeffs.ndim != 3 or coeffs.shape[-1] != 3 or coeffs.shape[1] < k:
        raise ValueError(f"coeffs must be (N, K >= {k}, 3), got {tuple(coeffs.shape)}")
    return torch.einsum("nk,nkc->nc", sh_basis(degree, dirs), coeffs[:, :k])


def sh_to_rgb(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colours (N, 3), clamped at 0 below (as 3DGS and gsplat)."""
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)
