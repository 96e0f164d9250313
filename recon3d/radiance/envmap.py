"""What a bounded model cannot hold: the sky and the far background of real photos.

`EnvMap` is a learned colour per direction (an equirectangular texture, bilinear), the far field at infinite
distance: a pixel's colour is `C_model + (1 - opacity_model) * env(direction)`. The NeRF's voxel box uses it
for the rays that leave the box unabsorbed (the far half of NeRF++'s inside/outside split in its simplest form:
distance-free, right for sky, approximate for far buildings); the Gaussians for the pixels they leave
uncovered (`background_model`: `auto`, the NeRF's default, gives it to photos without alpha masks; the Gaussians'
default is `none`, their one learned colour, as the env map gained them nothing measured: README).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recon3d.radiance.views import View, view_rays


class EnvMap(torch.nn.Module):
    """RGB over directions: a (3, height, 2 height) texture of logits; +z is the texture's pole."""

    def __init__(self, height: int = 32, init_rgb: Tensor | None = None):
        super().__init__()
        logits = colour_logits(init_rgb)
        self.texture = torch.nn.Parameter(logits[:, None, None].repeat(1, height, 2 * height).contiguous())

    @classmethod
    def from_texture(cls, texture: Tensor) -> EnvMap:
        """The env map of a saved texture (3, height, 2 height) of logits."""
        envmap = cls(texture.shape[1])
        envmap.texture.data.copy_(texture)
        return envmap

    def forward(self, dirs: Tensor) -> Tensor:
        """dirs (R, 3) unit, world frame -> colours (R, 3) in (0, 1)."""
        grid = equirect(dirs)[None, None]  # (1, 1, R, 2)
        sampled = torch.nn.functional.grid_sample(self.texture[None], grid, mode="bilinear",
                                                  padding_mode="border", align_corners=False)
        return torch.sigmoid(sampled[0, :, 0].T)


def colour_logits(rgb: Tensor | None) -> Tensor:
    """(3,) the logits a texture starts at for the colour `rgb` (3,) (kept 0.02 from 0 and 1; None: grey)."""
    rgb = torch.full((3,), 0.5) if rgb is None else rgb.float().clamp(0.02, 0.98)
    return torch.log(rgb / (1 - rgb))


def equirect(dirs: Tensor) -> Tensor:
    """Unit directions (..., 3) -> equirectangular texture coordinates (..., 2) in [-1, 1] as `grid_sample` takes
    them: longitude, colatitude (+z the pole)."""
    u = torch.atan2(dirs[..., 1], dirs[..., 0]) / math.pi
    v = 2 * torch.acos(dirs[..., 2].clamp(-1, 1)) / math.pi - 1
    return torch.stack([u, v], -1)


def behind(envmap: EnvMap, view: View, block: int = 4) -> Tensor:
    """(H, W, 3) the env map's colour along each pixel's ray of `view`, looked up once per `block` x `block`
    pixels (at the block's centre) and shared by them. The map is smooth: at the default height a texel spans
    5.6 degrees, a block of photo pixels a tenth of that or less, so neighbouring blocks differ by a tenth of
    neighbouring texels; a lookup per pixel costs 2-3 times as much (a 512 px view with its backward: 25 against
    10 ms on one thread, beside a Gaussian step's 180)."""
    h, w = math.ceil(view.height / block), math.ceil(view.width / block)
    K = view.K.clone()
    K[:2] /= block  # the coarse grid's pixel centres are the blocks' centres
    coarse = View(view.name, view.image[:0], None, view.cam_from_world, K, w, h)
    colours = envmap(view_rays(coarse)[1].to(envmap.texture.device)).reshape(h, 1, w, 1, 3)
    return colours.expand(h, block, w, block, 3).reshape(h * block, w * block, 3)[:view.height, :view.width]
