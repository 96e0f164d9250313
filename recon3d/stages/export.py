"""export: the reconstruction as files other tools open, published into the run's output folder.

- `sparse/0/{cameras,images,points3D}.bin`: a COLMAP binary model (through pycolmap), which COLMAP's GUI
  (File > Import model, with the images folder) and nerfstudio's `colmap` data parser read;
- `points.ply`: the sparse points with colour, mean reprojection error and track length (plyfile);
- `transforms.json`: nerfstudio's format (OpenGL camera-to-world, absolute image paths, `ply_file_path`
  naming points.ply), for nerfstudio / gsplat trainers;
- `database.db`: a COLMAP database (cameras, images, keypoints, SIFT descriptors, and the matches and
  two-view geometries of the verified pairs), what COLMAP's mappers, its GUI and hloc read.
The files are written in the node's folder and copied to OUT by the runner, also when the node is cached.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.io import colmap, nerfstudio, ply
from recon3d.scene import Scene
from recon3d.sfm import colmap_mapper
from recon3d.stages.base import Stage, StageConfig, StageContext


class ExportConfig(StageConfig):
    colmap: str = Field("sparse/0", description="folder of the COLMAP binary model under OUT ('' = none)")
    ply: str = Field("points.ply", description="sparse point cloud under OUT ('' = none)")
    transforms: str = Field("transforms.json", description="nerfstudio transforms under OUT ('' = none)")
    database: str = Field("database.db", description="COLMAP database of the features and matches under OUT "
                          "('' = none)")


def run(scene: Scene, cfg: ExportConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("export")
    original = scene
    if not scene.poses:
        raise StageError("export: the scene has no posed images", "run structure from motion (pipelines/sfm.yaml) "
                         "or ingest posed data first")
    if scene.points is not None:
        points = scene.posed_points()  # observations of unposed images leave the tracks
        ctx.count("points_dropped", len(scene.points) - len(points))
        scene = scene.replace(points=points)
    out = ctx.published
    written = []
    if cfg.colmap:
        colmap.write_model(scene, out / cfg.colmap, binary=True)
        written.append(cfg.colmap)
    if cfg.ply and scene.points is not None and len(scene.points):
        points = scene.points
        scalars = {"error": points.error, "track_length": np.diff(points.track_offsets)}
        if points.classes is not None:  # lift_labels ran: each point's class id (-1 background, -2 undecided)
            scalars["class"] = points.classes
        ply.write_points(out / cfg.ply, points.xyz, points.rgb, scalars)
        written.append(cfg.ply)
    elif cfg.ply:
        ctx.drop(cfg.ply, "the scene has no 3D points")
    if cfg.transforms:
        path = out / cfg.transforms
        nerfstudio.write_transforms(scene, path, absolute_paths=True,
                                    ply_path=out / cfg.ply if cfg.ply in written else None)
        written.append(cfg.transforms)
    if cfg.database and scene.two_view:
        colmap_mapper.write_database(scene, out / cfg.database, descriptors=True)
        written.append(cfg.database)
    for im in scene.images:
        if im.name not in scene.poses:
            ctx.drop(im.name, "not posed: left out of the exported model")
    ctx.count("images", len(scene.poses))
    ctx.count("points", 0 if scene.points is None else len(scene.points))
    ctx.record("files", written)
    return original


STAGE = Stage(
    name="export",
    version=1,
    config=ExportConfig,
    run=run,
    reads=("images", "cameras", "features", "poses", "points"),
    writes=(),
    summary="write OUT/sparse/0 (COLMAP binary), OUT/points.ply, OUT/transforms.json and OUT/database.db",
)
