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


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """coeffs: (N, K, 3) with K >= (degree + 1)^2; dirs: (N, 3) unit view directions (camera -> Gaussian),
    world frame. Returns (N, 3), before the +0.5 offset."""
    if coeffs.ndim != 3 or coeffs.shape[-1] != 3 or coeffs.shape[1] < num_coeffs(degree):
        raise ValueError(f"coeffs must be (N, K >= {num_coeffs(degree)}, 3), got {tuple(coeffs.shape)}")
    c = coeffs
    out = C0 * c[:, 0]
    if degree == 0:
        return out
    x, y, z = (dirs[:, i:i + 1] for i in range(3))
    out = out - C1 * y * c[:, 1] + C1 * z * c[:, 2] - C1 * x * c[:, 3]
    if degree == 1:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + C2[0] * xy * c[:, 4] + C2[1] * yz * c[:, 5] + C2[2] * (2 * zz - xx - yy) * c[:, 6]
           + C2[3] * xz * c[:, 7] + C2[4] * (xx - yy) * c[:, 8])
    if degree == 2:
        return out
    return (out + C3[0] * y * (3 * xx - yy) * c[:, 9] + C3[1] * xy * z * c[:, 10]
            + C3[2] * y * (4 * zz - xx - yy) * c[:, 11] + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * c[:, 12]
            + C3[4] * x * (4 * zz - xx - yy) * c[:, 13] + C3[5] * z * (xx - yy) * c[:, 14]
            + C3[6] * x * (xx - 3 * yy) * c[:, 15])


def sh_to_rgb(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colours (N, 3), clamped at 0 below (as 3DGS and gsplat)."""
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)
