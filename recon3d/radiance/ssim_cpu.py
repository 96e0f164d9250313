"""`ssim` (`radiance.metrics`) by a C++ kernel with a hand-written backward (`_ssim.cpp`), for the D-SSIM term of
the Gaussians' loss: on a 512 px view its forward and backward take a fraction of the PyTorch reference's
(which convolves fifteen padded planes and differentiates through all of them). Same definition, float32;
tests compare value and gradient with the reference. Tensors on another device, or images too small for the
window's padding, go to the reference.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from recon3d.radiance.metrics import WINDOW, ssim
from recon3d.radiance.native import I, Library, P

LIBRARY = Library(
    "ssim",
    (Path(__file__).with_name("_ssim.cpp"),),
    {
        "ssim_forward": (ctypes.c_double, [I, I, I, I, P, P, P]),
        "ssim_backward": (None, [I, I, I, I, P, P, P, ctypes.c_float, P]),
    },
)


class _SSIMCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor) -> Tensor:
        lib = LIBRARY.load()
        H, W, C = pred.shape
        pred, target = pred.detach().float().contiguous(), target.detach().float().contiguous()
        maps = torch.empty(5, C, H, W)
        value = lib.ssim_forward(torch.get_num_threads(), H, W, C, pred.data_ptr(), target.data_ptr(),
                                 maps.data_ptr())
        ctx.save_for_backward(pred, target, maps)
        return torch.tensor(value, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad: Tensor):
        lib = LIBRARY.load()
        pred, target, maps = ctx.saved_tensors
        H, W, C = pred.shape
        grad_pred = torch.empty_like(pred)
        lib.ssim_backward(torch.get_num_threads(), H, W, C, pred.data_ptr(), target.data_ptr(), maps.data_ptr(),
                          float(grad), grad_pred.data_ptr())
        return grad_pred, None


def ssim_cpu(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM of (H, W, C) images as a 0-d tensor, differentiable in `pred`: the C++ kernel for float32 CPU
    tensors and a target without a gradient, `metrics.ssim` otherwise."""
    if (pred.shape != target.shape or pred.ndim != 3 or pred.device.type != "cpu" or pred.dtype != torch.float32
            or target.requires_grad or min(pred.shape[:2]) <= WINDOW // 2):
        return ssim(pred, target)
    return _SSIMCPU.apply(pred, target)
