"""The voxel-grid radiance field: rays, sampling, the grid, the colour head and volume rendering.

Why a grid (DVGO, Sun et al. 2022) and not a hash grid or TensoRF on this CPU: trilinear lookups into one
dense grid are 8 contiguous reads per sample with no hashing and no factor products, and their backward is a
plain scatter that a lazy Adam consumes voxel by voxel, so a step costs what the batch touches, not what the
model holds; instant-ngp's hash tables and TensoRF's planes spend their time in scatter-heavy backward passes
and dense optimizer updates (measured for TensoRF-VM in ../shared/PERF_NOTES.md). Density is post-activated
(`sigma = softplus(grid + shift)` after interpolation, sharp surfaces from a coarse grid) and the colour
comes from a small MLP head on the interpolated features and the view direction's SH basis (degree 2).

Frames: rays are built from `View`s by `radiance.views.view_rays` and nowhere else, `origin + t * direction` in
the world frame with unit directions; the pixel (row y, column x) centre is at (x + 0.5, y + 0.5) (COLMAP), so
the ray through it is `R^T K^-1 (x + 0.5, y + 0.5, 1)` from the camera centre.

Each heavy step has a readable PyTorch reference (`trilinear_reference`, `volume_render`) and a C++ twin
(`gather`, `render_rays` in `_field.cpp`); tests compare them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from recon3d.radiance.nerf import kernel
from recon3d.radiance.sh import sh_basis


def trilinear_reference(grid: Tensor, points: Tensor, aabb: Tensor) -> Tensor:
    """grid: (R, R, R, C) values at the corners of R^3 cells spanning aabb (6,) = (min xyz, max xyz);
    points: (S, 3) world -> (S, C) trilinear interpolation, zeros outside the box. Differentiable."""
    R = grid.shape[0]
    g = (points - aabb[:3]) / (aabb[3:] - aabb[:3]) * (R - 1)
    inside = ((g >= 0) & (g <= R - 1)).all(-1)
    i0 = torch.clamp(g.floor().long(), 0, R - 2)
    f = g - i0
    out = torch.zeros(points.shape[0], grid.shape[-1], dtype=grid.dtype, device=grid.device)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
                     * (f[:, 2] if dz else 1 - f[:, 2]))
                out = out + w[:, None] * grid[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    return out * inside[:, None]


def tv_reference(grid: Tensor, weight: Tensor) -> Tensor:
    """grid (R, R, R, C), weight (C,) -> the total variation whose gradient `VoxelGrid.add_tv` adds (DVGO's):
    sum over channels and face-neighbour pairs of weight / 6 x Huber(difference) (quadratic within 1, then
    linear, so one sharp surface costs what a slope does). Differentiable; the readable reference."""
    loss = grid.new_zeros(())
    for axis in range(3):
        d = grid.narrow(axis, 1, grid.shape[axis] - 1) - grid.narrow(axis, 0, grid.shape[axis] - 1)
        loss = loss + (F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=1.0) * weight).sum()
    return loss / 6


def volume_render(sigma: Tensor, rgb: Tensor, dt: Tensor, t: Tensor, ray_of_sample: Tensor, n_rays: int,
                  background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Volume rendering (Max 1995; NeRF eq. 3) over packed samples, as a pure differentiable function.

    sigma (S,) >= 0, rgb (S, 3), dt (S,), t (S,) distances along the ray, ray_of_sample (S,) int64 sorted
    (samples of a ray are contiguous, front to back), background (3,).
    alpha_i = 1 - exp(-sigma_i dt_i), T_i = exp(-sum_{j<i} sigma_j dt_j), w_i = T_i alpha_i;
    returns colour (R, 3) = sum w_i c_i + T_final bg, opacity (R,) = sum w_i, depth (R,) = sum w_i t_i.
    """
    tau = sigma * dt
    cum = torch.zeros(n_rays, dtype=sigma.dtype, device=sigma.device).index_add(0, ray_of_sample, tau)
    w = sample_weights(sigma, dt, ray_of_sample, n_rays)
    color = torch.zeros(n_rays, 3, dtype=rgb.dtype, device=rgb.device).index_add(0, ray_of_sample, w[:, None] * rgb)
    opacity = 1 - torch.exp(-cum)
    depth = torch.zeros(n_rays, dtype=t.dtype, device=t.device).index_add(0, ray_of_sample, w * t)
    return color + (1 - opacity)[:, None] * background, opacity, depth


def _before(x: Tensor, ray_of_sample: Tensor, n_rays: int) -> Tensor:
    """(S,) -> (S,) the sum of x over the samples before each one on its ray (samples of a ray contiguous)."""
    counts = torch.bincount(ray_of_sample, minlength=n_rays)
    incl = torch.cumsum(x, 0)
    start_of_ray = torch.cat([incl.new_zeros(1), incl])[torch.cumsum(counts, 0) - counts]
    return incl - x - start_of_ray[ray_of_sample]


def sample_weights(sigma: Tensor, dt: Tensor, ray_of_sample: Tensor, n_rays: int) -> Tensor:
    """(S,) w_i = T_i alpha_i of packed samples, as in `volume_render`."""
    tau = sigma * dt
    return torch.exp(-_before(tau, ray_of_sample, n_rays)) * (1 - torch.exp(-tau))


def distortion(w: Tensor, s: Tensor, ds: Tensor, ray_of_sample: Tensor, n_rays: int) -> Tensor:
    """Mip-NeRF 360's distortion loss per ray (R,): sum_ij w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 ds_i, with w (S,)
    the samples' weights (`sample_weights`) at distances s (S,) sorted along each ray, over intervals ds (S,).
    Small when a ray's weight sits in one short interval, large for haze spread along it (floaters). The double
    sum in linear time: 2 sum_i w_i (s_i W_i - (w s)_i), W and (w s) summed over the samples before i."""
    pairs = 2 * w * (s * _before(w, ray_of_sample, n_rays) - _before(w * s, ray_of_sample, n_rays))
    own = w * w * ds / 3
    return torch.zeros(n_rays, dtype=w.dtype, device=w.device).index_add(0, ray_of_sample, pairs + own)


class ColourHead(torch.nn.Module):
    """Features (S, F) and unit view directions (S, 3) -> colour (S, 3) in (0, 1): an MLP on the features and
    the directions' degree-2 SH basis. `forward` is the readable form (and the test's reference); rendering
    and training call `shade`."""

    def __init__(self, features: int, width: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(features + 9, width), torch.nn.ReLU(),
                                       torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))

    def forward(self, feats: Tensor, dirs: Tensor) -> Tensor:
        return torch.sigmoid(self.net(torch.cat([feats, sh_basis(2, dirs)], -1)))

    def shade(self, feats: Tensor, ray_dirs: Tensor, ray_of: Tensor) -> Tensor:
        """`forward(feats, ray_dirs[ray_of])` for samples (S, F) along rays (R, 3), faster: the directions'
        share of the first layer is computed once per ray, not per sample, and activations run in place."""
        first, second, third = self.net[0], self.net[2], self.net[4]
        n = feats.shape[1]
        per_ray = F.linear(sh_basis(2, ray_dirs), first.weight[:, n:], first.bias)
        hidden = F.linear(feats, first.weight[:, :n]).add_(per_ray.index_select(0, ray_of)).relu_()
        hidden = F.linear(hidden, second.weight, second.bias).relu_()
        return F.linear(hidden, third.weight, third.bias).sigmoid_()


