"""The NeRF model: a voxel grid (density + features), the colour head, the occupancy grid, and rendering of
ray batches through them, by the C++ kernels (`backend: cpu`) or in plain PyTorch on any device
(`backend: torch`, the reference; what CUDA runs).

Density is measured per `density_unit` (1/100 of the box), so `alpha = 1 - exp(-sigma dt)` with
`dt = step / unit`, and depth is in world units along the ray.

Sampling: every `step` (half a voxel) along the ray inside the box, only in occupied cells of the occupancy
grid; samples are then pruned by the density alone (weight `T alpha` <= 1e-4, or after the ray's
transmittance fell below 1e-4), and only the survivors get features, colour and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from recon3d.errors import DataError
from recon3d.io.weights import read_weights, write_weights
from recon3d.radiance.nerf import kernel
from recon3d.radiance.nerf.background import EnvMap
from recon3d.radiance.nerf.field import (
    ColourHead,
    VoxelGrid,
    _ptr,
    density_shift,
    render_rays,
    trilinear_reference,
    volume_render,
)

MIN_WEIGHT = 1e-4  # training: samples below this weight get no colour and no gradient
RENDER_MIN_WEIGHT = 1e-3  # rendering: 20 % faster on lego, test PSNR 33.318 -> 33.313 dB


@dataclass
class NerfModel:
    grid: VoxelGrid
    head: ColourHead
    occupancy: Tensor  # (G, G, G) uint8 over the grid's box
    shift: float  # density = softplus(grid + shift)
    envmap: EnvMap | None = None  # the far field a ray sees when it leaves the box unabsorbed (None: background)

    @classmethod
    def create(cls, aabb: Tensor, res: int, features: int, width: int, alpha_init: float,
               occupancy: Tensor, envmap: EnvMap | None = None) -> NerfModel:
        values = torch.zeros(res**3, 1 + features)
        values[:, 1:] = 0.1 * torch.randn(res**3, features)
        grid = VoxelGrid(values, aabb)
        return cls(grid, ColourHead(features, width), occupancy.to(torch.uint8).contiguous(),
                   density_shift(alpha_init, dt_of(aabb, res)), envmap)

    @property
    def step(self) -> float:
        """Distance between samples, world units."""
        return step_size(self.grid.aabb, self.grid.res)

    @property
    def dt(self) -> float:
        """The step in density units (`density_unit`): what sigma multiplies."""
        return dt_of(self.grid.aabb, self.grid.res)

    def to(self, device: str) -> NerfModel:
        """The model on `device` for the PyTorch backend (the C++ backend keeps it on the CPU)."""
        grid = VoxelGrid(self.grid.values.to(device), self.grid.aabb.to(device)) if device != "cpu" else self.grid
        return NerfModel(grid, self.head.to(device), self.occupancy.to(device), self.shift,
                         None if self.envmap is None else self.envmap.to(device))

    def resize(self, res: int, alpha_init: float) -> None:
        """Trilinear upsampling of the grid to `res` (coarse to fine); moments restart."""
        old = self.grid.values.reshape(self.grid.res, self.grid.res, self.grid.res, -1).permute(3, 0, 1, 2)
        new = torch.nn.functional.interpolate(old[None], size=(res, res, res), mode="trilinear", align_corners=True)
        shift_new = density_shift(alpha_init, dt_of(self.grid.aabb, res))
        new[0, 0] += self.shift - shift_new  # same density where there was one
        self.grid = VoxelGrid(new[0].permute(1, 2, 3, 0).reshape(res**3, -1), self.grid.aabb)
        self.shift = shift_new

    def density_alpha(self) -> Tensor:
        """(R, R, R) alpha of one step at each voxel."""
        sigma = torch.nn.functional.softplus(self.grid.values[:, 0] + self.shift)
        return (1 - torch.exp(-sigma * self.dt)).reshape(self.grid.res, self.grid.res, self.grid.res)

    def render(self, origins: Tensor, dirs: Tensor, background: Tensor, backend: str = "cpu",
               jitter: Tensor | None = None, min_weight: float = MIN_WEIGHT) -> tuple[Tensor, Tensor, Tensor, int]:
        """Render rays (R, 3) / (R, 3) unit: colour (R, 3), opacity (R,), depth along the ray (R,) and the
        number of samples that were shaded (those of weight above `min_weight`). With an `envmap` the rays see
        it instead of `background` where the box leaves them transparent."""
        if self.envmap is not None:
            color, opacity, depth, shaded = self._render_box(origins, dirs, torch.zeros_like(background), backend,
                                                             jitter, min_weight)
            return color + (1 - opacity)[:, None] * self.envmap(dirs), opacity, depth, shaded
        return self._render_box(origins, dirs, background, backend, jitter, min_weight)

    def _render_box(self, origins: Tensor, dirs: Tensor, background: Tensor, backend: str, jitter: Tensor | None,
                    min_weight: float) -> tuple[Tensor, Tensor, Tensor, int]:
        jitter = torch.full((origins.shape[0],), 0.5, device=origins.device) if jitter is None else jitter
        t, ray_of, offsets, points = self._samples(origins, dirs, jitter, backend, min_weight)
        if backend == "cpu":
            feats = self.grid.gather(points)
        else:
            R = self.grid.res
            feats = trilinear_reference(self.grid.values.reshape(R, R, R, -1), points, self.grid.aabb)
        sigma = torch.nn.functional.softplus(feats[:, 0] + self.shift)
        rgb = self.head(feats[:, 1:], dirs[ray_of])
        dt = torch.full_like(t, self.dt)
        if backend == "cpu":
            color, opacity, depth = render_rays(sigma, rgb, dt, t, offsets, background)
        else:
            color, opacity, depth = volume_render(sigma, rgb, dt, t, ray_of, origins.shape[0], background)
        return color, opacity, depth, t.shape[0]

    def _samples(self, origins: Tensor, dirs: Tensor, jitter: Tensor, backend: str,
                 min_weight: float = MIN_WEIGHT) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pruned samples: t (S,), ray of each (S,) int64 sorted, offsets (R + 1,), points (S, 3)."""
        n = origins.shape[0]
        with torch.no_grad():
            if backend == "cpu":
                t, offsets = self._march_cpu(origins, dirs, jitter)
            else:
                t, offsets = march_reference(origins, dirs, jitter, self.grid.aabb, self.occupancy, self.step)
            counts = offsets[1:] - offsets[:-1]
            ray_of = torch.repeat_interleave(torch.arange(n, device=origins.device), counts)
            points = origins[ray_of] + t[:, None] * dirs[ray_of]
            keep = self._keep(points, ray_of, offsets, backend, min_weight)
            t, ray_of, points = t[keep], ray_of[keep], points[keep]
            offsets = torch.zeros(n + 1, dtype=torch.int64, device=origins.device)
            offsets[1:] = torch.cumsum(torch.bincount(ray_of, minlength=n), 0)
        return t, ray_of, offsets, points

    def _march_cpu(self, origins: Tensor, dirs: Tensor, jitter: Tensor) -> tuple[Tensor, Tensor]:
        lib = kernel.load()
        n = origins.shape[0]
        o, d, j = origins.contiguous(), dirs.contiguous(), jitter.float().contiguous()
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        capacity = 64 * n
        while True:
            t = torch.empty(capacity)
            total = lib.march(n, _ptr(o), _ptr(d), _ptr(j), _ptr(self.grid.aabb), _ptr(self.occupancy),
                              self.occupancy.shape[0], self.step, 0.0, _ptr(offsets), _ptr(t), capacity)
            if total <= capacity:
                return t[:total], offsets
            capacity = total

    def _keep(self, points: Tensor, ray_of: Tensor, offsets: Tensor, backend: str, min_weight: float) -> Tensor:
        n_rays = offsets.shape[0] - 1
        if backend == "cpu":
            keep = torch.empty(points.shape[0], dtype=torch.uint8)
            kernel.load().prune(torch.get_num_threads(), n_rays, _ptr(offsets), _ptr(points.contiguous()),
                                _ptr(self.grid.values), self.grid.res, self.grid.channels, _ptr(self.grid.aabb),
                                self.shift, self.dt, min_weight, _ptr(keep))
            return keep.bool()
        R = self.grid.res
        d = trilinear_reference(self.grid.values[:, :1].reshape(R, R, R, 1), points, self.grid.aabb)[:, 0]
        alpha = 1 - torch.exp(-torch.nn.functional.softplus(d + self.shift) * self.dt)
        tau = -torch.log1p(-alpha.clamp(max=1 - 1e-7))
        incl = torch.cumsum(tau, 0)
        first = torch.cat([incl.new_zeros(1), incl])[offsets[:-1]]
        T = torch.exp(-(incl - tau - first[ray_of]))
        return (T >= 1e-4) & (T * alpha > min_weight)

    # -- files -----------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        tensors = {"grid": self.grid.values, "aabb": self.grid.aabb, "occupancy": self.occupancy,
                   **{f"head.{k}": v.detach() for k, v in self.head.state_dict().items()},
                   **({} if self.envmap is None else {"envmap": self.envmap.texture.detach()})}
        return write_weights(path, tensors, {"format": "recon3d-nerf", "shift": repr(self.shift),
                                             "features": str(self.grid.channels - 1),
                                             "width": str(self.head.net[0].out_features)})

    @classmethod
    def load(cls, path: str | Path) -> NerfModel:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no NeRF model at {path}", "train one first (recon3d nerf) or pass its file")
        tensors, meta = read_weights(path)
        if meta.get("format") != "recon3d-nerf":
            raise DataError(f"{path} is not a recon3d NeRF model", "pass a model.safetensors written by recon3d nerf")
        head = ColourHead(int(meta["features"]), int(meta["width"]))
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        envmap = EnvMap.from_texture(tensors["envmap"]) if "envmap" in tensors else None
        return cls(VoxelGrid(tensors["grid"], tensors["aabb"]), head, tensors["occupancy"], float(meta["shift"]),
                   envmap)


