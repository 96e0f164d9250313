"""nerf: train the voxel-grid NeRF (`recon3d.radiance.nerf`) on the scene's posed images.

The same views, checks, files and report as the `gaussians` stage (`stages.radiance_common`: train on the
`train` split, test views checked before the first step, `model.safetensors` + `model.json` in the node
folder, resume from the last checkpoint), so `pipelines/nerf.yaml` differs from `pipelines/gaussians.yaml`
only in this node.
"""

from __future__ import annotations

from recon3d.io.files import link_or_copy
from recon3d.memory import PeakMemory
from recon3d.radiance.nerf.trainer import CHECKPOINT, NerfTrainConfig, grid_memory_mb, train
from recon3d.radiance.sparse_depth import observed_points
from recon3d.scene import RadianceModel, Scene
from recon3d.stages.base import Stage, StageContext
from recon3d.stages.radiance_common import RadianceDataConfig, finish, prepare, progress, torch_threads


class NerfConfig(NerfTrainConfig, RadianceDataConfig):
    pass


def run(scene: Scene, cfg: NerfConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("nerf")
    with torch_threads(cfg.threads):
        return train_nerf(scene, cfg, ctx)


def train_nerf(scene: Scene, cfg: NerfConfig, ctx: StageContext) -> Scene:
    data = prepare(scene, cfg, ctx, "nerf")
    with PeakMemory() as memory:
        result = train(data.views, cfg, data.background, ctx.resumable, data.tests[:cfg.eval_views],
                       progress(ctx, cfg.steps, "samples"), None if scene.points is None else scene.points.xyz,
                       learn_background=data.background_name == "learned",
                       observed=None if cfg.depth_lambda == 0 else observed_points(scene, [v.name for v in data.views]))
    model_path = result.model.save(ctx.workdir / "model.safetensors")
    published = ctx.published / ctx.node_id / model_path.name  # the weights in OUT/<node>/, beside model.json
    published.parent.mkdir(parents=True, exist_ok=True)
    link_or_copy(model_path, published)
    finish(ctx, cfg, data, result, model_path, CHECKPOINT, "nerf", {"backend": cfg.backend}, memory.peak_mb)
    ctx.count("resolution", result.model.grid.res)
    ctx.count("grid_memory_mb", round(grid_memory_mb(result.model.grid.res, cfg.features), 1))
    ctx.count("space", "contract" if result.model.contraction is not None else "box")
    ctx.count("near", round(result.model.near, 6))
    ctx.count("shells", 0 if result.model.shells is None else int(result.model.shells.radii.shape[0]))
    if "occupied_fraction" in result.events:  # the occupancy grid's last refresh: how much of the box holds density
        ctx.count("occupied_fraction", result.events["occupied_fraction"])
    return scene.replace(radiance={**scene.radiance, ctx.node_id: RadianceModel("nerf", str(model_path))})


STAGE = Stage(
    name="nerf",
    version=13,  # 13: the weights published in OUT/<node>/; 12: exposure when some photos' EXIF record none (those
    # at the reference)
    # 11: distortion_lambda auto (mip-NeRF 360's distortion loss for photos); 10: each photo's EXIF
    # exposure (appearance.exposure); 9: rays auto (2048 a step for photos), depth_rays 512; 8: depth_lambda auto (the
    # sparse points' depth for photos); 7: background auto (learned behind the box without an env map), the env map
    # starts at the mean of the photos' mean colours; 6: 16-bit grey photos read as 8-bit; 5: appearance option; 4:
    # contracted space and near plane for photos; 3: downscale, points box, occupancy from the points, env map
    config=NerfConfig,
    run=run,
    reads=("images", "cameras", "poses", "points"),
    writes=("radiance",),
    summary="train a voxel-grid NeRF (occupancy grid, small colour head; C++ on the CPU, PyTorch anywhere)",
)
