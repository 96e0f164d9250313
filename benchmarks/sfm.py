"""Structure-from-motion figures (issue 6). Prints; not a test.

    .venv/bin/python benchmarks/sfm.py [--data ../shared/data] [--only synthetic,scaling,sceaux,lego]

1. synthetic: rendered rigs with exact truth (orbit of 30 views, forward-facing 20, handheld 40; 640x480,
   2000 surface points, 0.5 px keypoint noise, 20 % wrong matches per pair) through essential ->
   triangulate (each mapper) -> bundle_adjust (SciPy); registered views, ATE after Sim(3) relative to the
   camera extent, rotation errors, mean reprojection error, seconds. Then SciPy and pycolmap BA from the
   same start on the squared loss (Ceres applies a robust loss to each 2D residual, SciPy to each
   coordinate, so only the squared loss is one objective for both): relative difference of final costs.
2. scaling: seconds per BA iteration for 50 / 200 / 1000 cameras (a strip of cameras facing a wall, ~10
   observations per point), SciPy (sparse Jacobian, LSMR) beside pycolmap (Ceres, Schur + sparse Cholesky);
   with the memory a dense Jacobian would need.
3. sceaux / lego: recon3d (ingest -> features -> match -> essential -> triangulate -> bundle_adjust, in the
   VARIANTS below: reference path, pycolmap backend, GLOMAP backend, pycolmap SIFT + GLOMAP) beside
   pycolmap's own extract_features + match_exhaustive + incremental_mapping on the same images and
   intrinsics, in one run: registered images, points, mean track length, mean reprojection error, wall
   time; on lego (100 train views) also ATE and rotation errors against the GT poses.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before pycolmap is imported: COLMAP's progress log off

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from recon3d.geometry import bundle, camera_models
from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.geometry.rotation import look_at
from recon3d.scene import Points, Scene
from recon3d.stages import bundle_adjust, essential, features, ingest, match, triangulate
from recon3d.stages.base import StageContext
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.correspondences import noisy_matches
from recon3d.synthetic.generate import make_scene

MAPPERS = ("reference", "pycolmap", "pycolmap_global")


def _stage(module, scene: Scene, cfg, workdir: Path) -> tuple[Scene, StageContext, float]:
    name = module.__name__.rsplit(".", 1)[-1]
    ctx = StageContext(node_id=name, workdir=workdir / name)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    out = module.run(scene, cfg, ctx)
    return out, ctx, time.perf_counter() - start


def _errors(scene: Scene, truth_poses: dict[str, np.ndarray]) -> dict[str, float]:
    names = [n for n in truth_poses if n in scene.poses]
    gt = np.stack([truth_poses[n] for n in names])
    e = pose_errors(np.stack([scene.poses[n] for n in names]), gt).summary()
    return {"ate_rel": e["ate_rmse"] / camera_extent(gt), "rot_max": e["rotation_error_max_deg"],
            "rot_mean": e["rotation_error_mean_deg"], "rre_median": e["relative_rotation_error_median_deg"]}


def synthetic(tmp: Path) -> None:
    print("== synthetic rigs: 640x480 PINHOLE, 0.5 px noise, 20 % wrong matches per pair")
    print(f"{'rig':16s} {'mapper':16s} {'reg':>7s} {'ATE %ext':>9s} {'rot max':>8s} {'reproj px':>9s} "
          f"{'points':>7s} {'track':>6s} {'map s':>6s} {'BA s':>6s}")
    for rig, n in (("orbit", 30), ("forward_facing", 20), ("handheld", 40)):
        truth, obs = make_scene(tmp / rig, rig=rig, n_images=n, n_points=2000, width=640, height=480,
                                noise_px=0.5, seed=1)
        scene, _ = noisy_matches(truth, obs, outlier_rate=0.2, seed=1)
        verified, ctx, secs = _stage(essential, scene, essential.EssentialConfig(), tmp / rig)
        print(f"{rig:16s} essential: {len(verified.two_view)} of {len(scene.matches)} pairs verified, {secs:.1f} s")
        mapped_by = {}
        for mapper in MAPPERS:
            mapped, tctx, t_map = _stage(triangulate, verified, triangulate.TriangulateConfig(mapper=mapper),
                                         tmp / rig / mapper)
            mapped_by[mapper] = mapped
            adjusted, bctx, t_ba = _stage(bundle_adjust, mapped, bundle_adjust.BundleAdjustConfig(), tmp / rig)
            e = _errors(adjusted, truth.poses)
            c = tctx.counts
            print(f"{rig:16s} {mapper:16s} {len(adjusted.poses):3d}/{n:<3d} {100 * e['ate_rel']:9.4f} "
                  f"{e['rot_max']:8.4f} {bctx.counts['mean_reprojection_px']:9.3f} {c['points']:7d} "
                  f"{c['mean_track_length']:6.2f} {t_map:6.1f} {t_ba:6.1f}")
        costs = {}
        for backend in ("scipy", "pycolmap"):
            cfg = bundle_adjust.BundleAdjustConfig(backend=backend, loss="linear", max_iterations=500,
                                                   tolerance=1e-12)
            _, bctx, secs = _stage(bundle_adjust, mapped_by["reference"], cfg, tmp / rig)
            costs[backend] = (bctx.counts["final_cost"], bctx.counts["iterations"], secs)
        rel = abs(costs["scipy"][0] - costs["pycolmap"][0]) / costs["pycolmap"][0]
        print(f"{rig:16s} BA from the reference map, squared loss: SciPy cost {costs['scipy'][0]:.6f} "
              f"({costs['scipy'][1]} it, {costs['scipy'][2]:.1f} s), pycolmap {costs['pycolmap'][0]:.6f} "
              f"({costs['pycolmap'][1]} it, {costs['pycolmap'][2]:.1f} s): relative difference {rel:.1e}")


def strip_problem(n_cameras: int, points_per_camera: int = 50, seed: int = 0) -> bundle.Problem:
    """Cameras every 0.3 m along x facing a wall 3-5 m away; each point seen by the cameras whose image it
    falls in (about 10). Observations get 0.5 px noise; poses and points are then perturbed."""
    rng = np.random.default_rng(seed)
    camera = make_camera("PINHOLE", 640, 480)
    xs = 0.3 * np.arange(n_cameras)
    poses = np.stack([look_at(np.array([x, 0.0, 0.0]), np.array([x, 4.0, 0.0])) for x in xs])
    n_pts = points_per_camera * n_cameras
    pts = np.column_stack([rng.uniform(-1.5, xs[-1] + 1.5, n_pts), rng.uniform(3, 5, n_pts),
                           rng.uniform(-1.5, 1.5, n_pts)])
    obs_i, obs_p, obs_xy = [], [], []
    for i, pose in enumerate(poses):
        near = np.flatnonzero(np.abs(pts[:, 0] - xs[i]) < 3.5)
        x_cam = pts[near] @ pose[:3, :3].T + pose[:3, 3]
        uv = camera_models.project("PINHOLE", camera.params, x_cam)
        ok = (x_cam[:, 2] > 0) & (uv[:, 0] > 0) & (uv[:, 0] < 640) & (uv[:, 1] > 0) & (uv[:, 1] < 480)
        obs_i.append(np.full(ok.sum(), i))
        obs_p.append(near[ok])
        obs_xy.append(uv[ok] + rng.normal(0, 0.5, (ok.sum(), 2)))
    noisy = poses.copy()
    noisy[:, :3, 3] += rng.normal(0, 0.01, (n_cameras, 3))
    return bundle.Problem(noisy, np.zeros(n_cameras, int), ("PINHOLE",), (camera.params,),
                          pts + rng.normal(0, 0.02, pts.shape), np.concatenate(obs_i), np.concatenate(obs_p),
                          np.concatenate(obs_xy))


def scaling(tmp: Path) -> None:
    print("\n== BA scaling: seconds per iteration (SciPy: per Jacobian evaluation; pycolmap: per Ceres "
          "iteration), 10 iterations each, Huber 1 px")
    print(f"{'cameras':>7s} {'points':>7s} {'obs':>8s} {'dense J GB':>10s} {'SciPy s/it':>10s} "
          f"{'pycolmap s/it':>13s}")
    for n in (50, 200, 1000):
        p = strip_problem(n)
        n_params = 6 * n + 3 * len(p.points)
        dense_gb = 2 * len(p.obs_xy) * n_params * 8 / 1e9
        res = bundle.solve(p, max_iterations=10, tolerance=1e-12)
        scipy_rate = res.seconds / max(res.iterations, 1)
        scene = _scene_of(p, tmp / f"strip{n}")
        cfg = bundle_adjust.BundleAdjustConfig(backend="pycolmap", max_iterations=10, tolerance=1e-12)
        _, ctx, _ = _stage(bundle_adjust, scene, cfg, tmp)
        ceres_rate = ctx.counts["solver_seconds"] / max(ctx.counts["iterations"], 1)
        print(f"{n:7d} {len(p.points):7d} {len(p.obs_xy):8d} {dense_gb:10.1f} {scipy_rate:10.3f} {ceres_rate:13.4f}")


def _scene_of(p: bundle.Problem, folder: Path) -> Scene:
    """A Scene holding a bundle problem (one keypoint per observation) for the pycolmap backend."""
    from recon3d.scene import Camera, Features, ImageInfo

    names = [f"{i:04d}.png" for i in range(len(p.cam_from_world))]
    order = np.lexsort((p.obs_image, p.obs_point))
    keypoint = np.zeros(len(p.obs_xy), np.int32)
    feats = {}
    for i, name in enumerate(names):
        sel = np.flatnonzero(p.obs_image == i)
        keypoint[sel] = np.arange(len(sel))
        feats[name] = Features(p.obs_xy[sel].astype(np.float32))
    counts = np.bincount(p.obs_point, minlength=len(p.points))
    points = Points(p.points, np.zeros((len(p.points), 3), np.uint8), np.zeros(len(p.points)),
                    np.r_[0, np.cumsum(counts)].astype(np.int64), p.obs_image[order].astype(np.int32),
                    keypoint[order])
    cam = Camera("PINHOLE", 640, 480, p.params[0])
    images = tuple(ImageInfo(n, str(folder / n), 1, 640, 480) for n in names)
    return Scene(images=images, cameras={1: cam}, features=feats, points=points,
                 poses={n: p.cam_from_world[i] for i, n in enumerate(names)})


VARIANTS = {  # label: (features backend, mapper, bundle_adjust backend)
    "reference path": ("opencv_rootsift", "reference", "scipy"),
    "pycolmap backend": ("opencv_rootsift", "pycolmap", "pycolmap"),
    "global backend": ("opencv_rootsift", "pycolmap_global", "pycolmap"),
    "pycolmap SIFT + global": ("pycolmap_sift", "pycolmap_global", "pycolmap"),
}


def recon3d_sfm(scene: Scene, variant: tuple[str, str, str], tmp: Path) -> tuple[Scene, dict, dict[str, float]]:
    """features -> match -> essential -> triangulate -> bundle_adjust with the variant's backends; final
    scene, counts, seconds per stage."""
    feature_backend, mapper, ba_backend = variant
    seconds, counts = {}, {}
    steps = [(features, features.FeaturesConfig(backend=feature_backend)), (match, match.MatchConfig()),
             (essential, essential.EssentialConfig()), (triangulate, triangulate.TriangulateConfig(mapper=mapper)),
             (bundle_adjust, bundle_adjust.BundleAdjustConfig(backend=ba_backend))]
    for module, cfg in steps:
        scene, ctx, secs = _stage(module, scene, cfg, tmp)
        seconds[module.__name__.rsplit(".", 1)[-1]] = secs
        counts.update(ctx.counts)
    return scene, counts, seconds


def pycolmap_sfm(image_dir: Path, camera: tuple[str, str], tmp: Path) -> tuple[object, float]:
    """pycolmap extract_features + match_exhaustive + incremental_mapping (one camera, given intrinsics);
    the largest model and the wall time."""
    import pycolmap

    tmp.mkdir(parents=True, exist_ok=True)
    database = tmp / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model, reader.camera_params = camera
    start = time.perf_counter()
    pycolmap.extract_features(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
    (tmp / "sparse").mkdir(exist_ok=True)
    models = pycolmap.incremental_mapping(database, image_dir, tmp / "sparse")
    seconds = time.perf_counter() - start
    return max(models.values(), key=lambda rec: rec.num_reg_images()), seconds


def _colmap_row(rec) -> tuple[dict[str, np.ndarray], dict]:
    poses = {im.name: np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]]) for im in rec.images.values()
             if im.has_pose}
    return poses, {"registered": rec.num_reg_images(), "points": rec.num_points3D(),
                   "mean_track_length": rec.compute_mean_track_length(),
                   "mean_reprojection_px": rec.compute_mean_reprojection_error()}


def real(name: str, scene: Scene, image_dir: Path, camera: tuple[str, str], tmp: Path,
         truth: dict[str, np.ndarray] | None) -> None:
    print(f"\n== {name}: {len(scene.images)} images; recon3d beside pycolmap (extract + exhaustive match + "
          f"incremental mapping), same intrinsics {camera}")
    print(f"{'pipeline':28s} {'reg':>7s} {'points':>7s} {'track':>6s} {'reproj':>7s} {'seconds':>8s}"
          + (f" {'ATE %ext':>9s} {'rot max':>8s} {'rot mean':>8s} {'RRE med':>8s}" if truth else ""))
    rec, their_seconds = pycolmap_sfm(image_dir, camera, tmp / "pycolmap")
    poses, c = _colmap_row(rec)
    rows = [("pycolmap (its own pipeline)", poses, c, their_seconds)]
    prefix = scene.images[0].name[: len(scene.images[0].name) - len(Path(scene.images[0].name).name)]
    for label, variant in VARIANTS.items():
        out, counts, seconds = recon3d_sfm(scene, variant, tmp / label.replace(" ", "_"))
        c = {"registered": len(out.poses), "points": len(out.points),
             "mean_track_length": float(np.diff(out.points.track_offsets).mean()),
             "mean_reprojection_px": counts["mean_reprojection_px"]}
        rows.append((f"recon3d {label}", {n[len(prefix):]: p for n, p in out.poses.items()}, c,
                     sum(seconds.values())))
        print(f"   recon3d {label} {variant} seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    for label, poses, c, secs in rows:
        line = (f"{label:28s} {c['registered']:3d}/{len(scene.images):<3d} {c['points']:7d} "
                f"{c['mean_track_length']:6.2f} {c['mean_reprojection_px']:7.3f} {secs:8.1f}")
        if truth:
            e = _errors(Scene(poses=poses), truth)
            line += f" {100 * e['ate_rel']:9.4f} {e['rot_max']:8.3f} {e['rot_mean']:8.3f} {e['rre_median']:8.3f}"
        print(line)


def sceaux(data: Path, tmp: Path) -> None:
    root = data / "sceaux_castle"
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(root)))
    real("sceaux_castle", scene, root / "images", _colmap_camera(scene, scene.images[0]), tmp / "sceaux", None)


def lego(data: Path, tmp: Path) -> None:
    root = data / "SYNTHETIC_nerf_lego_200px"
    full = ingest.run(Scene(), ingest.IngestConfig(path=str(root)))
    train = tuple(im for im in full.images if im.split == "train")
    truth = {Path(im.name).name: full.poses[im.name] for im in train}
    scene = full.replace(images=train, poses={}, points=None)
    real("lego 200px train", scene, root / "train", _colmap_camera(full, train[0]), tmp / "lego", truth)


def _colmap_camera(scene: Scene, image) -> tuple[str, str]:
    cam = scene.cameras[image.camera_id]
    return cam.model, ",".join(f"{v!r}" for v in cam.params.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--only", default="synthetic,scaling,sceaux,lego")
    args = parser.parse_args()
    parts = args.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "synthetic" in parts:
            synthetic(tmp)
        if "scaling" in parts:
            scaling(tmp)
        for part, fn in (("sceaux", sceaux), ("lego", lego)):
            if part in parts:
                if args.data.is_dir():
                    fn(args.data, tmp)
                else:
                    print(f"\n(skipping {part}: {args.data} not found)")


if __name__ == "__main__":
    main()
