"""Train 3D Gaussians on posed views: a short loop that delegates.

Per step: one training view (a seeded permutation per epoch), `rasterize`, L1 + D-SSIM loss, backward, the
densification strategy's hook, Adam (one optimizer per parameter group; the position LR decays
exponentially to `lr_means_final` x its start, as gsplat, along `schedule_progress`: steps, or the time
budget when it ends first; densification stops at the same fraction, and with mcmc starts at one too). SH degree
grows by one every `sh_interval` steps.
A checkpoint (model, optimizer moments, strategy state, RNG, step, clock) is written every
`checkpoint_every` steps; `train` resumes from the last one, and the same seed gives the same model (bit
for bit on one torch thread; with more, torch's MKL log / exp can differ between processes: see README).
The loop itself (budget, curve, checkpoints, progress) is `radiance.training.run`, shared with the NeRF;
the time budget counts training only, not the evaluations for the PSNR-vs-time curve.

For real photos: training runs in a frame centred on the cameras (`radiance.normalize`); the sparse points can
be joined by points on a far sphere for the sky (`sky_points`, images without alpha only), an affine
colour per training image can absorb exposure differences (`appearance: affine`), what the Gaussians leave
uncovered can see an env map (`background_model`, `radiance.envmap`: the sky and far field), the training poses can
be refined with the model (`pose_refine`, `radiance.pose_refine`), and each training view's sparse points can
hold its rendered depth to theirs (`depth_lambda`, `radiance.sparse_depth`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from recon3d.io.files import atomic_write
from recon3d.radiance import training
from recon3d.radiance.appearance import AffineColor, AppearanceConfig, ExposureGain, at_exposure, exposure_model
from recon3d.radiance.envmap import EnvMap, behind
from recon3d.radiance.gaussians.init import random_points, scene_points, sky_points, visual_hull_points
from recon3d.radiance.gaussians.mcmc import MCMCStrategy
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.rasterize import rasterize
from recon3d.radiance.gaussians.strategy import DefaultStrategy
from recon3d.radiance.metrics import psnr
from recon3d.radiance.normalize import WorldFrame
from recon3d.radiance.pose_refine import PoseCorrection
from recon3d.radiance.sparse_depth import disparity_loss, observed_points
from recon3d.radiance.ssim_cpu import ssim_cpu
from recon3d.radiance.views import View, coarser_view, mean_colour, scene_scale
from recon3d.scene import Scene

CHECKPOINT = "checkpoint.pt"
MCMC_PRESET = {"opacity_reg": 0.01, "scale_reg": 0.01, "init_opacity": 0.5, "init_scale": 0.1}  # gsplat's mcmc preset


class GaussianTrainConfig(training.LoopConfig, AppearanceConfig):
    steps: int = Field(10_000, ge=1, description="training steps (one view each); gsplat's 30k schedule "
                       "compressed for the CPU, where 10k steps take about 20 minutes at 200 px")
    seed: int = Field(0, description="seed of the initialisation, view order and densification")
    rasterizer: Literal["cpu", "reference", "gsplat"] = Field(
        "cpu", description="cpu = C++ kernel, reference = pure PyTorch (slow, the oracle), gsplat = CUDA")
    sh_degree: int = Field(3, ge=0, le=3, description="largest SH degree")
    sh_interval: int = Field(1000, ge=1, description="steps between SH degree increments")
    num_downscales: int = Field(0, ge=0, le=4, description="coarse to fine, as splatfacto: training starts on "
                                "images 2^num_downscales times smaller and doubles their size every "
                                "`resolution_schedule` of training")
    resolution_schedule: float = Field(0.1, gt=0, le=1, description="fraction of training (steps, or the time "
                                       "budget when it ends first) between resolution doublings (splatfacto: "
                                       "3000 of 30000 steps)")
    init: Literal["auto", "points", "visual_hull", "random"] = Field(
        "auto", description="initial centres; auto = the scene's sparse points, else a visual hull from alpha "
        "masks, else random in the seen cube")
    init_count: int = Field(100_000, ge=100, description="samples for random / visual-hull initialisation")
    sky_points: int = Field(0, ge=0, description="for images without alpha (real photos): about this many "
                            "Gaussians on a far sphere, where the views see it, for the sky and far background "
                            "SfM leaves empty (0 = none: on monstree 20 000 of them cost 1.3 dB, see README)")
    sky_radius: float = Field(10.0, gt=1, description="radius of that sphere, x the cameras' spread (at least "
                              "twice the distance of most sparse points)")
    pose_refine: bool = Field(False, description="refine each training view's pose with the model (gsplat's "
                              "pose_opt); test views keep their poses")
    pose_refine_start: int = Field(500, ge=0, description="the poses move from this step on, once the model "
                                   "explains the views roughly (before, their gradients are mostly noise)")
    lr_pose: float = Field(1e-4, gt=0, description="Adam step of the pose corrections (radians, and units of the "
                            "normalised frame: the cameras' spread is 1)")
    lr_background: float = Field(1e-2, gt=0, description="Adam step of the background colour when it is learned "
                                 "(background: learned, the default for opaque photos)")
    background_model: Literal["auto", "none", "envmap"] = Field(
        "none", description="what a pixel the Gaussians leave uncovered sees: none = the background colour; envmap = "
        "a learned colour per direction (sky, far background: the NeRF's env map); auto = envmap for photos without "
        "alpha")
    envmap_height: int = Field(32, ge=2, description="env map texels from pole to pole (twice as many around)")
    lr_envmap: float = Field(0.01, gt=0, description="Adam step of the env map texels (logits)")
    init_opacity: float = Field(0.1, gt=0, lt=1)
    init_scale: float = Field(1.0, gt=0, description="initial size x mean distance to 3 nearest neighbours")
    ssim_lambda: float = Field(0.2, ge=0, le=1, description="loss = (1 - l) L1 + l (1 - SSIM)")
    flatten: float = Field(0.0, ge=0, description="weight of a loss on each Gaussian's shortest axis (over the scene "
                           "scale): flat discs lying on the surfaces, for meshing (NeuSG / PGSR); costs some PSNR")
    max_gauss_ratio: float = Field(0.0, ge=0, description="splatfacto's scale regularisation: every 10th step, "
                                   "0.1 x the mean excess of each Gaussian's longest / shortest axis over this ratio "
                                   "(splatfacto: 10) joins the loss, against needles that streak novel views; 0 = off")
    lr_means: float = Field(1.6e-4, gt=0, description="position LR x scene scale at step 0")
    lr_means_final: float = Field(0.01, gt=0, description="position LR at the last step, x lr_means")
    lr_scales: float = Field(5e-3, gt=0)
    lr_quats: float = Field(1e-3, gt=0)
    lr_opacities: float = Field(5e-2, gt=0)
    lr_sh0: float = Field(2.5e-3, gt=0)
    lr_shN: float = Field(2.5e-3 / 20, gt=0)  # noqa: N815 - gsplat's name
    refine_start: int = Field(500, ge=0, description="densification starts after this step")
    refine_stop: int = Field(6000, ge=0, description="densification stops at this step (gsplat: half-way)")
    refine_every: int = Field(100, ge=1)
    reset_every: int = Field(3000, ge=1, description="opacity reset period, steps")
    grow_grad2d: float = Field(2e-4, gt=0, description="view-space gradient threshold for growing")
    prune_opa: float = Field(0.005, gt=0, description="prune below this opacity")
    cap_max: int = Field(150_000, ge=1, description="most Gaussians the model may hold (memory and speed on "
                         "the CPU; raise it on CUDA)")
    strategy: Literal["default", "mcmc"] = Field(
        "mcmc", description="where Gaussians go: default = 3DGS's clone / split / prune by view-space gradient "
        "(gsplat's DefaultStrategy); mcmc = 3DGS as Markov chain Monte Carlo (gsplat's MCMCStrategy: dead ones "
        "relocated onto live ones, new ones drawn up to a cap by cap_at, position noise), which brings gsplat's "
        "MCMC preset for the options not set: opacity_reg 0.01, scale_reg 0.01, init_opacity 0.5, init_scale 0.1")
    cap_at: float = Field(0.6, ge=0, le=1, description="mcmc: reach the cap by this share of training (steps, or "
                          "the time budget when it ends first), faster than 5 % a refinement where that is too "
                          "slow, whatever the sparse points' count; 0 = 5 % a refinement only (gsplat)")
    cap_per_step: float = Field(15.0, ge=0, description="mcmc: the cap is at most this many Gaussians for each "
                                "step the run will take at its pace (150,000 in 10,000 steps; a time budget that "
                                "allows fewer steps, fewer Gaussians, as each slows every step); 0 = cap_max only")
    noise_lr: float = Field(5e5, ge=0, description="mcmc: position noise x the position LR (gsplat's noise_lr)")
    opacity_reg: float = Field(0.0, ge=0, description="weight of the mean opacity in the loss (gsplat's "
                               "opacity_reg)")
    scale_reg: float = Field(0.0, ge=0, description="weight of the mean scale (normalised frame) in the loss "
                             "(gsplat's scale_reg)")
    depth_lambda: float = Field(0.0, ge=0, description="weight of the sparse points' depth in the loss: rendered "
                                "against point disparity at each training view's SfM points (gsplat's depth_loss "
                                "and depth_lambda, 0.01 there when on); 0 = off. 0.1 gained sceaux's 9 photos "
                                "1.2-1.9 dB in front of white, nothing at 5 minutes in front of the learned "
                                "background (README)")

    @model_validator(mode="before")
    @classmethod
    def _mcmc_preset(cls, data):
        if isinstance(data, dict) and data.get("strategy", "mcmc") == "mcmc":
            return {**MCMC_PRESET, **data}
        return data

    @model_validator(mode="after")
    def _device_fits_rasterizer(self):
        cuda = self.device.startswith("cuda")
        if self.rasterizer == "gsplat" and not cuda:
            raise ValueError(f"rasterizer gsplat runs on CUDA only, device is {self.device!r}: set device=cuda "
                             "too (a machine with an NVIDIA GPU), or keep rasterizer=cpu")
        if self.rasterizer != "gsplat" and self.device != "cpu":
            raise ValueError(f"rasterizer {self.rasterizer} runs on the CPU, device is {self.device!r}: "
                             "set rasterizer=gsplat too for CUDA, or keep device=cpu")
        return self


def initial_model(scene: Scene, views: list[View], cfg: GaussianTrainConfig,
                  frame: WorldFrame) -> tuple[GaussianModel, str]:
    """The model before training, in the normalised `frame` (`views` are in it), and the initialisation used."""
    rng = np.random.default_rng(cfg.seed)
    how = cfg.init
    points = scene_points(scene)
    if points is not None:
        points = frame.points(points[0]), points[1]
    if how == "auto":
        how = "points" if points is not None else "visual_hull" if any(v.alpha is not None for v in views) else "random"
    if how == "points" and points is None:
        how = "random"
    if how == "points":
        xyz, rgb = points
    elif how == "visual_hull":
        xyz, rgb = visual_hull_points(views, cfg.init_count, rng)
    else:
        xyz, rgb = random_points(views, cfg.init_count, rng)
    if cfg.sky_points and all(v.alpha is None for v in views):
        far = np.percentile(np.linalg.norm(xyz, axis=1), 95) if how == "points" else 1.0
        sky_xyz, sky_rgb = sky_points(views, cfg.sky_points, max(cfg.sky_radius, 2 * far))
        xyz, rgb = np.concatenate([xyz, sky_xyz]), np.concatenate([rgb, sky_rgb])
        how += "+sky"
    model = GaussianModel.from_points(xyz, rgb, cfg.sh_degree, cfg.init_opacity, cfg.init_scale, cfg.device)
    return model, how


def make_optimizers(model: GaussianModel, cfg: GaussianTrainConfig, scale: float,
                    appearance: AffineColor | None = None, poses: PoseCorrection | None = None,
                    background: Tensor | None = None, exposure: ExposureGain | None = None
                    ) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter group (the strategy swaps their tensors), and one each for the appearance, the
    pose corrections, a learned background colour, the model's env map and the exposure gain when given."""
    lrs = {"means": cfg.lr_means * scale, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN}
    fused = model.means.device.type == "cpu"  # one kernel per step instead of a dozen passes over the moments
    optimizers = {k: torch.optim.Adam([model.params[k]], lr=lr, eps=1e-15, fused=fused) for k, lr in lrs.items()}
    if appearance is not None:
        optimizers["appearance"] = torch.optim.Adam(appearance.parameters(), lr=cfg.lr_appearance)
    if poses is not None:
        optimizers["poses"] = torch.optim.Adam(poses.parameters(), lr=cfg.lr_pose)
    if background is not None and background.requires_grad:
        optimizers["background"] = torch.optim.Adam([background], lr=cfg.lr_background)
    if model.envmap is not None:
        optimizers["envmap"] = torch.optim.Adam(model.envmap.parameters(), lr=cfg.lr_envmap)
    if exposure is not None:
        optimizers["exposure"] = torch.optim.Adam(exposure.parameters(), lr=cfg.lr_exposure)
    return optimizers


