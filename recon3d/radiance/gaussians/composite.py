"""Tile binning and front-to-back alpha compositing of projected Gaussians, on the CPU.

Two implementations of one function, `composite(...) -> (image, alpha)`:

* `composite_reference`: pure PyTorch, differentiable by autograd. Tiles are processed in chunks (padded
  per-tile lists, transmittance by `cumprod`) so memory stays bounded. Readable; the test oracle.
* `composite_cpu`: the C++ kernel in `_composite.cpp` with a hand-written backward (front to back per pixel,
  early stop, transmittance recovered in reverse, each Gaussian visiting only its own screen extent).

The rules both follow (3DGS, Kerbl et al. 2023, and gsplat): pixel centres at (x + 0.5, y + 0.5);
`alpha = min(0.99, opacity * exp(-0.5 d^T conic d))`, skipped below 1/255; a pixel stops before the Gaussian
that would bring its transmittance T to 1e-4 or below; `image = sum_i alpha_i T_i f_i + T_final background`
and `alpha = 1 - T_final`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recon3d.radiance.gaussians import kernel

TILE = 16  # pixels per tile side; _composite.cpp's kTile
ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.99, 1e-4


def _check(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, extents: Tensor,
           background: Tensor) -> None:
    n = means2d.shape[0]
    want = {"means2d": (means2d, (n, 2)), "conics": (conics, (n, 3)), "opacities": (opacities, (n,)),
            "extents": (extents, (n, 2)), "background": (background, (feats.shape[-1],))}
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if feats.ndim != 2 or feats.shape[0] != n or feats.shape[1] > 8:
        raise ValueError(f"feats must be (N, C) with N = {n} and C <= 8, got {tuple(feats.shape)}")


def tile_grid(width: int, height: int, tile: int = TILE) -> tuple[int, int]:
    return math.ceil(width / tile), math.ceil(height / tile)


def bin_reference(means2d: Tensor, extents: Tensor, depths: Tensor, width: int, height: int,
                  tile: int = TILE) -> tuple[Tensor, Tensor]:
    """Gaussians per tile, front to back: `(offsets (T + 1,) int64, ids (M,) int32)`, tiles row-major.

    means2d: (N, 2) pixels; extents: (N, 2) half-width and half-height of the screen footprint, pixels;
    depths: (N,) camera z. Tile (tx, ty) holds every Gaussian whose footprint rectangle touches it.
    """
    tiles_x, tiles_y = tile_grid(width, height, tile)
    order = torch.argsort(depths, stable=True)
    lo = torch.floor((means2d - extents) / tile)[order].long()
    hi = torch.floor((means2d + extents) / tile)[order].long()
    x0, y0 = lo[:, 0].clamp(min=0), lo[:, 1].clamp(min=0)
    x1, y1 = hi[:, 0].clamp(max=tiles_x - 1), hi[:, 1].clamp(max=tiles_y - 1)
    w, h = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
    counts = w * h
    starts = torch.cumsum(counts, 0) - counts
    which = torch.repeat_interleave(torch.arange(len(order)), counts)  # entry -> position in `order`
    local = torch.arange(int(counts.sum())) - starts[which]
    tile_id = (y0[which] + local // w[which]) * tiles_x + x0[which] + local % w[which]
    perm = torch.sort(tile_id, stable=True).indices
    ids = order[which[perm]].to(torch.int32)
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(tile_id, minlength=tiles_x * tiles_y), 0)
    return offsets, ids


def bin_cpu(means2d: Tensor, extents: Tensor, depths: Tensor, width: int, height: int,
            tile: int = TILE) -> tuple[Tensor, Tensor]:
    """`bin_reference` by the C++ kernel (a radix sort by depth, a counting sort over tiles): the same
    offsets and ids."""
    lib = kernel.load()
    tiles_x, tiles_y = tile_grid(width, height, tile)
    keys = depths.detach().float().contiguous()
    order = torch.empty(len(keys), dtype=torch.int64)
    lib.depth_order(len(keys), keys.data_ptr(), order.data_ptr())  # stable, as bin_reference's argsort
    m2, ex = means2d.detach().float().contiguous(), extents.detach().float().contiguous()
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
    capacity = 4 * len(order) + 1024
    while True:
        ids = torch.empty(capacity, dtype=torch.int32)
        total = lib.bin_gaussians(width, height, tile, len(order), order.data_ptr(), m2.data_ptr(), ex.data_ptr(),
                                  offsets.data_ptr(), ids.data_ptr(), capacity)
        if total <= capacity:
            return offsets, ids[:total]
        capacity = total


def composite_reference(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, depths: Tensor,
                        extents: Tensor, background: Tensor, width: int, height: int,
                        tiles_per_chunk: int = 8) -> tuple[Tensor, Tensor]:
    """Composite Gaussians front to back; pure PyTorch, differentiable by autograd.

    means2d: (N, 2) pixel positions; conics: (N, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]];
    opacities: (N,) in [0, 1]; feats: (N, C) what is composited (RGB, depth, ...); depths: (N,) sort key,
    nearest first; extents: (N, 2) footprint half-sizes for binning (no gradient); background: (C,).
    Returns image (H, W, C) and alpha (H, W).
    """
    _check(means2d, conics, opacities, feats, extents, background)
    C = feats.shape[1]
    tiles_x, tiles_y = tile_grid(width, height)
    offsets, ids = bin_reference(means2d.detach(), extents, depths.detach(), width, height)
    counts = offsets[1:] - offsets[:-1]
    ids_padded = torch.cat([ids, ids.new_zeros(1)])  # a slot to read for padding
    iy, ix = torch.meshgrid(torch.arange(TILE), torch.arange(TILE), indexing="ij")
    local = torch.stack([ix.reshape(-1), iy.reshape(-1)], -1).to(means2d.dtype) + 0.5  # (P, 2) in a tile
    tiles_out = []
    alpha_out = []
    n_tiles = tiles_x * tiles_y
    for start in range(0, n_tiles, tiles_per_chunk):
        tiles = torch.arange(start, min(start + tiles_per_chunk, n_tiles))
        L = max(int(counts[tiles].max()), 1)
        slot = torch.arange(L)
        valid = slot[None, :] < counts[tiles, None]  # (t, L)
        entry = (offsets[tiles, None] + slot[None, :]).clamp(max=len(ids_padded) - 1)
        gid = torch.where(valid, ids_padded[entry], 0).long()  # (t, L) Gaussian per list slot
        origin = torch.stack([tiles % tiles_x, tiles // tiles_x], -1).to(means2d.dtype) * TILE
        pix = origin[:, None, :] + local[None]  # (t, P, 2)
        d = pix[:, :, None, :] - means2d[gid][:, None, :, :]  # (t, P, L, 2)
        con = conics[gid][:, None]  # (t, 1, L, 3)
        dx, dy = d[..., 0], d[..., 1]
        power = -0.5 * (con[..., 0] * dx**2 + con[..., 2] * dy**2) - con[..., 1] * dx * dy
        alpha = torch.clamp(opacities[gid][:, None] * torch.exp(power), max=ALPHA_MAX)
        alpha = torch.where(valid[:, None] & (power <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        keep = torch.cumprod(1 - alpha.detach(), -1) > T_MIN  # stop before T reaches 1e-4 (a prefix)
        alpha = alpha * keep
        T = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha], -1), -1)
        weights = alpha * T[..., :-1]  # (t, P, L)
        img = torch.einsum("tpl,tlc->tpc", weights, feats[gid]) + T[..., -1:] * background
        tiles_out.append(img)
        alpha_out.append(1 - T[..., -1])
    img = torch.cat(tiles_out).reshape(tiles_y, tiles_x, TILE, TILE, C).permute(0, 2, 1, 3, 4)
    alpha = torch.cat(alpha_out).reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3)
    img = img.reshape(tiles_y * TILE, tiles_x * TILE, C)[:height, :width]
    return img, alpha.reshape(tiles_y * TILE, tiles_x * TILE)[:height, :width]


class _CompositeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, extents, background, offsets, ids, width, height):
        lib = kernel.load()
        C = feats.shape[1]
        out = torch.empty(height, width, C)
        transmittance = torch.empty(height, width)
        last = torch.empty(height, width, dtype=torch.int32)
        args = [t.detach().contiguous() for t in (means2d, conics, opacities, feats, extents, background)]
        lib.composite_forward(torch.get_num_threads(), len(means2d), width, height, C,
                              *(t.data_ptr() for t in args), offsets.data_ptr(), ids.data_ptr(), out.data_ptr(),
                              transmittance.data_ptr(), last.data_ptr())
        ctx.save_for_backward(*args, offsets, ids, transmittance, last)
        ctx.size = (width, height)
        return out, 1 - transmittance

    @staticmethod
    def backward(ctx, grad_out, grad_alpha):
        lib = kernel.load()
        means2d, conics, opacities, feats, extents, background, offsets, ids, transmittance, last = ctx.saved_tensors
        width, height = ctx.size
        grads = [torch.zeros_like(t) for t in (means2d, conics, opacities, feats)]
        g_out = grad_out.contiguous()
        g_alpha = grad_alpha.contiguous()
        lib.composite_backward(torch.get_num_threads(), len(means2d), width, height, feats.shape[1],
                               *(t.data_ptr() for t in (means2d, conics, opacities, feats, extents, background)),
                               offsets.data_ptr(), ids.data_ptr(), transmittance.data_ptr(), last.data_ptr(),
                               g_out.data_ptr(), g_alpha.data_ptr(), *(g.data_ptr() for g in grads))
        return (*grads, None, None, None, None, None, None)


def composite_cpu(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, depths: Tensor,
                  extents: Tensor, background: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """`composite_reference` by the C++ kernel, with its hand-written backward. float32, CPU tensors."""
    _check(means2d, conics, opacities, feats, extents, background)
    offsets, ids = bin_cpu(means2d, extents, depths, width, height)
    f32 = [t.float() for t in (means2d, conics, opacities, feats, extents, background)]
    return _CompositeCPU.apply(*f32, offsets, ids, width, height)
