"""Train the voxel-grid NeRF on posed views: a short loop that delegates.

Per step: `rays` random pixels across all training views (seeded by step, so a resumed run draws the same
batches), jittered samples through the occupancy grid, MSE against the pixels, backward, lazy Adam on the
voxels the batch touched (C++; plain Adam on the whole grid with `backend: torch`) and Adam on the head,
both learning rates decaying exponentially to `lr_final` x their start. The grid starts coarse and is
upsampled at `upsample_at` (DVGO's progressive scaling); the occupancy grid starts as the visual hull of the
alpha masks (the whole box without them; for photos, the cells near the sparse points) and is refreshed from
the density every `occupancy_every` steps. Photos without alpha get a box around the sparse points, rays that
start before the nearest points (`near_from_points`) and an environment map for what lies beyond
(`radiance.envmap.EnvMap`: the sky), with `shells` RGBA spheres between the two for a far field with parallax
(`shells.Shells`); `space: contract` squeezes all space around the box into the grid instead
(`space.Contraction`, mip-NeRF 360). The grid's memory is checked against `grid_memory_mb` before anything is
allocated. `appearance: affine` gives each training image an affine colour applied to its rays' colours, as the
Gaussians' option (`radiance.appearance`); test views are rendered without it. `depth_lambda` adds rays from
each training camera through the sparse points it observes, their rendered depth held to the point's distance.
`tv_density` / `tv_features` draw each touched voxel toward its neighbours (DVGO's sparse total variation) and
`distortion_lambda` gathers each ray's weight into one interval (mip-NeRF 360's distortion loss).
Checkpoints every `checkpoint_every` steps; `train` resumes from the last one. The loop itself (budget,
curve, checkpoints, progress) is `radiance.training.run`, shared with the Gaussians.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from recon3d.io.files import atomic_write
from recon3d.radiance import training
from recon3d.radiance.appearance import AffineColor, AppearanceConfig, ExposureGain, at_exposure, exposure_model
from recon3d.radiance.envmap import EnvMap
from recon3d.radiance.nerf.field import ColourHead, VoxelGrid, tv_reference
from recon3d.radiance.nerf.model import RENDER_MIN_WEIGHT, NerfModel, contraction_of
from recon3d.radiance.nerf.shells import Shells
from recon3d.radiance.nerf.space import GRID_BOX, Contraction
from recon3d.radiance.views import View, carve, mean_colour, view_bounds, view_rays

CHECKPOINT = "checkpoint.pt"
AUTO_DEPTH_LAMBDA = 0.1  # monstree, nerf --budget-min 5: 18.13 dB without, 19.18 at 0.1, 19.25 at 0.3
AUTO_DISTORTION = {"photos": 0.01, "masked": 0.0}  # monstree, nerf --budget-min 5: 19.91 dB without, 20.12 with
AUTO_RAYS = {"photos": 2048, "masked": 4096}  # monstree, nerf --budget-min 10: 19.54 dB with 4096, 19.75 with 2048
CHUNK = 2048  # rays per render call: lego 200x200 views in 0.18 s against 0.22 s with 16 384 (cache-sized)


class NerfTrainConfig(training.LoopConfig, AppearanceConfig):
    steps: int = Field(16_000, ge=1, description="training steps (one ray batch each); about 20 minutes on a "
                       "2-core CPU at 200 px")
    seed: int = Field(0, description="seed of the ray batches, jitter and initial features")
    backend: Literal["cpu", "torch"] = Field("cpu", description="cpu = C++ kernels (CPU only); torch = plain "
                                             "PyTorch on any device (the reference; what CUDA runs)")
    rays: int | Literal["auto"] = Field(
        "auto", description=f"rays per step; auto = {AUTO_RAYS['photos']} for photos without alpha (a step through "
        f"their unmasked space costs three times lego's: twice the steps in a time budget, README), "
        f"{AUTO_RAYS['masked']} otherwise")
    res_start: int = Field(96, ge=4, description="grid corners per side at the start")
    res_final: int = Field(160, ge=4, description="grid corners per side after the last upsampling")
    upsample_at: tuple[int, ...] = Field((1000, 2500), description="steps at which the grid grows")
    features: int = Field(11, ge=1, le=32, description="colour features per voxel")
    width: int = Field(64, ge=8, description="hidden width of the colour head")
    alpha_init: float = Field(0.01, gt=0, lt=1, description="alpha per step of an untrained voxel")
    lr_grid: float = Field(0.1, gt=0)
    lr_head: float = Field(1e-3, gt=0)
    lr_final: float = Field(0.1, gt=0, description="both learning rates at the last step, x their start")
    occupancy_res: int = Field(128, ge=4, description="occupancy cells per side")
    occupancy_every: int = Field(16, ge=1, description="steps between occupancy refreshes")
    occupancy_alpha: float = Field(1e-3, gt=0, description="a cell is occupied above this alpha per step")
    box: Literal["auto", "views", "points"] = Field(
        "auto", description="the grid's box: views = the cube every camera sees; points = around the sparse "
        "points (box_percentile, 10 % margin); auto = points for photos without alpha")
    box_percentile: float = Field(2.0, ge=0, lt=50, description="box points: the box spans the sparse points' p-th "
                                  "to (100 - p)-th percentile per axis (what lies beyond: shells, env map)")
    space: Literal["box", "contract"] = Field(
        "box", description="box = the grid covers the box only (photos: the env map beyond it); contract = the "
        "box and all space beyond it squeezed into a shell around it (mip-NeRF 360), the box at half the grid's "
        "resolution (5-minute runs: monstree 17.35 dB against 18.10 for box, sceaux 12.06 against 13.76)")
    near: float | Literal["auto"] = Field(
        "auto", description="world units along each ray before its first sample; auto = half the depth of the "
        "nearest sparse points (1st percentile, nearest camera) for photos, 0 otherwise")
    grid_memory_mb: float = Field(4096, gt=0, description="the most the grid may take at res_final: values, "
                                  "gradient and two Adam moments per voxel (16 bytes a channel)")
    points_occupancy: float = Field(0.05, ge=0, description="photos without alpha: cells farther than this "
                                    "fraction of the box side from every sparse point are empty from the start "
                                    "(empty space skipped without masks; 0 = the whole box starts occupied)")
    background_model: Literal["auto", "none", "envmap"] = Field(
        "auto", description="what a ray sees when it leaves the box unabsorbed: none = the background colour; "
        "envmap = a learned colour per direction (sky, far background); auto = envmap for photos without alpha")
    envmap_height: int = Field(32, ge=2, description="env map texels from pole to pole (twice as many around)")
    lr_envmap: float = Field(0.01, gt=0, description="Adam step of the env map texels (logits); faster ones "
                             "explain the scene with the far field before the grid grows opaque")
    shells: int = Field(0, ge=0, le=64, description="RGBA spheres between the box and the env map, for a far "
                        "field with parallax (NeRF++'s outer volume in discrete form: `radiance/nerf/shells.py`); "
                        "0 = none (8 measured level on monstree and sceaux: README)")
    shells_far: float = Field(16.0, gt=1, description="the outermost shell's radius, x the radius of the sphere "
                              "around the box; the shells are spaced evenly in inverse radius up to it")
    shells_height: int = Field(32, ge=2, description="shell texels from pole to pole (twice as many around)")
    depth_lambda: float | Literal["auto"] = Field(
        "auto", description="weight of the sparse points' depth in the loss: rays from each training camera "
        f"through the SfM points it observes, their rendered depth held to the point's distance (L1 relative to "
        f"it; DS-NeRF's free depth supervision); 0 = off; auto = {AUTO_DEPTH_LAMBDA} for photos without alpha "
        "that observe sparse points, 0 otherwise")
    depth_rays: int = Field(512, ge=1, description="depth_lambda: point rays per step, beside the `rays` pixels")
    tv_density: float = Field(0.0, ge=0, description="total variation on the density of the voxels a step touched "
                              "(DVGO's sparse TV: each drawn toward its six neighbours), per ray of the batch and "
                              "scaled with the grid (x res / 128), as DVGO's weight_tv_density; 0 = off")
    tv_features: float = Field(0.0, ge=0, description="the same on the colour features (DVGO's weight_tv_k0)")
    distortion_lambda: float | Literal["auto"] = Field(
        "auto", description="weight of mip-NeRF 360's distortion loss (a ray's weight gathered in one short "
        "interval, against haze along it; distances in box sides), mean over the step's pixels; 0 = off; auto = "
        f"{AUTO_DISTORTION['photos']} for photos without alpha (mip-NeRF 360's and DVGO's), "
        f"{AUTO_DISTORTION['masked']} otherwise")

    @model_validator(mode="after")
    def _device_fits_backend(self):
        if self.backend == "cpu" and self.device != "cpu":
            raise ValueError(f"backend cpu runs on the CPU, device is {self.device!r}: set backend=torch too for "
                             f"{self.device}, or keep device=cpu")
        if self.rays != "auto" and self.rays < 1:
            raise ValueError(f"rays {self.rays} is below 1: give the pixels a step takes, or auto")
        if self.distortion_lambda != "auto" and self.distortion_lambda < 0:
            raise ValueError(f"distortion_lambda {self.distortion_lambda} is negative: give 0 (off), a weight, or auto")
        if self.depth_lambda != "auto" and self.depth_lambda < 0:
            raise ValueError(f"depth_lambda {self.depth_lambda} is negative: give 0 (off), a weight, or auto")
        if self.shells and self.space == "contract":
            raise ValueError("shells lie beyond the box, and space contract has the grid hold all space already: "
                             "--set nerf.shells=0 or --set nerf.space=box")
        if self.res_final < self.res_start:
            raise ValueError(f"res_final {self.res_final} is below res_start {self.res_start}")
        need = grid_memory_mb(self.res_final, self.features)
        if need > self.grid_memory_mb:
            raise ValueError(f"res_final {self.res_final} with {self.features} features needs {need:.0f} MiB of grid, "
                             f"over grid_memory_mb {self.grid_memory_mb:g}: lower res_final or features, or raise "
                             f"grid_memory_mb")
        return self


def grid_memory_mb(res: int, features: int) -> float:
    """MiB a `res`^3 grid of 1 + `features` channels takes in training: values, gradient, Adam m and v
    (4 floats a channel), a touched flag and a list entry per voxel."""
    return res**3 * ((1 + features) * 16 + 9) / 2**20


@dataclass
class _State:
    model: NerfModel
    head_opt: torch.optim.Adam
    grid_opt: torch.optim.Adam | None  # backend torch only
    appearance: AffineColor | None
    background: torch.Tensor  # (3,); a leaf with a gradient when learned
    exposure: ExposureGain | None = None
    step: int = 0
    adam_step: int = 0  # lazy Adam steps since the grid last changed size
    seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)


def resolution_at(cfg: NerfTrainConfig, step: int) -> int:
    """Grid resolution after the upsamplings that happened by `step`: voxel counts evenly spaced in log."""
    done = sum(step >= s for s in cfg.upsample_at)
    k = len(cfg.upsample_at)
    if k == 0:
        return cfg.res_final
    return round(math.exp(math.log(cfg.res_start) + (math.log(cfg.res_final) - math.log(cfg.res_start)) * done / k))


def scene_box(views: list[View], points: np.ndarray | None = None, percentile: float = 2.0) -> torch.Tensor:
    """(6,) min xyz, max xyz: the cube every camera sees (`view_bounds`), or with `points` (N, 3) world the cube
    around their `percentile`-th to (100 - `percentile`)-th percentile per axis, 10 % wider (outliers far out do
    not blow the box up)."""
    if points is None:
        center, radius = view_bounds(views)
    else:
        lo, hi = np.percentile(points, percentile, axis=0), np.percentile(points, 100 - percentile, axis=0)
        center, radius = (lo + hi) / 2, 0.55 * float((hi - lo).max())
    return torch.tensor(np.r_[center - radius, center + radius], dtype=torch.float32)


def points_occupancy(points: np.ndarray, aabb: torch.Tensor, res: int, margin: float,
                     contraction: Contraction | None = None) -> torch.Tensor:
    """(res, res, res) uint8 over the grid's box `aabb`: cells within `margin` x the box side of a point (N, 3)
    world; the whole box when `margin` is 0. With a `contraction` the box is in grid space (the points
    contracted into it), so the shell starts occupied only around the far points SfM found; what lies beyond
    them (the sky) is the env map's."""
    if margin <= 0:
        return torch.ones(res, res, res, dtype=torch.uint8)
    pts = torch.tensor(points, dtype=torch.float32)
    if contraction is not None:
        pts = contraction(pts)
    cell = ((pts - aabb[:3]) * (res / (aabb[3:] - aabb[:3]))).long()
    cell = cell[((cell >= 0) & (cell < res)).all(-1)]
    grid = torch.zeros(res, res, res, dtype=torch.bool)
    grid[cell[:, 0], cell[:, 1], cell[:, 2]] = True
    return dilate(grid, max(1, math.ceil(margin * res))).to(torch.uint8).contiguous()


def dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """(R, R, R) bool -> the cells within `k` cells of a True one along each axis (a (2k+1)^3 box), as
    `max_pool3d(mask, 2k + 1, 1, k)` but one axis at a time: on monstree's 128^3 points occupancy with k = 7,
    5.3 s -> 0.02 s."""
    for axis in range(3):
        out, n = mask.clone(), mask.shape[axis]
        for s in range(1, min(k, n - 1) + 1):
            out.narrow(axis, s, n - s).logical_or_(mask.narrow(axis, 0, n - s))
            out.narrow(axis, 0, n - s).logical_or_(mask.narrow(axis, s, n - s))
        mask = out
    return mask


def near_from_points(views: list[View], points: np.ndarray) -> float:
    """World units before the first sample: half the 1st-percentile depth of the points (N, 3) in front of
    each view, the smallest over the views (0 when no view has points in front)."""
    pts = torch.tensor(points, dtype=torch.float32)
    nears = []
    for v in views:
        z = pts @ v.cam_from_world[2, :3] + v.cam_from_world[2, 3]
        z = z[z > 0]
        if len(z):
            nears.append(0.5 * float(torch.quantile(z, 0.01)))
    return min(nears, default=0.0)


def hull_occupancy(views: list[View], aabb: torch.Tensor, res: int, carve_res: int = 64,
                   contraction: Contraction | None = None) -> torch.Tensor:
    """(res, res, res) uint8 over the grid's box `aabb` (in grid space with a `contraction`): cells inside the
    visual hull (all cells without alpha masks), carved at `carve_res` cells per side (a 128^3 carve through 100
    views takes 20 s, 64^3 two), dilated by one carve cell and resampled to `res`."""
    n = min(res, carve_res)
    axes = [aabb[a] + (torch.arange(n) + 0.5) / n * (aabb[3 + a] - aabb[a]) for a in range(3)]
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep, _ = carve(views, centers if contraction is None else contraction.inverse(centers))
    grid = dilate(keep.reshape(n, n, n), 1).float()[None, None]
    grid = torch.nn.functional.interpolate(grid, size=(res, res, res), mode="nearest")
    return (grid[0, 0] > 0).to(torch.uint8).contiguous()