def schedule_progress(step: int, seconds: float, cfg: GaussianTrainConfig) -> float:
    """How far training is, in [0, 1]: by steps, or by the time budget when that ends first. The position LR
    decays and densification stops along it, so a run cut short by its budget still gets its fine phase."""
    by_time = seconds / (60.0 * cfg.budget_min) if cfg.budget_min else 0.0
    return min(1.0, max(step / cfg.steps, by_time))


def downscale_at(progress: float, cfg: GaussianTrainConfig) -> int:
    """The factor the training images are shrunk by at `progress` in [0, 1] (splatfacto's schedule)."""
    return 2 ** max(cfg.num_downscales - int(progress / cfg.resolution_schedule), 0)


def render_view(model: GaussianModel, view: View, background: torch.Tensor, rasterizer: str,
                sh_degree: int | None = None):
    """rgb (H, W, 3), alpha (H, W, 1), depth (H, W, 1), meta of `model` seen from `view`: in front of its env
    map when it has one, else of `background` (3,)."""
    dev = model.means.device
    behind_here = background.requires_grad or model.envmap is not None  # the kernels give it no gradient
    rgb, alpha, depth, meta = rasterize(model.means, model.quats, model.scales, model.opacities, model.sh,
                                        view.cam_from_world.to(dev), view.K.to(dev), view.width, view.height,
                                        sh_degree=model.sh_degree if sh_degree is None else sh_degree,
                                        background=torch.zeros_like(background) if behind_here else background.to(dev),
                                        backend=rasterizer)
    if not behind_here:
        return rgb, alpha, depth, meta
    far = background.to(dev) if model.envmap is None else behind(model.envmap, view)
    return rgb + (1 - alpha) * far, alpha, depth, meta


