"""mesh: a surface from a trained radiance model (Gaussians or NeRF), as ns-export and 2DGS make one, or
from the depth maps of a calibrated stereo pair.

Renders depth (`depth`: expected, or for Gaussians where each ray meets their planes, as PGSR) and colour at
the posed views (`views`; a scene without a model but with depth maps, `kind: depth_maps` from `calibrate`,
uses those), keeps depth where the render is opaque (`alpha_min`) and inside the region to mesh (`crop`: the
sparse points' robust bounds, or the depth maps' points' when the scene has too few; no crop for images with
alpha masks, whose background is known), then

- `tsdf`: fuses the depth maps into Open3D's scalable TSDF volume and extracts the mesh (marching cubes);
- `poisson`: screened Poisson on the depth maps' points (normals from each view's neighbourhoods, facing
  its camera), with the least supported vertices trimmed (`poisson_trim`);

and cleans it as Open3D does: cropped to the region, the small connected pieces removed (`min_cluster`),
optionally decimated (`max_triangles`). Voxel size and truncation follow the region's size unless given;
a voxel whose TSDF volume would not fit in the memory available is refused before anything is allocated.

Writes `OUT/<node>.ply` / `.obj` / `.glb` (vertex colours) and `OUT/<node>.png` (the mesh shaded, and in its
colours, from a training camera and from an orbit camera), and the scene's metrics entry (`kind: mesh`).
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import psutil
import torch
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io import images as image_io
from recon3d.io.mesh import FORMATS, write_o3d_mesh
from recon3d.memory import PeakMemory
from recon3d.radiance.renderers import model_meta, open_model
from recon3d.radiance.views import View, background_colour, load_views, orbit_views, radiance_scene
from recon3d.scene import Scene
from recon3d.stages.base import Device, Stage, StageConfig, StageContext
from recon3d.stages.render import pick_model
from recon3d.surface import fuse, measure

MIN_POINTS = 100  # sparse points needed to take the region to mesh from them
MEMORY_SHARE = 0.5  # of the memory available now, the most a TSDF volume may take
PREVIEW_SIDE = 480  # longest side of each picture in OUT/<node>.png


class MeshConfig(StageConfig):
    model: str = Field("", description="node id of the model in the scene ('' = the last one trained)")
    backend: Literal["tsdf", "poisson"] = Field("tsdf", description="TSDF fusion of rendered depth, or screened "
                                                "Poisson on its points")
    views: Literal["train", "all"] = Field("all", description="the posed views whose depth is rendered")
    depth: Literal["expected", "planar"] = Field(
        "expected", description="the opacity-weighted mean depth of what each pixel sees; planar (Gaussians): each "
        "ray cut with the Gaussians' planes (PGSR), exact on flat Gaussians, no better on trained ones "
        "(benchmarks/mesh.py) and slower")
    alpha_min: float = Field(0.5, gt=0, le=1, description="depth is kept where the render's opacity is at least this")
    resolution: int = Field(512, ge=16, description="voxels along the longest side of the region (when voxel is 0)")
    voxel: float = Field(0.0, ge=0, description="voxel size in world units (0 = the region's longest side / "
                         "resolution)")
    trunc_voxels: float = Field(5.0, gt=1, description="TSDF truncation distance, in voxels")
    crop: bool = Field(True, description="mesh only the region of the sparse points (1st to 99th percentile per "
                       "axis, grown by crop_margin); images with alpha masks are not cropped")
    crop_margin: float = Field(0.1, ge=0, description="margin added on each side of the region, as a fraction of "
                               "its size")
    poisson_depth: int = Field(9, ge=5, le=12, description="poisson: octree depth")
    poisson_trim: float = Field(0.02, ge=0, lt=1, description="poisson: quantile of the least supported vertices "
                                "removed")
    poisson_reach: float = Field(3.0, gt=0, description="poisson: vertices farther than this many voxels from every "
                                 "point are removed")
    min_cluster: float = Field(0.02, ge=0, le=1, description="remove connected pieces with fewer triangles than "
                               "this fraction of the largest (0 = keep all)")
    max_triangles: int = Field(0, ge=0, description="quadric decimation to this many triangles (0 = none)")
    formats: tuple[Literal["ply", "obj", "glb"], ...] = Field(FORMATS, description="files written into OUT")
    device: Device = Field("cpu", description="torch device to render on")


def run(scene: Scene, cfg: MeshConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("mesh")
    start = tic = time.perf_counter()
    with PeakMemory() as memory:
        if scene.radiance or not scene.metrics_of_kind("depth_maps"):
            frames, source = model_frames(scene, cfg, ctx)
        else:
            frames, source = depth_map_frames(scene)
        ctx.count("seconds_render", round(time.perf_counter() - tic, 2))
        box = region(scene, frames, cfg, source["masked"])
        frames = [fuse.crop_depth(f, box) for f in frames]
        voxel = cfg.voxel or float(np.max(box[1] - box[0])) / cfg.resolution
        trunc = cfg.trunc_voxels * voxel
        tic = time.perf_counter()
        if cfg.backend == "tsdf":
            check_memory(frames, voxel, trunc)
            mesh = fuse.tsdf_mesh(frames, voxel, trunc)
        else:
            mesh = fuse.poisson_mesh(fuse.dense_cloud(frames, voxel), cfg.poisson_depth, cfg.poisson_trim,
                                     cfg.poisson_reach * voxel)
        ctx.count("seconds_fuse", round(time.perf_counter() - tic, 2))
        raw = len(mesh.triangles)
        mesh = fuse.clean_mesh(mesh, box if cfg.crop else None, cfg.min_cluster, cfg.max_triangles)
    if not len(mesh.triangles):
        raise StageError(f"mesh: no surface left from {source['name']} (the depth maps fused to {raw} triangles, none "
                         "kept by the cleaning)", "keep all pieces (--set mesh.min_cluster=0) or mesh the whole "
                         "depth (--set mesh.crop=false)")
    files = {fmt: str(write_o3d_mesh(ctx.published / f"{ctx.node_id}.{fmt}", mesh)) for fmt in cfg.formats}
    preview = image_io.write_rgb(ctx.published / f"{ctx.node_id}.png", preview_png(mesh, frames))
    entry = {"kind": "mesh", "model": source["node"], "model_kind": source["kind"], "backend": cfg.backend,
             "depth": source["depth"], "files": files, "preview": str(preview), "vertices": len(mesh.vertices),
             "triangles": len(mesh.triangles), "triangles_before_cleaning": raw,
             "watertight": bool(mesh.is_watertight()), "voxel": voxel, "trunc": trunc,
             "region": [box[0].tolist(), box[1].tolist()], "views": len(frames), "peak_memory_mb": memory.peak_mb,
             "seconds": round(time.perf_counter() - start, 2)}
    for key in ("vertices", "triangles", "watertight", "voxel"):
        ctx.count(key, entry[key])
    ctx.count("peak_memory_mb", round(memory.peak_mb))
    return scene.replace(metrics={**scene.metrics, ctx.node_id: entry})


def model_frames(scene: Scene, cfg: MeshConfig, ctx: StageContext) -> tuple[list[fuse.DepthFrame], dict]:
    """Depth and colour rendered from the scene's trained model at its posed views, and what they came from."""
    if not scene.radiance:
        raise StageError("mesh: the scene has no trained radiance model (and no depth maps)",
                         "train one first: `recon3d splat --data DATA --out OUT`, then `recon3d mesh OUT`")
    node = pick_model(scene, cfg.model)
    if not cfg.model and len(scene.radiance) > 1:  # a compare run: say which, and how to take another
        ctx.count("model_choice", f"{node}, the last trained of {', '.join(scene.radiance)} (--set mesh.model=NODE "
                  "for another)")
    kind = scene.radiance[node].kind
    planar = cfg.depth == "planar"
    if planar and kind != "gaussians":
        raise StageError(f"mesh: planar depth needs a Gaussian model; {node!r} is a {kind}",
                         "use --set mesh.depth=expected")
    meta = model_meta(scene.radiance[node])
    names = meta["train"] + (meta["test"] if cfg.views == "all" else [])
    source = radiance_scene(scene, ctx, names, meta.get("downscale", 1.0), meta.get("max_side", 0))
    views = load_views(source, names, background_colour(meta))
    frames = render_frames(open_model(scene.radiance[node], cfg.device), views, cfg.alpha_min, planar)
    if not any((f.depth > 0).any() for f in frames):
        raise StageError(f"mesh: model {node!r} renders no pixel with opacity >= {cfg.alpha_min} in any of its "
                         f"{len(frames)} views", "lower it (--set mesh.alpha_min=0.1) or train the model longer")
    return frames, {"name": f"model {node!r}", "node": node, "kind": kind,
                    "depth": "planar" if planar else "expected", "masked": any(v.alpha is not None for v in views)}


