"""Per-image appearance compensation: real photos differ in exposure and white balance.

Each training image gets an affine colour transform `rgb' = A rgb + b` (A (3, 3), b (3,)), identity at the
start and learned with the model, applied to the render before the loss, so the model need not bake one
photo's exposure into its geometry (as NeRF-W's per-image appearance, in the small affine form of
Urban-NeRF's exposure compensation). Test views have no learned transform: they are rendered and scored
with the identity, the model's own colours; the evaluation protocol says so. Both trainers take the same
option (`AppearanceConfig`): the Gaussians transform a whole render, the NeRF each ray by its image.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor


class AppearanceConfig(BaseModel):
    """The appearance fields of both radiance trainers' configs."""

    appearance: Literal["none", "affine"] = Field("none", description="per-image appearance compensation: affine "
                                                  "= an affine colour per training image (exposure, white "
                                                  "balance); test views are scored without it")
    lr_appearance: float = Field(5e-3, gt=0, description="Adam step of the per-image colour transforms")


class AffineColor(torch.nn.Module):
    """`n` affine colour transforms, one per training image."""

    def __init__(self, n: int):
        super().__init__()
        self.matrix = torch.nn.Parameter(torch.eye(3).repeat(n, 1, 1))  # (n, 3, 3)
        self.offset = torch.nn.Parameter(torch.zeros(n, 3))  # (n, 3)

    def transform(self, index: int | Tensor) -> tuple[Tensor, Tensor]:
        """A (3, 3), b (3,) of training image `index` (A (N, 3, 3), b (N, 3) for an index tensor (N,)), centred
        so that the mean over the images is the identity: the model's own colours are then those of the average
        photo, not of whichever one the training drifts to (a model twice as bright with every A halved renders
        the same, so without the centring the model's colours, which test views are scored with, are free to
        drift)."""
        eye = torch.eye(3, device=self.matrix.device)
        return (self.matrix[index] - self.matrix.mean(0) + eye), (self.offset[index] - self.offset.mean(0))

    def forward(self, rgb: Tensor, index: int) -> Tensor:
        """rgb (H, W, 3) of training image `index` -> its transformed colours (H, W, 3)."""
        matrix, offset = self.transform(index)
        return rgb @ matrix.T + offset

    def per_ray(self, rgb: Tensor, index: Tensor) -> Tensor:
        """rgb (N, 3) of rays from training images `index` (N,) long -> their transformed colours (N, 3)."""
        matrix, offset = self.transform(index)
        return torch.einsum("nij,nj->ni", matrix, rgb) + offset