def density_shift(alpha_init: float, dt: float) -> float:
    """The shift s with softplus(0 + s) * dt = -ln(1 - alpha_init): a zero grid starts at that alpha per step."""
    sigma = -math.log(1 - alpha_init) / dt
    return math.log(math.expm1(sigma))


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


class _Gather(torch.autograd.Function):
    """Trilinear gather by the C++ kernel. The backward pass adds into the field's own gradient buffer and
    marks the touched voxels for the lazy Adam step, instead of handing autograd a dense (R^3, C) gradient."""

    @staticmethod
    def forward(ctx, anchor, field: VoxelGrid, points):
        out = torch.empty(points.shape[0], field.channels)
        kernel.load().gather(torch.get_num_threads(), points.shape[0], _ptr(points), _ptr(field.values),
                             field.res, field.channels, _ptr(field.aabb), _ptr(out))
        ctx.field, ctx.points = field, points
        return out

    @staticmethod
    def backward(ctx, grad):
        f: VoxelGrid = ctx.field
        grad = grad.contiguous()
        f.n_touched = kernel.load().scatter(ctx.points.shape[0], _ptr(ctx.points), _ptr(grad), f.res, f.channels,
                                            _ptr(f.aabb), _ptr(f.grad), _ptr(f.touched), _ptr(f.touched_list),
                                            f.n_touched)
        return None, None, None


