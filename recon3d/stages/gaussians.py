"""gaussians: train 3D Gaussian splatting on the scene's posed images.

Trains on the `train` views (the data's own split, or every image but each `holdout_every`-th), checks
every view it will use before the first step, and writes `model.safetensors` (with `model.json`: kind,
background, views) in its folder, the standard 3DGS `OUT/<node>/point_cloud.ply` and its web viewers' copy
`point_cloud.splat` (antimatter15's layout: degree-0 colour, 8-bit colour, opacity and rotation). An
interrupted run resumes from its last checkpoint when the same node runs again. The report holds training time, steps,
why training stopped, the Gaussian count, the PSNR/SSIM-vs-time curve on test views, and peak memory.
With `mask_classes`, the pixels of those label classes (objects that move) are left out of the training
loss, so a moving object is not baked in as floaters (the running training PSNR counts them as exact).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from pydantic import Field

from recon3d.io.splat_ply import write_splats
from recon3d.io.splat_web import write_dot_splat
from recon3d.memory import PeakMemory
from recon3d.radiance.gaussians.trainer import CHECKPOINT, GaussianTrainConfig, train
from recon3d.scene import RadianceModel, Scene
from recon3d.stages.base import Stage, StageContext
from recon3d.stages.radiance_common import RadianceData, RadianceDataConfig, finish, prepare, progress, torch_threads


class GaussiansConfig(GaussianTrainConfig, RadianceDataConfig):
    mask_classes: tuple[str, ...] = Field((), description="label classes whose pixels are left out of the "
                                          "training loss (objects that move: people, cars), so they are not "
                                          "baked in as floaters; from the scene's labels")
    mask_dilate_px: int = Field(2, ge=0, description="grow those masks by this many pixels")


def ignore_masks(scene: Scene, data: RadianceData, cfg: GaussiansConfig, ctx: StageContext) -> RadianceData:
    """The training views with `ignore` set to the pixels of `cfg.mask_classes`."""
    if not cfg.mask_classes:
        return data
    from recon3d.labels.masks import class_masks, undistort_mask

    masks = {name: undistort_mask(mask, scene.cameras[scene.image(name).camera_id])  # as the views: undistorted
             for name, mask in class_masks(scene, cfg.mask_classes, cfg.mask_dilate_px, "gaussians").items()}
    views = [dataclasses.replace(v, ignore=_at_size(masks[v.name], v.width, v.height)) if v.name in masks else v
             for v in data.views]
    ctx.count("views_masked", sum(v.name in masks for v in data.views))
    return dataclasses.replace(data, views=views)


def _at_size(mask: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(H, W) bool mask of a photo -> (height, width) of its training view (downscaled: max_side, downscale), a
    pixel ignored where any of the photo's pixels it covers is, as `coarser_view` shrinks it later."""
    t = torch.from_numpy(np.ascontiguousarray(mask))
    if t.shape == (height, width):
        return t
    return torch.nn.functional.interpolate(t[None, None].float(), size=(height, width), mode="area")[0, 0] > 0


def run(scene: Scene, cfg: GaussiansConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("gaussians")
    with torch_threads(cfg.threads):
        return train_gaussians(scene, cfg, ctx)


def train_gaussians(scene: Scene, cfg: GaussiansConfig, ctx: StageContext) -> Scene:
    data = ignore_masks(scene, prepare(scene, cfg, ctx, "gaussians"), cfg, ctx)
    with PeakMemory() as memory:
        result = train(scene, data.views, cfg, data.background, ctx.resumable, data.tests[:cfg.eval_views],
                       progress(ctx, cfg.steps, "Gaussians"), learn_background=data.background_name == "learned")
    model_path = result.model.save(ctx.workdir / "model.safetensors")
    finish(ctx, cfg, data, result, model_path, CHECKPOINT, "gaussians",
           {"sh_degree": result.model.sh_degree, "rasterizer": cfg.rasterizer,
            "envmap": result.model.envmap is not None}, memory.peak_mb)
    raw = {k: v.detach().cpu().numpy() for k, v in result.model.params.items()}
    ply = write_splats(ctx.published / ctx.node_id / "point_cloud.ply", raw)
    write_dot_splat(ctx.published / ctx.node_id / "point_cloud.splat", raw)  # for web viewers (lossy, 32 B each)
    ctx.count("gaussians", len(result.model))
    if result.poses is not None:  # how far refinement moved each training camera: degrees, world units
        moves = {v.name: pose_change(v.cam_from_world.double(), refined)
                 for v, refined in zip(data.views, result.poses, strict=True)}
        ctx.record("pose_refined", {name: [round(d, 4), round(m, 6)] for name, (d, m) in moves.items()})
        ctx.count("pose_refined_mean_deg", round(float(np.mean([d for d, _ in moves.values()])), 4))
        ctx.count("pose_refined_mean_shift", round(float(np.mean([m for _, m in moves.values()])), 6))
    ctx.record("ply", str(ply))
    return scene.replace(radiance={**scene.radiance, ctx.node_id: RadianceModel("gaussians", str(model_path))})


def pose_change(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """Rotation (degrees) and camera-centre shift (world units) between two cam_from_world (4, 4)."""
    rot = after[:3, :3] @ before[:3, :3].T
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(rot)) - 1) / 2))))
    shift = (after[:3, :3].T @ after[:3, 3]) - (before[:3, :3].T @ before[:3, 3])  # -(C_after - C_before)
    return angle, float(torch.linalg.norm(shift))


STAGE = Stage(
    name="gaussians",
    version=12,  # 12: exposure when some photos' EXIF record none (those at the reference)
    # 3: downscale / max_side; the protocol says how the pixels were made; 4: point_cloud.splat;
    # 5: 16-bit grey photos read as their 8-bit image; 6: mcmc grows to cap_max by cap_at;
    # 7: mcmc (now the default) caps its count at cap_per_step Gaussians a step of the run, by cap_at 0.6;
    # 8: background auto (opaque photos: a colour learned with the model), its colour in model.json;
    # 9: projection, SH and D-SSIM by C++ kernels with their backward; 10: compositing a row of pixels at once
    # (faster steps: more of them in a time budget); 11: each photo's EXIF exposure (appearance.exposure)
    config=GaussiansConfig,
    run=run,
    reads=("images", "cameras", "poses", "points", "labels", "class_names"),
    writes=("radiance",),
    summary="train 3D Gaussian splatting (C++ CPU rasterizer, PyTorch reference, gsplat on CUDA)",
)