def render_frames(renderer, views: list[View], alpha_min: float, planar: bool) -> list[fuse.DepthFrame]:
    """Depth (0 where the render's opacity is under `alpha_min`; a Gaussian renderer's `planar_depth` when
    `planar`) and colour of the model at each view."""
    frames = []
    for view in views:
        rgb, alpha, depth = renderer.render(view)
        if planar:
            depth = renderer.planar_depth(view)
        depth = np.where(alpha[..., 0].numpy() >= alpha_min, depth[..., 0].numpy(), 0).astype(np.float32)
        frames.append(fuse.DepthFrame(depth, (rgb.numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8),
                                      view.K.double().numpy(), view.cam_from_world.double().numpy()))
    return frames


def depth_map_frames(scene: Scene) -> tuple[list[fuse.DepthFrame], dict]:
    """The depth maps other stages left in the scene (`kind: depth_maps` metrics entries: a calibrated stereo
    pair's rectified depth), and what they came from."""
    frames, nodes = [], []
    for node, entry in scene.metrics_of_kind("depth_maps").items():
        nodes.append(node)
        for f in entry["frames"]:
            depth = np.load(f["depth"])
            frames.append(fuse.DepthFrame(np.nan_to_num(depth, nan=0.0, posinf=0.0).astype(np.float32),
                                          image_io.read_rgb(f["rgb"]), np.asarray(f["K"], np.float64),
                                          np.asarray(f["cam_from_world"], np.float64)))
    if not any((f.depth > 0).any() for f in frames):
        raise StageError(f"mesh: the depth maps of {', '.join(nodes)} hold no valid depth",
                         "check the stereo pair (its disparity.png), or widen calibrate.num_disparities")
    return frames, {"name": f"the depth maps of {', '.join(nodes)}", "node": ", ".join(nodes), "kind": "depth_maps",
                    "depth": "stereo", "masked": False}


