"""Far field with parallax: semi-transparent spherical shells between the NeRF's box and the env map.

The env map (`radiance.envmap`) is a colour per direction at infinite distance: it cannot hold a background
that moves against the subject from one photo to the next (the ground, bushes and trees behind a tree
photographed from twenty places). NeRF++ gives what lies outside its unit sphere a second volume in inverted
sphere coordinates; `Shells` is the discrete form of that volume (a multi-sphere image): `K` spheres about the
box's centre, spaced evenly in inverse radius from the sphere that encloses the box out to `far` times its
radius, each an RGBA texture over the directions from the centre. A ray that leaves the box crosses each
sphere once more where it leaves it (the far root: a sphere that encloses the box is crossed there after the
box, and a camera outside a sphere sees only its far side, behind the subject), takes each shell's colour
and alpha there, and composites them front to back over the env map:

    behind = sum_k T_k a_k c_k + T_K env(d),   T_k = prod_{j<k} (1 - a_j).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recon3d.radiance.envmap import colour_logits, equirect

ALPHA_INIT = 0.02  # each shell starts nearly transparent: the env map and the box explain the photos first


class Shells(torch.nn.Module):
    """K RGBA shells about `center` (3,) at `radii` (K,) ascending, world units; textures (K, 4, height,
    2 height) of logits, +z the textures' pole."""

    def __init__(self, center: Tensor, radii: Tensor, height: int = 32, init_rgb: Tensor | None = None):
        super().__init__()
        self.register_buffer("center", center.float().reshape(3).clone())
        self.register_buffer("radii", radii.float().reshape(-1).clone())
        logits = torch.cat([colour_logits(init_rgb), torch.tensor([math.log(ALPHA_INIT / (1 - ALPHA_INIT))])])
        k = self.radii.shape[0]
        self.texture = torch.nn.Parameter(logits[None, :, None, None].repeat(k, 1, height, 2 * height).contiguous())

    @classmethod
    def around_box(cls, aabb: Tensor, count: int, far: float, height: int,
                   init_rgb: Tensor | None = None) -> Shells:
        """`count` shells about the centre of `aabb` (6,), evenly spaced in inverse radius from the sphere that
        encloses the box (radius r0, excluded: it touches the box's corners) to `far` x r0 (included)."""
        center = (aabb[:3] + aabb[3:]) / 2
        r0 = float((aabb[3:] - aabb[:3]).norm()) / 2
        inverse = torch.linspace(1.0, 1.0 / far, count + 1, dtype=torch.float64)[1:]
        return cls(center, (r0 / inverse).float(), height, init_rgb)

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> Shells:
        """The shells of a saved `state_dict()`."""
        shells = cls(state["center"], state["radii"], state["texture"].shape[2])
        shells.texture.data.copy_(state["texture"])
        return shells

    def crossings(self, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """Where rays (R, 3) / (R, 3) unit leave each sphere: points relative to the centre (K, R, 3) and whether
        the ray crosses it there, in front of its origin (K, R) bool."""
        o = origins - self.center.to(origins)
        b = (o * dirs).sum(-1)  # (R,)
        disc = b**2 - (o * o).sum(-1) + self.radii.to(origins)[:, None] ** 2  # (K, R)
        t = -b + disc.clamp_min(0).sqrt()
        return o + t[..., None] * dirs, (disc > 0) & (t > 0)

    def forward(self, origins: Tensor, dirs: Tensor, far: Tensor) -> Tensor:
        """Colours (R, 3): the shells along rays (R, 3) / (R, 3) unit, composited over `far` (R, 3), what the
        rays see behind the last shell (the env map)."""
        points, crossed = self.crossings(origins, dirs)
        grid = equirect(points / self.radii.to(points)[:, None, None])[:, None]  # (K, 1, R, 2)
        rgba = torch.sigmoid(torch.nn.functional.grid_sample(self.texture, grid, mode="bilinear",
                                                             padding_mode="border", align_corners=False)[:, :, 0])
        alpha = rgba[:, 3] * crossed  # (K, R)
        out = torch.zeros_like(far)
        transmittance = torch.ones_like(far[:, 0])
        for k in range(alpha.shape[0]):
            out = out + (transmittance * alpha[k])[:, None] * rgba[k, :3].T
            transmittance = transmittance * (1 - alpha[k])
        return out + transmittance[:, None] * far