@dataclass
class _State:
    """What a checkpoint holds besides the step's inputs."""

    model: GaussianModel
    optimizers: dict[str, torch.optim.Adam]
    strategy: dict
    appearance: AffineColor | None
    poses: PoseCorrection | None
    background: Tensor  # (3,) on the device; a leaf with a gradient when learned
    exposure: ExposureGain | None = None
    step: int = 0
    seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)


def train(scene: Scene, views: list[View], cfg: GaussianTrainConfig, background: torch.Tensor, workdir: Path,
          eval_views: list[View] = (),
          on_step: Callable[[int, int, float, int], None] | None = None,
          learn_background: bool = False) -> training.TrainResult:
    """Train on `views` (resuming from `workdir/checkpoint.pt` when there is one) and return the model.

    Training runs in the normalised frame (`radiance.normalize.WorldFrame`); the model returned is in the
    scene's frame. on_step(step, steps, running training PSNR, Gaussian count) is called after every step.
    With `learn_background` the colour behind the model starts at `background` (3,) and is fitted with the
    rest (what the Gaussians leave uncovered: a sky, a plain backdrop); the result carries the colour learned.
    With an env map (`background_model`) that is learned instead, one colour per direction."""
    torch.manual_seed(cfg.seed)
    frame = WorldFrame.from_views(views)
    views, eval_views = [frame.view(v) for v in views], [frame.view(v) for v in eval_views]
    scale = scene_scale(views)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / CHECKPOINT
    strategy = make_strategy(cfg)
    depth_points = [torch.as_tensor(frame.points(xyz), dtype=torch.float32, device=cfg.device)
                    for xyz in observed_points(scene, [v.name for v in views])] if cfg.depth_lambda else None
    envmap = cfg.background_model == "envmap" or (cfg.background_model == "auto" and
                                                  all(v.alpha is None for v in views))
    learn_background = learn_background and not envmap  # an env map is what the uncovered pixels see
    st = _restore(ckpt_path, cfg, scale, len(views), learn_background) if ckpt_path.is_file() else None
    resumed = None if st is None else st.step
    if st is None:
        model, how = initial_model(scene, views, cfg, frame)
        if envmap:
            model.envmap = EnvMap(cfg.envmap_height, mean_colour(views)).to(cfg.device)
        appearance = AffineColor(len(views)).to(cfg.device) if cfg.appearance == "affine" else None
        poses = PoseCorrection(len(views)).to(cfg.device) if cfg.pose_refine else None
        bg = background.to(cfg.device, torch.float32).clone().requires_grad_(learn_background)
        exposure = exposure_model(cfg, [v.exposure for v in views])
        if exposure is not None:
            exposure = exposure.to(cfg.device)
        st = _State(model, make_optimizers(model, cfg, scale, appearance, poses, bg, exposure),
                    strategy.initialize_state(len(model)), appearance, poses, bg, exposure,
                    events={"init_" + how: 1})
        if depth_points is not None:  # the report says how many point depths the term had (none: no effect)
            st.events["depth_observations"] = sum(len(p) for p in depth_points)

    def step() -> tuple[float, int]:
        epoch, i = divmod(st.step, len(views))  # a seeded permutation of the views per epoch
        order = torch.randperm(len(views), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        index = int(order[i])
        progress = schedule_progress(st.step, st.seconds, cfg)
        for group in st.optimizers["means"].param_groups:
            group["lr"] = cfg.lr_means * scale * cfg.lr_means_final**progress
        if progress >= cfg.refine_stop / cfg.steps:  # densification ends at the same fraction of a budget
            strategy.refine_stop_iter = min(strategy.refine_stop_iter, st.step)
        if isinstance(strategy, MCMCStrategy):  # grows to its cap along the budget, so starts along it too (the
            strategy.progress = progress  # clone / split starting so cost monstree 0.7 dB at 5 min: README)
            if progress >= cfg.refine_start / cfg.steps:
                strategy.refine_start_iter = min(strategy.refine_start_iter, st.step)
        view = coarser_view(views[index], downscale_at(progress, cfg))
        points = None if depth_points is None else depth_points[index]
        return _step(st, view, index, cfg, strategy, scale, points), len(st.model)

    def render_test(view: View) -> Tensor:  # at the view's own exposure, as the render stage will
        return at_exposure(render_view(st.model, view, st.background.detach(), cfg.rasterizer)[0], st.exposure,
                           view.exposure)

    result = training.run(st, cfg, step, render_test,
                          lambda: _save_checkpoint(ckpt_path, st), lambda: {"gaussians": len(st.model)}, eval_views,
                          on_step, resumed, smoothing=0.9)
    with torch.no_grad():
        world = frame.gaussians_to_world(dict(st.model.params.items()))
        poses = None if st.poses is None else torch.stack(
            [frame.pose_to_world(st.poses(v.cam_from_world.to(cfg.device), i).cpu()) for i, v in enumerate(views)])
    model = GaussianModel.from_tensors(world, st.model.sh_degree, cfg.device)  # the frame turns nothing: the env
    model.envmap = st.model.envmap  # map's directions are the scene's
    return dataclasses.replace(result, model=model,
                               appearance=st.appearance, poses=poses, background=st.background.detach().cpu(),
                               exposure=st.exposure)


def make_strategy(cfg: GaussianTrainConfig) -> DefaultStrategy | MCMCStrategy:
    if cfg.strategy == "mcmc":
        return MCMCStrategy(cap_max=cfg.cap_max, noise_lr=cfg.noise_lr, refine_start_iter=cfg.refine_start,
                            refine_stop_iter=cfg.refine_stop, refine_every=cfg.refine_every,
                            min_opacity=cfg.prune_opa, cap_at=cfg.cap_at, cap_per_step=cfg.cap_per_step)
    return DefaultStrategy(prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, refine_start_iter=cfg.refine_start,
                           refine_stop_iter=cfg.refine_stop, reset_every=cfg.reset_every,
                           refine_every=cfg.refine_every, cap_max=cfg.cap_max)


def _step(st: _State, view: View, index: int, cfg: GaussianTrainConfig, strategy: DefaultStrategy | MCMCStrategy,
          scale: float, depth_points: Tensor | None = None) -> float:
    """One optimisation step on `view` (training view `index`, which observes the sparse points `depth_points`
    (M, 3) of the normalised frame, for `depth_lambda`); returns its training PSNR."""
    target = view.image.to(cfg.device)
    if st.poses is not None:
        view = dataclasses.replace(view, cam_from_world=st.poses(view.cam_from_world.to(cfg.device), index))
    rgb, _, depth, meta = render_view(st.model, view, st.background, cfg.rasterizer,
                                      min(st.step // cfg.sh_interval, cfg.sh_degree))
    meta["means2d"].retain_grad()
    rgb = at_exposure(rgb, st.exposure, view.exposure)
    if st.appearance is not None:
        rgb = st.appearance(rgb, index)
    if view.ignore is not None:  # ignored pixels match their target: no loss, no gradient, not in densification
        rgb = torch.where(view.ignore.to(rgb.device)[..., None], target, rgb)
    loss = (1 - cfg.ssim_lambda) * torch.abs(rgb - target).mean() + cfg.ssim_lambda * (1 - ssim_cpu(rgb, target))
    if cfg.flatten:
        loss = loss + cfg.flatten * st.model.scales.min(dim=-1).values.mean() / scale
    if cfg.max_gauss_ratio and st.step % 10 == 0:
        loss = loss + scale_ratio_loss(st.model.scales, cfg.max_gauss_ratio)
    if cfg.opacity_reg:
        loss = loss + cfg.opacity_reg * st.model.opacities.mean()
    if cfg.scale_reg:
        loss = loss + cfg.scale_reg * st.model.scales.mean()
    if depth_points is not None and len(depth_points):
        loss = loss + cfg.depth_lambda * disparity_loss(depth, depth_points, view.cam_from_world.to(depth.device),
                                                      view.K.to(depth.device), scale)
    loss.backward()
    changed = strategy.step_post_backward(st.model.params, st.optimizers, st.strategy, st.step, meta, view.width,
                                          view.height, scale)
    for key, n in changed.items():
        st.events[key] = st.events.get(key, 0) + n
    for key, opt in st.optimizers.items():
        if key != "poses" or st.step >= cfg.pose_refine_start:
            opt.step()
        opt.zero_grad(set_to_none=True)
    if st.poses is not None:
        st.poses.recentre()
    if st.background.requires_grad:
        with torch.no_grad():
            st.background.clamp_(0, 1)
    st.step += 1
    return psnr(rgb, target)


def scale_ratio_loss(scales: Tensor, max_ratio: float) -> Tensor:
    """splatfacto's scale regularisation: 0.1 x the mean excess of longest / shortest axis over `max_ratio`,
    over every Gaussian. scales: (N, 3) standard deviations."""
    return 0.1 * (scales.amax(-1) / scales.amin(-1) - max_ratio).clamp_min(0).mean()


def _save_checkpoint(path: Path, st: _State) -> None:
    checkpoint = {"params": {k: v.detach().cpu() for k, v in st.model.params.items()},
                  "envmap": None if st.model.envmap is None else st.model.envmap.texture.detach().cpu(),
                  "optimizers": {k: opt.state_dict() for k, opt in st.optimizers.items()},
                  "strategy": st.strategy, "step": st.step,
                  "appearance": None if st.appearance is None else st.appearance.state_dict(),
                  "poses": None if st.poses is None else st.poses.state_dict(),
                  "background": st.background.detach().cpu(),
                  "exposure": None if st.exposure is None else st.exposure.values(),
                  "seconds": st.seconds, "curve": st.curve, "events": st.events, "rng": torch.get_rng_state()}
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def _restore(path: Path, cfg: GaussianTrainConfig, scale: float, n_views: int, learn_background: bool) -> _State:
    ck = torch.load(path, weights_only=True)
    model = GaussianModel.from_tensors(ck["params"], cfg.sh_degree, cfg.device)
    if ck.get("envmap") is not None:
        model.envmap = EnvMap.from_texture(ck["envmap"]).to(cfg.device)
    appearance = None
    if ck.get("appearance") is not None:
        appearance = AffineColor(n_views).to(cfg.device)
        appearance.load_state_dict(ck["appearance"])
    poses = None
    if ck.get("poses") is not None:
        poses = PoseCorrection(n_views).to(cfg.device)
        poses.load_state_dict(ck["poses"])
    background = ck["background"].to(cfg.device).requires_grad_(learn_background)
    exposure = None if ck.get("exposure") is None else ExposureGain(**ck["exposure"]).to(cfg.device)
    optimizers = make_optimizers(model, cfg, scale, appearance, poses, background, exposure)
    for k, opt in optimizers.items():
        opt.load_state_dict(ck["optimizers"][k])
    torch.set_rng_state(ck["rng"])
    return _State(model, optimizers, ck["strategy"], appearance, poses, background, exposure, ck["step"],
                  ck["seconds"], ck["curve"], ck["events"])