def density_unit(aabb: Tensor) -> float:
    """The length density is measured per: 1/100 of the box. A fixed unit keeps the grid's values in a range
    Adam moves quickly (an opaque surface is a few units, not hundreds) at any resolution or scene scale."""
    return float((aabb[3:] - aabb[:3]).max()) / 100


def step_size(aabb: Tensor, res: int) -> float:
    """Half a voxel of a grid with `res` corners per side over `aabb`."""
    return 0.5 * float((aabb[3:] - aabb[:3]).max()) / (res - 1)


def dt_of(aabb: Tensor, res: int) -> float:
    """The sampling step of a `res` grid over `aabb`, in density units."""
    return step_size(aabb, res) / density_unit(aabb)


def march_reference(origins: Tensor, dirs: Tensor, jitter: Tensor, aabb: Tensor, occupancy: Tensor,
                    step: float) -> tuple[Tensor, Tensor]:
    """PyTorch twin of the C++ `march`: t (S,) of the samples in occupied cells, offsets (R + 1,)."""
    inv = 1.0 / dirs
    ta, tb = (aabb[:3] - origins) * inv, (aabb[3:] - origins) * inv
    t0 = torch.minimum(ta, tb).amax(-1).clamp(min=0)
    t1 = torch.maximum(ta, tb).amin(-1)
    n_max = int(((t1 - t0).clamp(min=0) / step).max().ceil()) + 1
    t = t0[:, None] + (jitter[:, None] + torch.arange(n_max, device=origins.device)) * step  # (R, n_max)
    pts = origins[:, None] + t[..., None] * dirs[:, None]
    G = occupancy.shape[0]
    cell = ((pts - aabb[:3]) * (G / (aabb[3:] - aabb[:3]))).long().clamp(0, G - 1)
    ok = (t < t1[:, None]) & occupancy[cell[..., 0], cell[..., 1], cell[..., 2]].bool()
    offsets = torch.zeros(origins.shape[0] + 1, dtype=torch.int64, device=origins.device)
    offsets[1:] = torch.cumsum(ok.sum(-1), 0)
    return t[ok], offsets