def refresh_occupancy(model: NerfModel, hull: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cells (of the hull) where the density grid's alpha per step exceeds `threshold`, dilated by one cell."""
    G = hull.shape[0]
    alpha = model.density_alpha()[None, None]
    alpha = torch.nn.functional.adaptive_max_pool3d(alpha, G) if model.grid.res >= G else \
        torch.nn.functional.interpolate(alpha, size=(G, G, G), mode="trilinear", align_corners=True)
    return (dilate(alpha[0, 0] > threshold, 1) & hull.bool()).to(torch.uint8).contiguous()


def render_view(model: NerfModel, view: View, background: torch.Tensor, backend: str):
    """rgb (H, W, 3), opacity (H, W, 1), depth (H, W, 1) (camera z, expected over the opacity) of `view`,
    on the CPU."""
    origins, dirs, z_per_t = view_rays(view)
    dev = model.occupancy.device
    colors, opac, depth = [], [], []
    with torch.no_grad():
        for i in range(0, origins.shape[0], CHUNK):
            c, o, d, _ = model.render(origins[i:i + CHUNK].to(dev), dirs[i:i + CHUNK].to(dev), background.to(dev),
                                      backend, min_weight=RENDER_MIN_WEIGHT)
            colors.append(c.cpu())
            opac.append(o.cpu())
            depth.append(d.cpu())
    c, o, d = torch.cat(colors), torch.cat(opac), torch.cat(depth)
    z = torch.where(o > 0, d * z_per_t / o.clamp_min(1e-10), torch.zeros_like(d))
    hw = (view.height, view.width)
    return c.reshape(*hw, 3), o.reshape(*hw, 1), z.reshape(*hw, 1)


def train(views: list[View], cfg: NerfTrainConfig, background: torch.Tensor, workdir: Path,
          eval_views: list[View] = (),
          on_step: Callable[[int, int, float, int], None] | None = None,
          points: np.ndarray | None = None, learn_background: bool = False,
          observed: list[np.ndarray] | None = None) -> training.TrainResult:
    """Train on `views` (resuming from `workdir/checkpoint.pt` when there is one) and return the model.
    `points` (N, 3) world: the scene's sparse points, for the box and the first occupancy of photos. With
    `learn_background` and no env map the colour behind the box starts at `background` and is fitted too.
    `observed`: per view, the world xyz (M, 3) of the sparse points it observes, for `depth_lambda`.

    on_step(step, steps, running training PSNR, samples shaded this step) is called after every step."""
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / CHECKPOINT
    photos = all(v.alpha is None for v in views)  # no masks: real photos, with sky and far background
    use_points = points is not None and len(points) >= 100 and (cfg.box == "points" or (cfg.box == "auto" and photos))
    aabb = scene_box(views, points if use_points else None, cfg.box_percentile)
    contraction = Contraction.of_box(aabb) if cfg.space == "contract" else None
    grid_box = aabb if contraction is None else GRID_BOX
    near = cfg.near if cfg.near != "auto" else (near_from_points(views, points) if use_points and photos else 0.0)
    hull = hull_occupancy(views, grid_box, cfg.occupancy_res, contraction=contraction)
    if use_points and photos:
        hull &= points_occupancy(points, grid_box, cfg.occupancy_res, cfg.points_occupancy, contraction)
    with_envmap = cfg.background_model == "envmap" or (cfg.background_model == "auto" and photos)
    far_colour = mean_colour(views) if with_envmap or cfg.shells else None  # where the far field starts
    envmap = EnvMap(cfg.envmap_height, far_colour) if with_envmap else None
    shells = Shells.around_box(aabb, cfg.shells, cfg.shells_far, cfg.shells_height, far_colour) if cfg.shells else None
    rays = _all_rays(views)
    depth_weight = depth_lambda(cfg, photos, observed)
    n_rays = cfg.rays if cfg.rays != "auto" else AUTO_RAYS["photos" if photos else "masked"]
    point_rays = _point_rays(views, observed, aabb, contraction is not None, near) if depth_weight else None
    learn = learn_background and envmap is None  # an env map is what its rays see: the background never shows
    if ckpt_path.is_file():
        st = _restore(ckpt_path, cfg, len(views), learn)
    else:
        st = _fresh(cfg, aabb, hull, envmap, shells, contraction, near, len(views),
                    background.float().clone().to(cfg.device).requires_grad_(learn),
                    exposure_model(cfg, [v.exposure for v in views]))
    view_exposure = None if st.exposure is None else torch.tensor(  # a photo that records none: the reference
        [st.exposure.reference if v.exposure is None else v.exposure for v in views], device=cfg.device)
    resumed = st.step if ckpt_path.is_file() else None
    if point_rays is not None:  # the report says how many point rays the term had (none: no effect)
        st.events["depth_lambda"], st.events["depth_rays_available"] = depth_weight, int(point_rays.depth.shape[0])
    st.events["rays"] = n_rays
    distortion = cfg.distortion_lambda if cfg.distortion_lambda != "auto" else \
        AUTO_DISTORTION["photos" if photos else "masked"]
    if distortion:
        st.events["distortion_lambda"] = distortion

    def render_test(view: View) -> torch.Tensor:  # at the view's own exposure, as the render stage will
        return at_exposure(render_view(st.model, view, st.background.detach(), cfg.backend)[0], st.exposure,
                           view.exposure)

    result = training.run(st, cfg, lambda: _step(st, cfg, rays, n_rays, hull, point_rays, depth_weight, view_exposure,
                                                 distortion),
                          render_test,
                          lambda: _save_checkpoint(ckpt_path, st), lambda: {"resolution": st.model.grid.res},
                          eval_views, on_step, resumed, smoothing=0.95)
    result.appearance, result.background, result.exposure = st.appearance, st.background.detach().cpu(), st.exposure
    return result


@dataclass
class _Rays:
    """Every training pixel as a ray: origins, dirs (N, 3), colours (N, 3) and the index of its view (N,)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    colors: torch.Tensor
    image: torch.Tensor


def depth_lambda(cfg: NerfTrainConfig, photos: bool, observed: list[np.ndarray] | None) -> float:
    """The weight of the sparse points' depth: `cfg.depth_lambda`, or for auto `AUTO_DEPTH_LAMBDA` when the views
    are `photos` (no alpha) and some view observes a point (`observed`: per view, (M, 3)), else 0."""
    if cfg.depth_lambda != "auto":
        return float(cfg.depth_lambda)
    return AUTO_DEPTH_LAMBDA if photos and observed is not None and any(len(o) for o in observed) else 0.0


@dataclass
class _PointRays:
    """Rays from each training camera through the sparse points it observes: origins, unit dirs (P, 3) and the
    point's distance along the ray (P,)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    depth: torch.Tensor


def _point_rays(views: list[View], observed: list[np.ndarray] | None, aabb: torch.Tensor, contracted: bool,
                near: float) -> _PointRays:
    """The `_PointRays` of the points (per view, world (M, 3)) in front of their camera, beyond `near` and inside
    the grid's box `aabb` (all of them in `contracted` space, whose grid holds everything)."""
    origins, dirs, depth = [], [], []
    for view, xyz in zip(views, observed or [np.zeros((0, 3))] * len(views), strict=True):
        pts = torch.as_tensor(xyz, dtype=torch.float32).reshape(-1, 3)
        R, t = view.cam_from_world[:3, :3], view.cam_from_world[:3, 3]
        center = -R.T @ t
        z = pts @ R[2] + t[2]
        ray = pts - center
        dist = ray.norm(dim=-1)
        keep = (z > 0) & (dist > near)
        if not contracted:
            keep &= ((pts >= aabb[:3]) & (pts <= aabb[3:])).all(-1)
        origins.append(center.expand(int(keep.sum()), 3))
        dirs.append(ray[keep] / dist[keep, None])
        depth.append(dist[keep])
    return _PointRays(torch.cat(origins).contiguous(), torch.cat(dirs).contiguous(), torch.cat(depth))


def _all_rays(views: list[View]) -> _Rays:
    rays = [view_rays(v) for v in views]
    return _Rays(torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays]),
                 torch.cat([v.image.reshape(-1, 3) for v in views]),
                 torch.cat([torch.full((v.height * v.width,), i) for i, v in enumerate(views)]))


