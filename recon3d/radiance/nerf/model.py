"""The NeRF model: a voxel grid (density + features), the colour head, the occupancy grid, and rendering of
ray batches through them, by the C++ kernels (`backend: cpu`) or in plain PyTorch on any device
(`backend: torch`, the reference; what CUDA runs).

The grid covers a box in the world, or with a `Contraction` all of space squeezed into [-2, 2]^3
(`space.py`: photos with sky and far background). Density is measured per `density_unit` (1/100 of the
grid's box, in grid space), so `alpha = 1 - exp(-sigma dt)` with `dt = step / unit`, and depth is in world
units along the ray. Rays start at `near` (world units; from the sparse points for photos).

Sampling: every `step` (half a voxel of the grid) along the ray inside the box, only in occupied cells of
the occupancy grid; in the same pass samples are pruned by the density alone (weight `T alpha` <= 1e-4, or
after the ray's transmittance fell below 1e-4), and only the survivors get features, colour and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from recon3d.errors import DataError
from recon3d.io.weights import read_weights, write_weights
from recon3d.radiance.envmap import EnvMap
from recon3d.radiance.nerf import kernel
from recon3d.radiance.nerf.field import (
    ColourHead,
    VoxelGrid,
    _before,
    _ptr,
    density_shift,
    distortion,
    render_rays,
    sample_weights,
    trilinear_reference,
    volume_render,
)
from recon3d.radiance.nerf.shells import Shells
from recon3d.radiance.nerf.space import FAR, GRID_BOX, Contraction

MIN_WEIGHT = 1e-4  # training: samples below this weight get no colour and no gradient
RENDER_MIN_WEIGHT = 1e-3  # rendering: 20 % faster on lego, test PSNR 33.318 -> 33.313 dB


@dataclass
class RayStats:
    shaded: int  # samples that got a colour (weight above the threshold)
    distortion: Tensor | None = None  # (R,) each ray's distortion loss, when asked for


@dataclass
class NerfModel:
    grid: VoxelGrid
    head: ColourHead
    occupancy: Tensor  # (G, G, G) uint8 over the grid's box
    shift: float  # density = softplus(grid + shift)
    envmap: EnvMap | None = None  # the far field a ray sees when it leaves the box unabsorbed (None: background)
    contraction: Contraction | None = None  # None: the grid's box is in the world
    near: float = 0.0  # world units along the ray before the first sample
    shells: Shells | None = None  # the far field with parallax, between the box and the env map (None: none)

    @classmethod
    def create(cls, aabb: Tensor, res: int, features: int, width: int, alpha_init: float, occupancy: Tensor,
               envmap: EnvMap | None = None, contraction: Contraction | None = None, near: float = 0.0,
               shells: Shells | None = None) -> NerfModel:
        """A fresh model over `aabb` (6,) world, or over `GRID_BOX` with a `contraction`; `occupancy` (G, G, G)
        over the grid's box."""
        box = GRID_BOX.clone() if contraction is not None else aabb
        values = torch.zeros(res**3, 1 + features)
        values[:, 1:] = 0.1 * torch.randn(res**3, features)
        grid = VoxelGrid(values, box)
        return cls(grid, ColourHead(features, width), occupancy.to(torch.uint8).contiguous(),
                   density_shift(alpha_init, dt_of(box, res)), envmap, contraction, near, shells)

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
                         None if self.envmap is None else self.envmap.to(device), self.contraction, self.near,
                         None if self.shells is None else self.shells.to(device))

    def to_grid(self, x: Tensor) -> Tensor:
        """World points (N, 3) -> the grid's space (the points themselves without a contraction)."""
        return x if self.contraction is None else self.contraction(x)

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
               jitter: Tensor | None = None, min_weight: float = MIN_WEIGHT,
               with_distortion: bool = False) -> tuple[Tensor, Tensor, Tensor, RayStats]:
        """Render rays (R, 3) / (R, 3) unit: colour (R, 3), opacity (R,), depth along the ray (R,) and the
        `RayStats` (the samples shaded: those of weight above `min_weight`; `with_distortion`, each ray's
        distortion loss in the box). With an `envmap` the rays see it instead of `background` where the box
        leaves them transparent, through the `shells` where there are some; a `background` that requires a
        gradient (a learned one) gets it."""
        if self.envmap is not None or self.shells is not None or background.requires_grad:  # no kernel gradient
            color, opacity, depth, stats = self._render_box(origins, dirs, torch.zeros_like(background), backend,
                                                            jitter, min_weight, with_distortion)
            behind = self.envmap(dirs) if self.envmap is not None else background.expand(origins.shape[0], 3)
            if self.shells is not None:
                behind = self.shells(origins, dirs, behind)
            return color + (1 - opacity)[:, None] * behind, opacity, depth, stats
        return self._render_box(origins, dirs, background, backend, jitter, min_weight, with_distortion)

    def _render_box(self, origins: Tensor, dirs: Tensor, background: Tensor, backend: str, jitter: Tensor | None,
                    min_weight: float, with_distortion: bool) -> tuple[Tensor, Tensor, Tensor, RayStats]:
        jitter = torch.full((origins.shape[0],), 0.5, device=origins.device) if jitter is None else jitter
        t, ray_of, offsets, points = self._samples(origins, dirs, jitter, backend, min_weight)
        if backend == "cpu":
            feats = self.grid.gather(points)
        else:
            R = self.grid.res
            feats = trilinear_reference(self.grid.values.reshape(R, R, R, -1), points, self.grid.aabb)
        sigma = torch.nn.functional.softplus(feats[:, 0] + self.shift)
        rgb = self.head.shade(feats[:, 1:], dirs, ray_of)
        dt = torch.full_like(t, self.dt)
        if backend == "cpu":
            color, opacity, depth = render_rays(sigma, rgb, dt, t, offsets, background)
        else:
            color, opacity, depth = volume_render(sigma, rgb, dt, t, ray_of, origins.shape[0], background)
        loss = None
        if with_distortion:  # distances in box sides: the loss's scale does not depend on the scene's
            side = float((self.grid.aabb[3:] - self.grid.aabb[:3]).max())
            n = origins.shape[0]
            loss = distortion(sample_weights(sigma, dt, ray_of, n), t / side, torch.full_like(t, self.step / side),
                              ray_of, n)
        return color, opacity, depth, RayStats(t.shape[0], loss)

    def _samples(self, origins: Tensor, dirs: Tensor, jitter: Tensor, backend: str,
                 min_weight: float = MIN_WEIGHT) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pruned samples: t (S,), ray of each (S,) int64 sorted, offsets (R + 1,), points (S, 3) in grid space.
        The C++ kernel marches, prunes and stops each ray at once; the PyTorch reference marches every ray to
        its end, then `_keep` prunes."""
        n = origins.shape[0]
        with torch.no_grad():
            if backend == "cpu":
                t, offsets, points = self._march_cpu(origins, dirs, jitter, min_weight)
                counts = offsets[1:] - offsets[:-1]
                return t, torch.repeat_interleave(torch.arange(n), counts), offsets, points
            t, offsets = march_reference(origins, dirs, jitter, self.grid.aabb, self.occupancy, self.step,
                                         self.near, self.contraction)
            counts = offsets[1:] - offsets[:-1]
            ray_of = torch.repeat_interleave(torch.arange(n, device=origins.device), counts)
            points = self.to_grid(origins[ray_of] + t[:, None] * dirs[ray_of])
            keep = self._keep(points, ray_of, offsets, min_weight)
            t, ray_of, points = t[keep], ray_of[keep], points[keep]
            offsets = torch.zeros(n + 1, dtype=torch.int64, device=origins.device)
            offsets[1:] = torch.cumsum(torch.bincount(ray_of, minlength=n), 0)
        return t, ray_of, offsets, points

    def _march_cpu(self, origins: Tensor, dirs: Tensor, jitter: Tensor,
                   min_weight: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The C++ march: t (S,), offsets (R + 1,), grid-space points (S, 3) of the samples in occupied cells,
        pruned by the density (weight above `min_weight`, up to transmittance 1e-4) unless `min_weight` is
        None."""
        lib = kernel.load()
        n = origins.shape[0]
        o, d, j = origins.contiguous(), dirs.contiguous(), jitter.float().contiguous()
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        params = None if self.contraction is None else self.contraction.params()
        grid = None if min_weight is None else _ptr(self.grid.values)
        capacity = 64 * n
        while True:
            t, points = torch.empty(capacity), torch.empty(capacity, 3)
            total = lib.march(torch.get_num_threads(), n, _ptr(o), _ptr(d), _ptr(j), _ptr(self.grid.aabb),
                              _ptr(self.occupancy), self.occupancy.shape[0], self.step, self.near,
                              None if params is None else _ptr(params), FAR, grid, self.grid.res, self.grid.channels,
                              self.shift, self.dt, 0.0 if min_weight is None else min_weight, _ptr(offsets),
                              _ptr(t), _ptr(points), capacity)
            if total <= capacity:
                return t[:total], offsets, points[:total]
            capacity = total

    def _keep(self, points: Tensor, ray_of: Tensor, offsets: Tensor, min_weight: float) -> Tensor:
        """The PyTorch reference of the C++ march's pruning: (S,) bool, the samples of weight T alpha above
        `min_weight` while the ray's transmittance T is at least 1e-4."""
        R = self.grid.res
        d = trilinear_reference(self.grid.values[:, :1].reshape(R, R, R, 1), points, self.grid.aabb)[:, 0]
        alpha = 1 - torch.exp(-torch.nn.functional.softplus(d + self.shift) * self.dt)
        tau = -torch.log1p(-alpha.clamp(max=1 - 1e-7))
        T = torch.exp(-_before(tau, ray_of, offsets.shape[0] - 1))
        return (T >= 1e-4) & (T * alpha > min_weight)

    # -- files -----------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        tensors = {"grid": self.grid.values, "aabb": self.grid.aabb, "occupancy": self.occupancy,
                   **{f"head.{k}": v.detach() for k, v in self.head.state_dict().items()},
                   **({} if self.envmap is None else {"envmap": self.envmap.texture.detach()}),
                   **({} if self.contraction is None else {"contraction": self.contraction.params()}),
                   **({} if self.shells is None else {f"shells.{k}": v.detach()
                                                      for k, v in self.shells.state_dict().items()})}
        return write_weights(path, tensors, {"format": "recon3d-nerf", "shift": repr(self.shift),
                                             "near": repr(self.near),
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
        contraction = contraction_of(tensors.get("contraction"))
        shells = {k[7:]: v for k, v in tensors.items() if k.startswith("shells.")}
        return cls(VoxelGrid(tensors["grid"], tensors["aabb"]), head, tensors["occupancy"], float(meta["shift"]),
                   envmap, contraction, float(meta.get("near", 0.0)), Shells.from_state(shells) if shells else None)


def contraction_of(params: Tensor | None) -> Contraction | None:
    """The contraction saved as `Contraction.params()` (4,), None for none."""
    return None if params is None else Contraction(params[:3].clone(), float(params[3]))


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


def _ray_box(origins: Tensor, dirs: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
    """(R,) t where rays enter (at least 0) and leave the box (6,); enter > leave for a miss."""
    inv = 1.0 / dirs
    ta, tb = (box[:3] - origins) * inv, (box[3:] - origins) * inv
    return torch.minimum(ta, tb).amax(-1).clamp(min=0), torch.maximum(ta, tb).amin(-1)


def march_reference(origins: Tensor, dirs: Tensor, jitter: Tensor, aabb: Tensor, occupancy: Tensor,
                    step: float, near: float = 0.0,
                    contraction: Contraction | None = None) -> tuple[Tensor, Tensor]:
    """PyTorch twin of the C++ `march`: t (S,) of the samples in occupied cells, offsets (R + 1,)."""
    if contraction is not None:
        return _march_contracted(origins, dirs, jitter, aabb, occupancy, step, near, contraction)
    t0, t1 = _ray_box(origins, dirs, aabb)
    t0 = t0.clamp(min=near)
    n_max = int(((t1 - t0).clamp(min=0) / step).max().ceil()) + 1
    t = t0[:, None] + (jitter[:, None] + torch.arange(n_max, device=origins.device)) * step  # (R, n_max)
    pts = origins[:, None] + t[..., None] * dirs[:, None]
    G = occupancy.shape[0]
    cell = ((pts - aabb[:3]) * (G / (aabb[3:] - aabb[:3]))).long().clamp(0, G - 1)
    ok = (t < t1[:, None]) & occupancy[cell[..., 0], cell[..., 1], cell[..., 2]].bool()
    offsets = torch.zeros(origins.shape[0] + 1, dtype=torch.int64, device=origins.device)
    offsets[1:] = torch.cumsum(ok.sum(-1), 0)
    return t[ok], offsets


def _march_contracted(origins: Tensor, dirs: Tensor, jitter: Tensor, aabb: Tensor, occupancy: Tensor, step: float,
                      near: float, contraction: Contraction) -> tuple[Tensor, Tensor]:
    """`march_reference` in contracted space: all rays step together, each by `step` grid units."""
    c, r = contraction.center.to(origins), contraction.radius
    t, t1 = _ray_box(origins, dirs, torch.cat([c - FAR * r, c + FAR * r]))
    t = t.clamp(min=near)
    t = t + jitter * step * contraction.steps(origins + t[:, None] * dirs)
    G = occupancy.shape[0]
    ts, oks = [], []
    active = t < t1
    while active.any():
        x = origins + t[:, None] * dirs
        cell = ((contraction(x) - aabb[:3]) * (G / (aabb[3:] - aabb[:3]))).long().clamp(0, G - 1)
        ts.append(t)
        oks.append(active & occupancy[cell[:, 0], cell[:, 1], cell[:, 2]].bool())
        t = t + step * contraction.steps(x)
        active = active & (t < t1)
    if not ts:
        return origins.new_zeros(0), torch.zeros(origins.shape[0] + 1, dtype=torch.int64, device=origins.device)
    T, ok = torch.stack(ts, 1), torch.stack(oks, 1)
    offsets = torch.zeros(origins.shape[0] + 1, dtype=torch.int64, device=origins.device)
    offsets[1:] = torch.cumsum(ok.sum(-1), 0)
    return T[ok], offsets
