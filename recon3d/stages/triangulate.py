"""triangulate: from verified pairs to registered cameras and a sparse point cloud (incremental mapping).

Mappers: `reference` (recon3d.sfm.incremental: initial pair from the two-view geometries, PnP + RANSAC
registration, multi-view DLT with reprojection / cheirality / angle checks, global bundle adjustment as the
model grows), `pycolmap` (COLMAP's incremental mapper on recon3d's features and matches) and
`pycolmap_global` (GLOMAP, merged into pycolmap 4.2); `known` triangulates the tracks from the poses the data
carries and holds them (COLMAP's point_triangulator: sparse points for posed photos that come without any,
e.g. a nerfstudio folder, so the Gaussians start from the surfaces). Images split into connected components
of the match graph (verified pairs): the largest is reconstructed, the others are reported as dropped with
their size, whichever the mapper. The default is GLOMAP: in benchmarks/sfm.py it registers the most views
(lego: 98-100 of 100, against 89 for COLMAP's incremental mapper on the same matches and 84 for pycolmap's
own pipeline) at equal accuracy on synthetic rigs; the reference mapper is the readable test oracle.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.scene import Points, Scene
from recon3d.sfm import colmap_mapper
from recon3d.sfm.incremental import Mapper, MapperOptions
from recon3d.sfm.tracks import build_tracks, verified_matches
from recon3d.stages.base import Stage, StageConfig, StageContext


class TriangulateConfig(StageConfig):
    mapper: Literal["reference", "pycolmap", "pycolmap_global", "known"] = Field(
        "pycolmap_global", description="pycolmap_global (GLOMAP: registers the most views in "
        "benchmarks/sfm.py), pycolmap (COLMAP incremental), reference (recon3d's readable incremental mapper) or "
        "known (points from the data's own poses, held: COLMAP's point_triangulator)")
    min_init_points: int = Field(50, ge=8, description="reference: points the initial pair must triangulate")
    min_init_angle_deg: float = Field(3.0, ge=0, description="reference: median triangulation angle of the "
                                      "initial pair")
    min_angle_deg: float = Field(1.5, ge=0, description="reference: a new point needs rays this far apart")
    max_reprojection_px: float = Field(0.0, ge=0, description="reference: observations above this are dropped; "
                                       "0 = auto: 0.4 % of the largest image side, within 2..4 px (4 px let wrong "
                                       "poses in on 200 px lego views, 2 px cut sceaux's uncalibrated k1 short)")
    min_pnp_inliers: int = Field(10, ge=6, description="reference: PnP inliers an image needs to register "
                                 "(and 25 % of the points it sees)")
    refine_intrinsics: Literal["auto", "none", "focal", "focal_extra"] = Field(
        "auto", description="pycolmap mappers: camera parameters refined while mapping; auto = none for data "
        "that carries calibrated cameras (nerfstudio, Blender, COLMAP, recon3d synthetic), else focal_extra "
        "(COLMAP's default)")
    num_threads: int = Field(-1, ge=-1, description="pycolmap mappers: threads (-1 = every core, as COLMAP; only 1 "
                             "repeats exactly). 1000-image walk: GLOMAP 282 s on one, 210 s on two")
    tracks_per_view: int = Field(300, ge=0, description="pycolmap_global: GLOMAP positions the cameras from the "
                                 "longest tracks until each image has this many (0 = every track); every track "
                                 "is triangulated and refined afterwards. sceaux_castle: GLOMAP 9.6 s -> 2.1 s")
    ba_rounds: int = Field(3, ge=1, description="pycolmap_global: GLOMAP's rounds of bundle adjustment (each "
                           "drops the observations that reproject worst) before it retriangulates every track and "
                           "refines again (its ba_num_iterations, 3). 1 round: lego's mapping 9 % faster, its ATE "
                           "0.37 against 0.35 % of the extent; the 150-image walk 34 s against 39 s, 0.066 % both")
    seed: int = Field(0, description="random seed")


def run(scene: Scene, cfg: TriangulateConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("triangulate")
    if not scene.two_view:
        raise StageError("triangulate: the scene has no verified pairs", "run features, match and essential first")
    start = time.perf_counter()
    if cfg.mapper == "known":
        points = _known_poses(scene, cfg, ctx)
        ctx.count("seconds", round(time.perf_counter() - start, 3))
        return scene.replace(points=points)
    components = image_components(scene)
    if not components or len(components[0]) < 2:
        raise StageError(f"triangulate: no two images share a verified pair ({len(scene.two_view)} pairs, none "
                         "with inliers)",
                         "check that the images overlap, or verify looser: --set essential.min_inliers=8")
    ctx.count("images_per_component", [len(c) for c in components])  # largest first: 12, 3
    # a video's keyframes that fall apart were taken too far apart for the camera's speed
    hint = ("; keyframes too far apart for the camera's speed? take more: --set ingest.video_every=2"
            if scene.source is not None and scene.source.format == "video" else
            ": no verified pair joins the two (photos of another place, or too little overlap: add photos between "
            "them)")
    for other in components[1:]:
        for i in other:
            ctx.drop(scene.images[i].name, f"in a smaller connected component ({len(other)} images) than the "
                                           f"reconstructed one ({len(components[0])}){hint}")
    main = {scene.images[i].name for i in components[0]}
    pairs = [p for p in scene.two_view if p[0] in main and p[1] in main]
    scene_main = scene.replace(two_view={p: scene.two_view[p] for p in pairs},
                               matches={p: scene.matches[p] for p in pairs if p in scene.matches})
    mapper = cfg.mapper
    if len(components[0]) == 2 and mapper != "reference":
        # COLMAP's mappers keep models of three images or more (GLOMAP's tracks need three views): a pair of
        # photos is mapped by recon3d's own two-view initialisation instead
        mapper = "reference"
        ctx.count("mapper_note", "two images: recon3d's reference mapper (COLMAP's mappers need three)")
    if mapper == "reference":
        poses, points = _reference(scene_main, cfg, ctx, components[0])
        cameras = scene.cameras
    else:
        refine = refined_intrinsics(scene, cfg.refine_intrinsics)
        ctx.count("refine_intrinsics", refine)
        settings = colmap_mapper.MapperSettings(refine_focal=refine != "none", refine_extra=refine == "focal_extra",
                                                num_threads=cfg.num_threads, seed=cfg.seed,
                                                tracks_per_view=cfg.tracks_per_view, ba_rounds=cfg.ba_rounds)
        out = colmap_mapper.map_scene(scene_main, ctx.workdir / "colmap",
                                      "global" if cfg.mapper == "pycolmap_global" else "incremental", settings)
        poses, points, cameras = out.poses, out.points, {**scene.cameras, **out.cameras}
        for name in out.unregistered:
            if name in main:
                ctx.drop(name, "not registered by COLMAP's mapper")
        ctx.count("models", out.models)
    lengths = np.diff(points.track_offsets)
    ctx.count("mapper", mapper)
    ctx.count("images", len(scene.images))
    ctx.count("registered", len(poses))
    ctx.count("points", len(points))
    ctx.count("mean_track_length", float(lengths.mean()) if len(lengths) else 0.0)
    ctx.count("mean_reprojection_px", float(points.error.mean()) if len(points) else None)
    ctx.count("seconds", round(time.perf_counter() - start, 3))
    return scene.replace(poses=poses, points=points, cameras=cameras)


CALIBRATED_SOURCES = ("nerfstudio", "blender", "colmap", "synthetic")  # sources whose cameras are calibrated


def refined_intrinsics(scene: Scene, choice: str) -> str:
    """Resolve `auto`: keep calibrated cameras (nerfstudio / Blender / COLMAP folder, synthetic truth) as they are,
    refine focal and distortion of cameras ingest guessed or took from a bare K."""
    if choice != "auto":
        return choice
    calibrated = scene.source is not None and scene.source.format in CALIBRATED_SOURCES
    return "none" if calibrated else "focal_extra"


def image_components(scene: Scene) -> list[np.ndarray]:
    """Image indices of each connected component of the graph of verified pairs (any kind: an F-only pair
    still carries tracks), largest first; images in no verified pair are left out."""
    index = {im.name: i for i, im in enumerate(scene.images)}
    edges = np.array([(index[a], index[b]) for (a, b), g in scene.two_view.items()
                      if a in index and b in index and g.inliers.any()], dtype=np.int64).reshape(-1, 2)
    parent = list(range(len(scene.images)))  # union-find over images (scipy's csgraph cost 0.25 s to import)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges.tolist():
        parent[root(a)] = root(b)
    comps: dict[int, list[int]] = {}
    for i in np.unique(edges).tolist():
        comps.setdefault(root(i), []).append(i)
    return sorted((np.array(c, dtype=np.int64) for c in comps.values()), key=len, reverse=True)


def _mapper(scene: Scene, cfg: TriangulateConfig, ctx: StageContext) -> Mapper:
    """The reference mapper over the tracks of the verified matches."""
    n_keypoints = [len(scene.features[im.name].keypoints) if im.name in scene.features else 0
                   for im in scene.images]
    matches = verified_matches(scene)
    tracks, inconsistent = build_tracks(n_keypoints, matches)
    ctx.count("tracks", len(tracks))
    ctx.count("tracks_inconsistent_dropped", inconsistent)
    max_px = cfg.max_reprojection_px or float(np.clip(0.004 * max(max(im.width, im.height) for im in scene.images),
                                                      2.0, 4.0))
    ctx.count("max_reprojection_px", max_px)
    options = MapperOptions(min_init_points=cfg.min_init_points, min_init_angle_deg=cfg.min_init_angle_deg,
                            min_angle_deg=cfg.min_angle_deg, max_reprojection_px=max_px,
                            min_pnp_inliers=cfg.min_pnp_inliers)
    return Mapper(scene, tracks, options)


def _another_mapper(scene: Scene, cfg: TriangulateConfig, component: np.ndarray) -> str:
    """What to try when the reference mapper cannot start: COLMAP's mapper where the user chose this one; where it
    maps a pair because COLMAP's mappers need three images, more images (a video's: more keyframes)."""
    if cfg.mapper == "reference" and len(component) > 2:
        return "map with --set triangulate.mapper=pycolmap_global"
    if scene.source is not None and scene.source.format == "video":
        return ("only two keyframes joined: take more from the video, fewer frames to each: --set "
                "ingest.video_every=N (lower; 1 takes every frame)")
    return "only two photos joined: add photos that overlap them (COLMAP's mappers need three)"


def _known_poses(scene: Scene, cfg: TriangulateConfig, ctx: StageContext) -> Points:
    """Points triangulated from the scene's own poses, which stay as they are."""
    index = {im.name: i for i, im in enumerate(scene.images)}
    poses = {index[name]: pose for name, pose in scene.poses.items() if name in index}
    if len(poses) < 2:
        raise StageError(f"triangulate: mapper known needs posed images and the scene has {len(poses)}",
                         "ingest posed data (nerfstudio, Blender, COLMAP), or use --set triangulate.mapper="
                         "pycolmap_global to estimate the poses")
    mapper = _mapper(scene, cfg, ctx)
    mapper.triangulate_from(poses)
    points = mapper.points()
    lengths = np.diff(points.track_offsets)
    ctx.count("mapper", cfg.mapper)
    ctx.count("posed_images", len(poses))
    ctx.count("points", len(points))
    ctx.count("mean_track_length", float(lengths.mean()) if len(lengths) else 0.0)
    ctx.count("mean_reprojection_px", float(points.error.mean()) if len(points) else None)
    return points