def _fresh(cfg: NerfTrainConfig, aabb: torch.Tensor, hull: torch.Tensor, envmap: EnvMap | None,
           shells: Shells | None, contraction: Contraction | None, near: float, n_views: int,
           background: torch.Tensor, exposure: ExposureGain | None) -> _State:
    torch.manual_seed(cfg.seed)
    model = NerfModel.create(aabb, cfg.res_start, cfg.features, cfg.width, cfg.alpha_init, hull, envmap,
                             contraction, near, shells).to(cfg.device)
    appearance = AffineColor(n_views).to(cfg.device) if cfg.appearance == "affine" else None
    exposure = None if exposure is None else exposure.to(cfg.device)
    return _State(model, _head_opt(model, cfg, appearance, background, exposure), _grid_opt(model, cfg), appearance,
                  background, exposure)


def _head_opt(model: NerfModel, cfg: NerfTrainConfig, appearance: AffineColor | None,
              background: torch.Tensor, exposure: ExposureGain | None) -> torch.optim.Adam:
    """Adam on the colour head (and the env map and shells, the per-image colours, a learned background colour,
    the exposure gain), each group with its starting LR as `base_lr`."""
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr_head, "base_lr": cfg.lr_head}]
    for far in (model.envmap, model.shells):
        if far is not None:
            groups.append({"params": list(far.parameters()), "lr": cfg.lr_envmap, "base_lr": cfg.lr_envmap})
    if appearance is not None:
        groups.append({"params": list(appearance.parameters()), "lr": cfg.lr_appearance,
                       "base_lr": cfg.lr_appearance})
    if background.requires_grad:
        groups.append({"params": [background], "lr": cfg.lr_envmap, "base_lr": cfg.lr_envmap})
    if exposure is not None:
        groups.append({"params": list(exposure.parameters()), "lr": cfg.lr_exposure, "base_lr": cfg.lr_exposure})
    return torch.optim.Adam(groups)


