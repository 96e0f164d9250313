"""gaussians: train 3D Gaussian splatting on the scene's posed images.

Trains on the `train` views (the data's own split, or every image but each `holdout_every`-th), checks
every view it will use before the first step, and writes `model.safetensors` (with `model.json`: kind,
background, views) in its folder and the standard 3DGS `OUT/<node>/point_cloud.ply`. An interrupted run
resumes from its last checkpoint when the same node runs again. The report holds training time, steps,
why training stopped, the Gaussian count, the PSNR/SSIM-vs-time curve on test views, and peak memory.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io.files import write_json
from recon3d.io.splat_ply import write_splats
from recon3d.radiance.gaussians.trainer import CHECKPOINT, GaussianTrainConfig, train
from recon3d.radiance.views import BACKGROUNDS, load_views, pinhole_scene, split_views
from recon3d.scene import RadianceModel, Scene
from recon3d.stages.base import Stage, StageContext


class GaussiansConfig(GaussianTrainConfig):
    background: Literal["white", "black"] = Field("white", description="colour behind the Gaussians, and what "
                                                  "RGBA training images are composited on")
    holdout_every: int = Field(8, ge=0, description="without a split in the data, hold out every n-th image for "
                               "testing (0 = train on all)")
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch's default)")


def run(scene: Scene, cfg: GaussiansConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("gaussians")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_names, test_names = split_views(scene, cfg.holdout_every)
    for im in scene.images:
        if im.name not in scene.poses:
            ctx.drop(im.name, "not posed: no view to train or test on")
    if not train_names:
        raise StageError("gaussians: the scene has no posed training images",
                         "ingest posed data (transforms.json, COLMAP) or run structure from motion first")
    source = pinhole_scene(scene, ctx)
    background = BACKGROUNDS[cfg.background]
    views = load_views(source, train_names, background)
    tests = load_views(source, test_names, background)  # checked now, before hours of training
    step_every = max(cfg.steps // 100, 1)

    def on_step(step: int, total: int, running_psnr: float, count: int) -> None:
        if step % step_every == 0 or step == total:
            ctx.progress(step, total, f"PSNR {running_psnr:.2f} dB, {count} Gaussians")

    result = train(scene, views, cfg, torch.tensor(background), ctx.resumable, tests[:cfg.eval_views], on_step)
    model_path = result.model.save(ctx.workdir / "model.safetensors")
    (ctx.resumable / CHECKPOINT).unlink(missing_ok=True)  # the model is saved: nothing left to resume
    write_json(ctx.workdir / "model.json", {"kind": "gaussians", "background": cfg.background,
                                            "sh_degree": result.model.sh_degree, "rasterizer": cfg.rasterizer,
                                            "train": train_names, "test": test_names})
    raw = {k: v.detach().cpu().numpy() for k, v in result.model.params.items()}
    ply = write_splats(ctx.published / ctx.node_id / "point_cloud.ply", raw)
    ctx.count("train_views", len(views))
    ctx.count("test_views", len(tests))
    ctx.count("steps", result.steps)
    ctx.count("gaussians", len(result.model))
    ctx.count("train_seconds", round(result.train_seconds, 2))
    ctx.record("stopped_by", result.stopped_by)
    ctx.record("resumed_from_step", result.resumed_from)
    ctx.record("curve", result.curve)
    ctx.record("events", result.events)
    ctx.record("peak_rss_mb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    ctx.record("model_bytes", Path(model_path).stat().st_size)
    ctx.record("ply", str(ply))
    return scene.replace(radiance={**scene.radiance, ctx.node_id: RadianceModel("gaussians", str(model_path))})


STAGE = Stage(
    name="gaussians",
    version=1,
    config=GaussiansConfig,
    run=run,
    reads=("images", "cameras", "poses", "points"),
    writes=("radiance",),
    summary="train 3D Gaussian splatting (C++ CPU rasterizer, PyTorch reference, gsplat on CUDA)",
)