class VoxelGrid:
    """R^3 voxels of C floats (channel 0: density before activation; 1..: colour features) over `aabb`, with
    its gradient buffer, lazy Adam moments and the list of voxels the current batch touched."""

    def __init__(self, values: Tensor, aabb: Tensor):
        self.values = values.contiguous()  # (R^3, C)
        self.res = round(values.shape[0] ** (1 / 3))
        self.channels = values.shape[1]
        self.aabb = aabb.float().contiguous()
        lazy = values.device.type == "cpu"  # the C++ path's buffers; the PyTorch path uses autograd and Adam
        self.grad = torch.zeros_like(self.values) if lazy else None
        self.m = torch.zeros_like(self.values) if lazy else None
        self.v = torch.zeros_like(self.values) if lazy else None
        self.touched = torch.zeros(self.values.shape[0], dtype=torch.uint8) if lazy else None
        self.touched_list = torch.empty(self.values.shape[0], dtype=torch.int64) if lazy else None
        self.n_touched = 0
        self.anchor = torch.zeros(1, requires_grad=True)  # gives autograd a leaf to reach _Gather through

    def gather(self, points: Tensor) -> Tensor:
        """(S, 3) world points -> (S, C), differentiable into this grid (see `_Gather`)."""
        return _Gather.apply(self.anchor, self, points.contiguous())

    def add_tv(self, weight: Tensor) -> None:
        """Adds the gradient of `tv_reference` (weight (C,) per channel) to the voxels the batch touched, as
        DVGO's sparse total variation: each touched voxel is drawn toward its neighbours, the rest untouched."""
        weight = weight.float().contiguous()
        kernel.load().tv_grad(torch.get_num_threads(), self.n_touched, _ptr(self.touched_list), self.res,
                              self.channels, _ptr(self.values), _ptr(weight), _ptr(self.grad))

    def adam_step(self, lr: float, step: int, betas=(0.9, 0.99), eps: float = 1e-15) -> int:
        """Lazy Adam on the touched voxels; returns how many there were."""
        n = self.n_touched
        kernel.load().sparse_adam(torch.get_num_threads(), n, _ptr(self.touched_list), self.channels,
                                  _ptr(self.values), _ptr(self.grad), _ptr(self.m), _ptr(self.v), _ptr(self.touched),
                                  lr, betas[0], betas[1], eps, step)
        self.n_touched = 0
        return n


class _RenderRays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigma, rgb, dt, t, offsets, background):
        n_rays = offsets.shape[0] - 1
        color, opacity, depth = torch.empty(n_rays, 3), torch.empty(n_rays), torch.empty(n_rays)
        sigma, rgb = sigma.contiguous(), rgb.contiguous()
        kernel.load().render_rays(torch.get_num_threads(), n_rays, _ptr(offsets), _ptr(sigma), _ptr(rgb), _ptr(dt),
                                  _ptr(t), _ptr(background), _ptr(color), _ptr(opacity), _ptr(depth))
        ctx.save_for_backward(sigma, rgb, dt, t, offsets, background)
        return color, opacity, depth

    @staticmethod
    def backward(ctx, grad_color, grad_opacity, grad_depth):
        sigma, rgb, dt, t, offsets, background = ctx.saved_tensors
        n_rays = offsets.shape[0] - 1
        g_sigma, g_rgb = torch.empty_like(sigma), torch.empty_like(rgb)
        gc, go, gd = (torch.zeros(n_rays, *shape) if g is None else g.contiguous()
                      for g, shape in ((grad_color, (3,)), (grad_opacity, ()), (grad_depth, ())))
        kernel.load().render_rays_backward(torch.get_num_threads(), n_rays, _ptr(offsets), _ptr(sigma), _ptr(rgb),
                                           _ptr(dt), _ptr(t), _ptr(background), _ptr(gc), _ptr(go), _ptr(gd),
                                           _ptr(g_sigma), _ptr(g_rgb))
        return g_sigma, g_rgb, None, None, None, None


def render_rays(sigma: Tensor, rgb: Tensor, dt: Tensor, t: Tensor, offsets: Tensor,
                background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`volume_render` by the C++ kernel, samples of ray r at offsets[r]:offsets[r + 1]."""
    return _RenderRays.apply(sigma, rgb, dt.contiguous(), t.contiguous(), offsets.contiguous(),
                             background.float().contiguous())