def _grid_opt(model: NerfModel, cfg: NerfTrainConfig) -> torch.optim.Adam | None:
    if cfg.backend == "cpu":
        return None
    model.grid.values.requires_grad_(True)
    return torch.optim.Adam([model.grid.values], lr=cfg.lr_grid, betas=(0.9, 0.99), eps=1e-15)


def _step(st: _State, cfg: NerfTrainConfig, rays: _Rays, n_rays: int, hull, point_rays: _PointRays | None = None,
          depth_weight: float = 0.0, view_exposure: torch.Tensor | None = None,
          distortion: float = 0.0) -> tuple[float, int]:
    """One optimisation step (`n_rays` of the pixels' `rays`, and `cfg.depth_rays` of the `point_rays` weighed by
    `depth_weight`; `view_exposure` (V,): each training view's log exposure, with `st.exposure`; the pixels'
    distortion loss weighed by `distortion`); returns its training PSNR and the number of samples shaded."""
    model = st.model
    if st.step in cfg.upsample_at:
        with torch.no_grad():
            model.resize(resolution_at(cfg, st.step), cfg.alpha_init)
        st.grid_opt, st.adam_step = _grid_opt(model, cfg), 0
        st.events["upsampled_to"] = model.grid.res
    if st.step % cfg.occupancy_every == 0 and st.step > 0:
        with torch.no_grad():
            model.occupancy = refresh_occupancy(model, hull.to(cfg.device), cfg.occupancy_alpha)
        st.events["occupied_fraction"] = round(float(model.occupancy.float().mean()), 4)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + st.step)
    idx = torch.randint(0, rays.origins.shape[0], (n_rays,), generator=g)
    origins, dirs = rays.origins[idx], rays.dirs[idx]
    with_depth = point_rays is not None and point_rays.depth.shape[0] > 0
    if with_depth:
        pick = torch.randint(0, point_rays.depth.shape[0], (cfg.depth_rays,), generator=g)
        origins, dirs = torch.cat([origins, point_rays.origins[pick]]), torch.cat([dirs, point_rays.dirs[pick]])
    jitter = torch.rand(origins.shape[0], generator=g)
    dev = cfg.device
    color, _, depth, stats = model.render(origins.to(dev), dirs.to(dev), st.background, cfg.backend, jitter.to(dev),
                                          with_distortion=distortion > 0)
    color, image = color[:n_rays], rays.image[idx].to(dev)
    if st.exposure is not None:
        color = color * st.exposure.scale(view_exposure[image])[:, None]
    if st.appearance is not None:
        color = st.appearance.per_ray(color, image)
    target = rays.colors[idx].to(dev)
    mse = torch.mean((color - target) ** 2)
    loss = mse
    if stats.distortion is not None:
        loss = loss + distortion * stats.distortion[:n_rays].mean()
    if with_depth:
        want = point_rays.depth[pick].to(dev)
        loss = loss + depth_weight * torch.mean((depth[n_rays:] - want).abs() / want)
    loss.backward()
    if cfg.tv_density or cfg.tv_features:
        _add_tv(model.grid, cfg, n_rays)
    decay = cfg.lr_final ** (st.step / cfg.steps)
    for group in st.head_opt.param_groups:
        group["lr"] = group["base_lr"] * decay
    st.head_opt.step()
    st.head_opt.zero_grad(set_to_none=True)
    if st.background.requires_grad:
        with torch.no_grad():
            st.background.clamp_(0, 1)
    st.adam_step += 1
    if st.grid_opt is None:
        model.grid.adam_step(cfg.lr_grid * decay, st.adam_step)
    else:
        for group in st.grid_opt.param_groups:
            group["lr"] = cfg.lr_grid * decay
        st.grid_opt.step()
        st.grid_opt.zero_grad(set_to_none=True)
    st.step += 1
    return -10 * math.log10(max(float(mse.detach()), 1e-12)), stats.shaded


