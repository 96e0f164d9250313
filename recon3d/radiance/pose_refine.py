"""Camera-pose refinement while training: SfM poses are good to a pixel or so, and a radiance field blurs
what they get wrong; gradients of the photometric loss reach the poses through the projection, as in gsplat's
`pose_opt` (its `CameraOptModule`), BARF and nerfacto's camera optimizer.

Each training view i gets a twist xi_i = (omega, tau) (6,), zero at the start, applied in the world frame:
`cam_from_world' = cam_from_world @ exp(xi_i^)` with `xi^ = [[omega]x, tau; 0, 0]` (a small rigid motion of
the world as that camera sees it). A rigid motion of the whole world moves every camera by the same twist to
first order, so the twists are kept centred (their mean removed after every step): the refined cameras keep
the frame the test views' poses live in, and a test view, which has no twist of its own, stays registered to
the model.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PoseCorrection(torch.nn.Module):
    """`n` pose corrections, one per training view."""

    def __init__(self, n: int):
        super().__init__()
        self.twist = torch.nn.Parameter(torch.zeros(n, 6))  # (n, 6): rotation (axis x angle), translation

    def transform(self, index: int) -> Tensor:
        """(4, 4) exp of view `index`'s twist."""
        w, v = self.twist[index].split(3)
        zero = w.new_zeros(())
        hat = torch.stack([
            torch.stack([zero, -w[2], w[1], v[0]]), torch.stack([w[2], zero, -w[0], v[1]]),
            torch.stack([-w[1], w[0], zero, v[2]]), torch.stack([zero, zero, zero, zero])])
        return torch.linalg.matrix_exp(hat)

    def recentre(self) -> None:
        """Remove the twists' mean (after each optimizer step): the gauge, not a correction. Centring inside
        `transform` instead would send every view's gradient into all twists through the mean."""
        with torch.no_grad():
            self.twist -= self.twist.mean(0)

    def forward(self, cam_from_world: Tensor, index: int) -> Tensor:
        """cam_from_world (4, 4) of training view `index` -> its refined pose (4, 4), differentiable."""
        return cam_from_world @ self.transform(index).to(cam_from_world)
