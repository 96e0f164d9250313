"""gaussians: train 3D Gaussian splatting on the scene's posed images.

Trains on the `train` views (the data's own split, or every image but each `holdout_every`-th), checks
every view it will use before the first step, and writes `model.safetensors` (with `model.json`: kind,
background, views) in its folder and the standard 3DGS `OUT/<node>/point_cloud.ply`. An interrupted run
resumes from its last checkpoint when the same node runs again. The report holds training time, steps,
why training stopped, the Gaussian count, the PSNR/SSIM-vs-time curve on test views, and peak memory.
"""

from __future__ import annotations

from recon3d.io.splat_ply import write_splats
from recon3d.radiance.gaussians.trainer import CHECKPOINT, GaussianTrainConfig, train
from recon3d.radiance.training import PeakMemory
from recon3d.scene import RadianceModel, Scene
from recon3d.stages.base import Stage, StageContext
from recon3d.stages.radiance_common import RadianceDataConfig, finish, prepare, progress


class GaussiansConfig(GaussianTrainConfig, RadianceDataConfig):
    pass


def run(scene: Scene, cfg: GaussiansConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("gaussians")
    data = prepare(scene, cfg, ctx, "gaussians")
    with PeakMemory() as memory:
        result = train(scene, data.views, cfg, data.background, ctx.resumable, data.tests[:cfg.eval_views],
                       progress(ctx, cfg.steps, "Gaussians"))
    model_path = result.model.save(ctx.workdir / "model.safetensors")
    finish(ctx, cfg, data, result, model_path, CHECKPOINT, "gaussians",
           {"sh_degree": result.model.sh_degree, "rasterizer": cfg.rasterizer}, memory.peak_mb)
    raw = {k: v.detach().cpu().numpy() for k, v in result.model.params.items()}
    ply = write_splats(ctx.published / ctx.node_id / "point_cloud.ply", raw)
    ctx.count("gaussians", len(result.model))
    ctx.record("ply", str(ply))
    return scene.replace(radiance={**scene.radiance, ctx.node_id: RadianceModel("gaussians", str(model_path))})


STAGE = Stage(
    name="gaussians",
    version=2,  # 2: the report carries the training protocol; peak memory of the training alone
    config=GaussiansConfig,
    run=run,
    reads=("images", "cameras", "poses", "points"),
    writes=("radiance",),
    summary="train 3D Gaussian splatting (C++ CPU rasterizer, PyTorch reference, gsplat on CUDA)",
)
