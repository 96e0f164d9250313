"""bundle_adjust: joint refinement of poses, points and (optionally) intrinsics.

Backends: `scipy` (the readable reference, `geometry.bundle`) and `pycolmap` (Ceres). Both are scored by
the same function afterwards (`geometry.bundle.residuals` and the configured loss), so their reports
compare directly. Observations are the track elements whose image is posed.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Literal

import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.geometry import bundle
from recon3d.geometry.rotation import rigid
from recon3d.scene import Points, Scene
from recon3d.stages.base import Stage, StageConfig, StageContext

Loss = Literal["linear", "huber", "cauchy", "soft_l1"]


class BundleAdjustConfig(StageConfig):
    backend: Literal["scipy", "pycolmap"] = Field("scipy", description="scipy (reference) or pycolmap (Ceres)")
    loss: Loss = Field("huber", description="robust loss on reprojection errors")
    loss_scale_px: float = Field(1.0, gt=0, description="where the robust loss starts to flatten, px")
    refine_intrinsics: Literal["none", "focal", "focal_principal", "all"] = Field(
        "none", description="camera parameters refined with the poses and points")
    max_iterations: int = Field(100, ge=1, description="scipy: residual evaluations; pycolmap: Ceres iterations")
    tolerance: float = Field(1e-10, gt=0, description="relative change of cost and parameters that stops it")
    num_threads: int = Field(-1, ge=-1, description="pycolmap: Ceres' threads (-1 = every core; only 1 repeats "
                             "exactly). 1000-image walk: 143 s on one, 97 s on two")


@dataclasses.dataclass(frozen=True)
class _Layout:
    names: list[str]  # posed image names, in problem order
    camera_ids: list[int]
    problem: bundle.Problem


def build_problem(scene: Scene) -> _Layout:
    """The scene's posed images, cameras, points and track observations as a `bundle.Problem`."""
    if scene.points is None or not len(scene.points):
        raise StageError("bundle adjustment needs 3D points with tracks", "run triangulate first")
    names = [im.name for im in scene.images if im.name in scene.poses]
    bad = [n for n in names if not np.isfinite(scene.poses[n]).all()]
    if bad:
        raise StageError(f"the pose of {bad[0]} is not finite (NaN or inf)",
                         "check the data it was imported from, or drop the image")
    index = {n: i for i, n in enumerate(names)}
    camera_ids = sorted({scene.image(n).camera_id for n in names})
    points = scene.points
    track_point = np.repeat(np.arange(len(points)), np.diff(points.track_offsets))
    image_names = [scene.images[j].name for j in points.track_image]
    keep = np.array([n in index for n in image_names], dtype=bool)
    obs_image = np.array([index[n] for n, k in zip(image_names, keep, strict=True) if k], dtype=np.int64)
    obs_xy = np.array([scene.features[n].keypoints[k] for n, k, ok in
                       zip(image_names, points.track_keypoint, keep, strict=True) if ok], dtype=np.float64)
    problem = bundle.Problem(
        cam_from_world=np.stack([scene.poses[n] for n in names]),
        camera_of_image=np.array([camera_ids.index(scene.image(n).camera_id) for n in names]),
        models=tuple(scene.cameras[c].model for c in camera_ids),
        params=tuple(scene.cameras[c].params for c in camera_ids),
        points=points.xyz, obs_image=obs_image, obs_point=track_point[keep], obs_xy=obs_xy.reshape(-1, 2))
    return _Layout(names, camera_ids, problem)