def region(scene: Scene, frames: list[fuse.DepthFrame], cfg: MeshConfig, masked: bool) -> tuple[np.ndarray, np.ndarray]:
    """(min (3,), max (3,)) of the region to mesh. Every opaque pixel counts when the views have alpha masks (they
    say what is background) or without `crop`: the depth maps' points' bounds. Else the 1st to 99th percentile per
    axis of the sparse points (of the depth maps' points when the scene has fewer than MIN_POINTS), grown by
    `crop_margin`: what photos see of the sky and the far background stays out."""
    points = scene.posed_points() if scene.points is not None else None
    if masked or not cfg.crop or points is None or len(points) < MIN_POINTS:
        xyz = np.concatenate([fuse.backproject(f, stride=4)[0] for f in frames])
        if masked or not cfg.crop:
            return xyz.min(0), xyz.max(0)
    else:
        xyz = points.xyz
    lo, hi = np.percentile(xyz, [1, 99], axis=0)
    grow = cfg.crop_margin * (hi - lo)
    return lo - grow, hi + grow


def check_memory(frames: list[fuse.DepthFrame], voxel: float, trunc: float) -> None:
    """StageError before allocating when the TSDF volume would take more than MEMORY_SHARE of the memory free,
    naming a voxel that fits (the first of voxel x 1.5^k whose blocks do)."""
    budget = MEMORY_SHARE * psutil.virtual_memory().available
    needed = fuse.tsdf_bytes(frames, voxel, trunc, limit=budget)
    if needed <= budget:
        return
    fits = voxel * 1.5
    while fuse.tsdf_bytes(frames, fits, trunc * fits / voxel, limit=budget) > budget:
        fits *= 1.5
    raise StageError(f"mesh: voxel {voxel:.4g} would need {needed / 2**30:.1f} GiB or more for the TSDF volume; "
                     f"{budget / MEMORY_SHARE / 2**30:.1f} GiB is free",
                     f"use a larger voxel: --set mesh.voxel={float(f'{fits:.2g}') * 1.1:.2g} (or a lower "
                     "mesh.resolution)")


def preview_png(mesh, frames: list[fuse.DepthFrame]) -> np.ndarray:
    """A picture (uint8): the mesh shaded grey and in its vertex colours, from the first frame's camera and (with
    three frames or more) from an orbit camera a quarter of the orbit along (the middle of the arc the cameras cover,
    where they leave a side unseen), each PREVIEW_SIDE px on its longest side."""
    cams = [(f.K, f.cam_from_world, f.depth.shape[1], f.depth.shape[0]) for f in frames[:1]]
    if len(frames) >= 3:
        views = [View("", torch.zeros(0), None, torch.tensor(f.cam_from_world, dtype=torch.float32),
                      torch.as_tensor(f.K, dtype=torch.float32), f.depth.shape[1], f.depth.shape[0]) for f in frames]
        orbit = orbit_views(views, 8)[2]
        cams.append((orbit.K.double().numpy(), orbit.cam_from_world.double().numpy(), orbit.width, orbit.height))
    rows = []
    for K, cfw, width, height in cams:
        scale = PREVIEW_SIDE / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        seen = measure.raycast_view(mesh, K * np.array([[scale], [scale], [1.0]]), cfw, w, h)
        rows.append(np.concatenate([measure.shaded(seen, cfw), measure.shaded(seen, cfw, colour=True)], 1))
    return np.concatenate(rows, 0)


STAGE = Stage(
    name="mesh",
    version=4,  # 2: images with alpha masks are not cropped; 3: expected depth by default; 4: the preview's orbit
    # camera on the photos' arc
    config=MeshConfig,
    run=run,
    reads=("images", "cameras", "poses", "points", "radiance", "metrics"),
    writes=("metrics",),
    summary="a mesh from a trained model's rendered depth (or a stereo depth map): TSDF fusion or screened Poisson "
            "(Open3D), cleaned",
)