def _add_tv(grid: VoxelGrid, cfg: NerfTrainConfig, n_rays: int) -> None:
    """Adds the total variation's gradient (`tv_density`, `tv_features`) to the voxels the step touched (those
    with a gradient), as DVGO: weights per ray of the batch, x res / 128."""
    weight = torch.tensor([cfg.tv_density] + [cfg.tv_features] * (grid.channels - 1)) * grid.res / 128 / n_rays
    if cfg.backend == "cpu":
        grid.add_tv(weight)
        return
    values = grid.values.detach().requires_grad_(True)
    R = grid.res
    (tv_grad,) = torch.autograd.grad(tv_reference(values.reshape(R, R, R, -1), weight.to(values.device)), values)
    touched = grid.values.grad.abs().sum(-1, keepdim=True) > 0
    grid.values.grad += tv_grad * touched


def _save_checkpoint(path: Path, st: _State) -> None:
    m = st.model
    checkpoint = {"grid": m.grid.values.detach(), "m": m.grid.m, "v": m.grid.v, "aabb": m.grid.aabb,
                  "occupancy": m.occupancy, "shift": m.shift, "head": m.head.state_dict(),
                  "envmap": None if m.envmap is None else m.envmap.texture.detach(),
                  "contraction": None if m.contraction is None else m.contraction.params(), "near": m.near,
                  "shells": None if m.shells is None else m.shells.state_dict(),
                  "appearance": None if st.appearance is None else st.appearance.state_dict(),
                  "background": st.background.detach().cpu(), "head_opt": st.head_opt.state_dict(),
                  "exposure": None if st.exposure is None else st.exposure.values(),
                  "grid_opt": None if st.grid_opt is None else st.grid_opt.state_dict(),
                  "step": st.step, "adam_step": st.adam_step, "seconds": st.seconds, "curve": st.curve,
                  "events": st.events}
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def _restore(path: Path, cfg: NerfTrainConfig, n_views: int, learn_background: bool) -> _State:
    ck = torch.load(path, weights_only=True)
    grid = VoxelGrid(ck["grid"], ck["aabb"])
    if ck["m"] is not None:
        grid.m, grid.v = ck["m"], ck["v"]
    head = ColourHead(cfg.features, cfg.width)
    head.load_state_dict(ck["head"])
    envmap = None if ck.get("envmap") is None else EnvMap.from_texture(ck["envmap"])
    shells = None if ck.get("shells") is None else Shells.from_state(ck["shells"])
    model = NerfModel(grid, head, ck["occupancy"], ck["shift"], envmap, contraction_of(ck.get("contraction")),
                      ck.get("near", 0.0), shells).to(cfg.device)
    appearance = None
    if ck.get("appearance") is not None:
        appearance = AffineColor(n_views).to(cfg.device)
        appearance.load_state_dict(ck["appearance"])
    background = ck["background"].to(cfg.device).requires_grad_(learn_background)
    exposure = None if ck.get("exposure") is None else ExposureGain(**ck["exposure"]).to(cfg.device)
    head_opt = _head_opt(model, cfg, appearance, background, exposure)
    head_opt.load_state_dict(ck["head_opt"])
    grid_opt = _grid_opt(model, cfg)
    if grid_opt is not None and ck["grid_opt"] is not None:
        grid_opt.load_state_dict(ck["grid_opt"])
    return _State(model, head_opt, grid_opt, appearance, background, exposure, ck["step"], ck["adam_step"],
                  ck["seconds"], ck["curve"], ck["events"])