def _solve_pycolmap(scene: Scene, cfg: BundleAdjustConfig, layout: _Layout) -> bundle.Result:
    from recon3d.colmap_module import pycolmap
    from recon3d.io.colmap import to_reconstruction

    rec, point_ids = to_reconstruction(scene, "the bundle adjustment problem")
    opts = pycolmap.BundleAdjustmentOptions()
    opts.print_summary = False
    opts.refine_focal_length = cfg.refine_intrinsics != "none"
    opts.refine_principal_point = cfg.refine_intrinsics in ("focal_principal", "all")
    opts.refine_extra_params = cfg.refine_intrinsics == "all"
    opts.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, {
        "linear": "TRIVIAL", "huber": "HUBER", "cauchy": "CAUCHY", "soft_l1": "SOFT_L1"}[cfg.loss])
    opts.ceres.loss_function_scale = cfg.loss_scale_px
    solver = opts.ceres.solver_options
    solver.max_num_iterations = cfg.max_iterations
    solver.function_tolerance = solver.parameter_tolerance = cfg.tolerance
    solver.gradient_tolerance = cfg.tolerance
    solver.num_threads = cfg.num_threads
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in rec.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    start = time.perf_counter()
    summary = pycolmap.create_default_bundle_adjuster(opts, config, rec).solve()
    seconds = time.perf_counter() - start
    index = {im.name: i for i, im in enumerate(scene.images)}
    poses = np.stack([_matrix(rec.images[index[n] + 1].cam_from_world()) for n in layout.names])
    params = tuple(np.array(rec.cameras[c].params, dtype=np.float64) for c in layout.camera_ids)
    xyz = np.array([rec.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    p0 = layout.problem
    r0 = bundle.residuals(p0, p0.cam_from_world, p0.params, p0.points).ravel()
    r1 = bundle.residuals(p0, poses, params, xyz)
    return bundle.Result(poses, params, xyz, bundle._cost(r0, cfg.loss, cfg.loss_scale_px),
                         bundle._cost(r1.ravel(), cfg.loss, cfg.loss_scale_px), r1,
                         _ceres_iterations(summary.brief_report()), seconds, summary.brief_report())


def _ceres_iterations(report: str) -> int:
    match = re.search(r"Iterations: (\d+)", report)
    return int(match.group(1)) if match else -1


def _matrix(rigid3d) -> np.ndarray:
    return rigid(rigid3d.rotation.matrix(), rigid3d.translation)


def run(scene: Scene, cfg: BundleAdjustConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("bundle_adjust")
    if scene.points is not None:
        # a point needs two posed observations to be constrained; others leave the model (as in COLMAP)
        kept = scene.posed_points()
        if len(kept) < len(scene.points):
            ctx.count("points_dropped_short_tracks", len(scene.points) - len(kept))
            scene = scene.replace(points=kept)
    layout = build_problem(scene)
    p = layout.problem
    if cfg.backend == "pycolmap":
        result = _solve_pycolmap(scene, cfg, layout)
    else:
        try:
            result = bundle.solve(p, cfg.loss, cfg.loss_scale_px, cfg.refine_intrinsics, cfg.max_iterations,
                                  cfg.tolerance)
        except ValueError as exc:
            raise StageError(f"bundle_adjust: the model cannot be refined: {exc}",
                             "the mapper registered too few images or points; check the triangulate report "
                             "(more overlap, more texture, higher resolution)") from exc
    err = np.linalg.norm(result.residuals, axis=1)
    per_point = np.bincount(p.obs_point, weights=err, minlength=len(p.points)) / np.maximum(
        np.bincount(p.obs_point, minlength=len(p.points)), 1)
    for key, value in {"images": len(layout.names), "points": len(p.points), "observations": len(p.obs_xy),
                       "initial_cost": result.initial_cost, "final_cost": result.final_cost,
                       # over points, each its observations' mean, as COLMAP, the triangulate node and the report
                       "mean_reprojection_px": float(per_point.mean()) if len(per_point) else None,
                       "iterations": result.iterations,
                       "solver_seconds": result.seconds}.items():
        ctx.count(key, value)
    ctx.record("solver_message", result.message)
    cameras = dict(scene.cameras)
    for c, params in zip(layout.camera_ids, result.params, strict=True):
        cameras[c] = dataclasses.replace(cameras[c], params=params)
    points = Points(result.points, scene.points.rgb, per_point, scene.points.track_offsets,
                    scene.points.track_image, scene.points.track_keypoint)
    poses = {**scene.poses, **dict(zip(layout.names, result.cam_from_world, strict=True))}
    return scene.replace(poses=poses, points=points, cameras=cameras)


STAGE = Stage(
    name="bundle_adjust",
    version=3,  # 2: mean_reprojection_px over points (was over observations); 3: scipy: the scale gauge along
    # the first two cameras' baseline
    config=BundleAdjustConfig,
    run=run,
    reads=("images", "cameras", "features", "poses", "points"),
    writes=("poses", "points", "cameras"),
    summary="refine poses, points and intrinsics by robust bundle adjustment (SciPy reference or pycolmap/Ceres)",
)
