"""Image metrics for radiance fields: PSNR and SSIM on (H, W, 3) float images in [0, 1].

`ssim` is the standard definition (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5,
C1 = (0.01)^2, C2 = (0.03)^2, the image reflect-padded by 5 pixels, averaged over every pixel and channel,
i.e. what `torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0)` computes (a test checks
that). It is differentiable, so the trainers use it for their D-SSIM loss as well.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

WINDOW, SIGMA, C1, C2 = 11, 1.5, 0.01**2, 0.03**2


def psnr(pred: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (peak 1); `pred` is clamped to [0, 1]."""
    mse = torch.mean((pred.detach().clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


@functools.cache
def _window(device: str, dtype: torch.dtype) -> Tensor:
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM of (H, W, C) images in [0, 1], as a 0-d tensor (differentiable in both)."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"ssim takes two (H, W, C) images of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    g = _window(str(pred.device), pred.dtype)
    C = pred.shape[-1]
    x = torch.stack([pred, target, pred * pred, target * target, pred * target]).permute(0, 3, 1, 2)
    x = torch.nn.functional.pad(x.reshape(1, 5 * C, *pred.shape[:2]), [WINDOW // 2] * 4, mode="reflect")
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1).expand(5 * C, 1, 1, WINDOW), groups=5 * C)
    x = torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1).expand(5 * C, 1, WINDOW, 1), groups=5 * C)
    mu_x, mu_y, xx, yy, xy = x.reshape(5, C, *x.shape[2:])
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * cov + C2)
    den = (mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2)
    return (num / den).mean()


def color_corrected(pred: Tensor, target: Tensor) -> Tensor:
    """`pred` (H, W, 3) after the affine colour transform (3 x 3 matrix + offset) that brings it closest to
    `target` (H, W, 3) in least squares, clipped to [0, 1]: what "colour-corrected" PSNR / SSIM score (as
    Zip-NeRF reports for captures whose exposure and white balance vary from photo to photo), so that a
    held-out photo's own exposure, which no other photo determines, is told apart from errors of the model."""
    x = torch.cat([pred.reshape(-1, 3), torch.ones(pred.shape[0] * pred.shape[1], 1)], 1).double()
    solution = torch.linalg.lstsq(x, target.reshape(-1, 3).double()).solution  # (4, 3)
    return (x @ solution).float().reshape(pred.shape).clamp(0, 1)
