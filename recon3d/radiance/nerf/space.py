"""Where the grid lives: a box in the world, or all of space contracted into a cube.

Photos of a real scene hold a subject and, around it, ground, buildings and sky to infinity. A bounded box
either cuts them off or spends its voxels on emptiness; mip-NeRF 360's contraction (nerfacto's
`SceneContraction`, here with the max norm as nerfacto uses for grids, so the image is a cube a dense grid
fills) keeps the box around the subject at full resolution and squeezes everything beyond it into a shell:

    u = (x - centre) / radius,   c = u                             where |u|_inf <= 1
                                 c = (2 - 1 / |u|_inf) u / |u|_inf  beyond,

so c lies in [-2, 2]^3, half of each axis for the inner box and half for the rest of the world. The grid,
the occupancy grid and the density are defined over c (density per grid unit: a far sample weighs what a
near one does, as in DVGO's and Plenoxels' unbounded grids); samples are taken every half voxel of c, which
is `radius * |u|_inf^2` times further apart in the world beyond the inner box (`_field.cpp: march`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

GRID_BOX = torch.tensor([-2.0, -2, -2, 2, 2, 2])  # the contracted cube, where the grid lives
FAR = 1000.0  # samples stop at |u|_inf = FAR (c at 1.999): the sky lies beyond, in the env map


@dataclass(frozen=True)
class Contraction:
    center: Tensor  # (3,) float32, world
    radius: float  # half the inner box's side, world units

    @classmethod
    def of_box(cls, aabb: Tensor) -> Contraction:
        """The contraction whose inner box is the cube `aabb` (6,) = (min xyz, max xyz)."""
        return cls(((aabb[:3] + aabb[3:]) / 2).float(), float((aabb[3:] - aabb[:3]).max()) / 2)

    def params(self) -> Tensor:
        """(4,) float32: centre xyz, radius (what the C++ kernel and the model file take)."""
        return torch.cat([self.center.float().cpu(), torch.tensor([self.radius])]).contiguous()

    def __call__(self, x: Tensor) -> Tensor:
        """World points (N, 3) -> grid-space points c (N, 3) in [-2, 2]^3."""
        u = (x - self.center.to(x)) / self.radius
        m = u.abs().amax(-1, keepdim=True)
        return torch.where(m > 1, (2 - 1 / m.clamp_min(1)) * u / m.clamp_min(1), u)

    def inverse(self, c: Tensor) -> Tensor:
        """Grid-space points (N, 3) with |c|_inf < 2 -> world points (N, 3)."""
        m = c.abs().amax(-1, keepdim=True)
        u = torch.where(m > 1, c / m.clamp_min(1) / (2 - m.clamp(1, 2 - 1e-6)), c)
        return self.center.to(c) + self.radius * u

    def steps(self, x: Tensor) -> Tensor:
        """World points (N, 3) -> (N,) how many world units one grid unit spans radially there:
        radius * max(1, |u|_inf)^2."""
        m = ((x - self.center.to(x)) / self.radius).abs().amax(-1)
        return self.radius * m.clamp_min(1) ** 2