def _reference(scene: Scene, cfg: TriangulateConfig, ctx: StageContext, component: np.ndarray) -> tuple[dict, Points]:
    mapper = _mapper(scene, cfg, ctx)
    options = mapper.opt
    index = {im.name: i for i, im in enumerate(scene.images)}
    candidates, uncalibrated = [], []
    for (a, b), g in sorted(scene.two_view.items(), key=lambda kv: -int(kv[1].inliers.sum())):
        if g.kind in ("calibrated", "planar") and g.cam2_from_cam1 is not None:
            # a homography pair's decomposed pose is too coarse to start from: the mapper re-estimates E
            candidates.append((index[a], index[b], g.cam2_from_cam1 if g.kind == "calibrated" else None))
        elif g.kind == "uncalibrated":  # F only (no focal prior): E on its tracks with the cameras' intrinsics,
            uncalibrated.append((index[a], index[b], None))  # as COLMAP's mapper re-estimates its initial pair
    candidates += uncalibrated
    other_mapper = _another_mapper(scene, cfg, component)
    if not candidates:
        kinds = sorted({g.kind for g in scene.two_view.values()})
        raise StageError(f"triangulate: the reference mapper starts from a pair with a baseline, and the "
                         f"{len(scene.two_view)} verified pairs are {', '.join(kinds)} only", other_mapper)
    if not mapper.initialize(candidates):
        raise StageError(f"triangulate: no initial pair triangulates {cfg.min_init_points} points at a median "
                         f"angle of {cfg.min_init_angle_deg} deg ({len(candidates)} candidate pairs)",
                         f"{other_mapper}; or --set triangulate.min_init_points={max(10, cfg.min_init_points // 2)} "
                         f"--set triangulate.min_init_angle_deg={cfg.min_init_angle_deg / 2:g}")
    mapper.bundle_adjust(options.ba_iterations)
    mapper.run(component)
    mapper.bundle_adjust(options.final_ba_iterations)
    for i in component:
        if int(i) not in mapper.state.registered:
            ctx.drop(scene.images[i].name, mapper.state.failures.get(int(i), "not registered"))
    poses = {scene.images[i].name: pose for i, pose in sorted(mapper.state.registered.items())}
    return poses, mapper.points()


STAGE = Stage(
    name="triangulate",
    version=3,  # 2: images_per_component (was components); `known` keeps the other configs' keys; 3: the
    # reference mapper's bundle adjustment holds the scale along the first two cameras' baseline
    config=TriangulateConfig,
    run=run,
    reads=("images", "cameras", "features", "matches", "two_view"),
    writes=("poses", "points", "cameras"),
    summary="incremental mapping: initial pair, PnP registration, multi-view triangulation (recon3d or pycolmap)",
)
