"""Per-image appearance compensation: real photos differ in exposure and white balance.

Each training image gets an affine colour transform `rgb' = A rgb + b` (A (3, 3), b (3,)), identity at the
start and learned with the model, applied to the render before the loss, so the model need not bake one
photo's exposure into its geometry (as NeRF-W's per-image appearance, in the small affine form of
Urban-NeRF's exposure compensation). Test views have no learned transform: they are rendered and scored
with the identity, the model's own colours; the evaluation protocol says so.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AffineColor(torch.nn.Module):
    """`n` affine colour transforms, one per training image."""

    def __init__(self, n: int):
        super().__init__()
        self.matrix = torch.nn.Parameter(torch.eye(3).repeat(n, 1, 1))  # (n, 3, 3)
        self.offset = torch.nn.Parameter(torch.zeros(n, 3))  # (n, 3)

    def transform(self, index: int) -> tuple[Tensor, Tensor]:
        """A (3, 3), b (3,) of training image `index`, centred so that the mean over the images is the identity:
        the model's own colours are then those of the average photo, not of whichever one the training drifts to
        (a model twice as bright with every A halved renders the same, so without the centring the model's
        colours, which test views are scored with, are free to drift)."""
        eye = torch.eye(3, device=self.matrix.device)
        return (self.matrix[index] - self.matrix.mean(0) + eye), (self.offset[index] - self.offset.mean(0))

    def forward(self, rgb: Tensor, index: int) -> Tensor:
        """rgb (H, W, 3) of training image `index` -> its transformed colours (H, W, 3)."""
        matrix, offset = self.transform(index)
        return rgb @ matrix.T + offset
