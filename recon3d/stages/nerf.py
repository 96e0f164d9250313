"""nerf: train the voxel-grid NeRF (`recon3d.radiance.nerf`) on the scene's posed images.

The same views, checks, files and report as the `gaussians` stage (train on the `train` split, test views
checked before the first step, `model.safetensors` + `model.json` in the node folder, resume from the last
checkpoint), so `pipelines/nerf.yaml` differs from `pipelines/gaussians.yaml` only in this node.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io.files import write_json
from recon3d.radiance.nerf.trainer import CHECKPOINT, NerfTrainConfig, train
from recon3d.radiance.views import BACKGROUNDS, load_views, pinhole_scene, split_views
from recon3d.scene import RadianceModel, Scene
from recon3d.stages.base import Stage, StageContext


class NerfConfig(NerfTrainConfig):
    background: Literal["white", "black"] = Field("white", description="colour behind the field, and what RGBA "
                                                  "training images are composited on")
    holdout_every: int = Field(8, ge=0, description="without a split in the data, hold out every n-th image for "
                               "testing (0 = train on all)")
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch's default)")


def run(scene: Scene, cfg: NerfConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("nerf")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_names, test_names = split_views(scene, cfg.holdout_every)
    for im in scene.images:
        if im.name not in scene.poses:
            ctx.drop(im.name, "not posed: no view to train or test on")
    if not train_names:
        raise StageError("nerf: the scene has no posed training images",
                         "ingest posed data (transforms.json, COLMAP) or run structure from motion first")
    source = pinhole_scene(scene, ctx)
    background = BACKGROUNDS[cfg.background]
    views = load_views(source, train_names, background)
    tests = load_views(source, test_names, background)  # checked now, before the training
    step_every = max(cfg.steps // 100, 1)

    def on_step(step: int, total: int, running_psnr: float, shaded: int) -> None:
        if step % step_every == 0 or step == total:
            ctx.progress(step, total, f"PSNR {running_psnr:.2f} dB, {shaded} samples")

    result = train(views, cfg, torch.tensor(background), ctx.resumable, tests[:cfg.eval_views], on_step)
    model_path = result.model.save(ctx.workdir / "model.safetensors")
    (ctx.resumable / CHECKPOINT).unlink(missing_ok=True)  # the model is saved: nothing left to resume
    write_json(ctx.workdir / "model.json", {"kind": "nerf", "background": cfg.background, "backend": cfg.backend,
                                            "train": train_names, "test": test_names})
    ctx.count("train_views", len(views))
    ctx.count("test_views", len(tests))
    ctx.count("steps", result.steps)
    ctx.count("resolution", result.model.grid.res)
    ctx.count("train_seconds", round(result.train_seconds, 2))
    ctx.record("stopped_by", result.stopped_by)
    ctx.record("resumed_from_step", result.resumed_from)
    ctx.record("curve", result.curve)
    ctx.record("events", result.events)
    ctx.record("peak_rss_mb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    ctx.record("model_bytes", Path(model_path).stat().st_size)
    return scene.replace(radiance={**scene.radiance, ctx.node_id: RadianceModel("nerf", str(model_path))})


STAGE = Stage(
    name="nerf",
    version=1,
    config=NerfConfig,
    run=run,
    reads=("images", "cameras", "poses"),
    writes=("radiance",),
    summary="train a voxel-grid NeRF (occupancy grid, small colour head; C++ on the CPU, PyTorch anywhere)",
)
