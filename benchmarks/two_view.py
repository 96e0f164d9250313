"""Two-view figures (issue 5). Prints; not a test.

    .venv/bin/python benchmarks/two_view.py [--data ../shared/data] [--seeds 20] [--skip sceaux,lego]

1. Synthetic pairs (recon3d.synthetic.two_view): 300 correspondences, 0.5 px noise, 30 % outliers, an OPENCV
   camera with distortion, views 30 degrees apart; per backend over seeds: rotation and translation-direction
   error, share of true inliers kept, share of outliers kept (median and worst).
2. sceaux_castle (11 photos, K.txt): recon3d (ingest -> features -> match -> essential) side by side with
   pycolmap's own extract_features / match_exhaustive on the same images and the same K (SIMPLE_RADIAL,
   k1 = 0 as K.txt says), one run: per adjacent pair inliers and the relative rotation of each, and the wall
   times. As a reference for both, pycolmap's incremental mapper on its own database (it refines f and k1):
   the rotation error of each two-view estimate against the mapped poses.
3. SYNTHETIC_nerf_lego_200px/train (100 RGBA views, GT poses): recon3d's relative rotations against GT for
   every verified pair.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from recon3d.geometry import camera_models, epipolar
from recon3d.geometry.rotation import invert_rigid, rotation_angle_deg
from recon3d.scene import Scene
from recon3d.stages import essential, features, ingest, match
from recon3d.stages.base import StageContext
from recon3d.synthetic.two_view import two_view_case


def synthetic(seeds: int) -> None:
    print(f"== synthetic pairs: 300 points, 0.5 px noise, 30 % outliers, OPENCV camera, {seeds} seeds")
    print("   floor = the maximum-likelihood pose (Sampson, started at the truth) on the true inliers: what the data"
          " allow;\n   outliers kept = random points the estimate keeps; 'truth-rejected' = of those, the ones the"
          " true pose also rejects (2 px)")
    cases = [two_view_case(seed) for seed in range(seeds)]
    floor = []
    for case in cases:
        n1, n2 = (camera_models.unproject(case.camera.model, case.camera.params, x) for x in (case.x1, case.x2))
        good = ~case.is_outlier
        ml = epipolar.refine_relative_pose(case.cam2_from_cam1, n1[good], n2[good], scale=case.camera.params[0])
        floor.append(rotation_angle_deg(ml[:3, :3], case.cam2_from_cam1[:3, :3]))
    print(f"{'backend':10s} {'rot deg med/max':>17s} {'trans deg med/max':>19s} {'inliers kept min':>17s} "
          f"{'outliers kept mean/max':>23s} {'truth-rejected max':>19s} {'ms/pair':>8s}")
    print(f"{'floor':10s} {np.median(floor):8.4f}/{np.max(floor):.4f}")
    for backend in essential.BACKENDS:
        rot, trans, recall, kept, wrong, secs = [], [], [], [], [], []
        for case in cases:
            task = essential.PairTask(("a", "b"), case.x1, case.x2, case.camera, case.camera,
                                      essential.EssentialConfig(backend=backend))
            start = time.perf_counter()
            g = essential.verify_pair(task).geometry
            secs.append(time.perf_counter() - start)
            truth = case.cam2_from_cam1
            rot.append(rotation_angle_deg(g.cam2_from_cam1[:3, :3], truth[:3, :3]))
            trans.append(epipolar.translation_angle_deg(g.cam2_from_cam1[:3, 3], truth[:3, 3]))
            recall.append((g.inliers & ~case.is_outlier).sum() / (~case.is_outlier).sum())
            kept.append((g.inliers & case.is_outlier).sum() / case.is_outlier.sum())
            n1, n2 = (camera_models.unproject(case.camera.model, case.camera.params, x) for x in (case.x1, case.x2))
            consistent = case.camera.params[0] * epipolar.sampson_error(epipolar.essential_from_pose(truth), n1, n2) < 2
            wrong.append((g.inliers & case.is_outlier & ~consistent).sum() / case.is_outlier.sum())
        print(f"{backend:10s} {np.median(rot):8.4f}/{np.max(rot):.4f} {np.median(trans):9.4f}/{np.max(trans):.4f} "
              f"{100 * np.min(recall):16.1f}% {100 * np.mean(kept):13.2f}%/{100 * np.max(kept):.2f}% "
              f"{100 * np.max(wrong):18.2f}% {1000 * np.median(secs):8.1f}")


def recon3d_two_view(data: Path, workdir: Path, features_backend: str = "opencv_rootsift",
                     ) -> tuple[Scene, dict[str, float]]:
    """ingest -> features -> match -> essential on `data` with the stages' defaults; seconds per stage."""
    scene, seconds = Scene(), {}
    steps = [(ingest, ingest.IngestConfig(path=str(data))),
             (features, features.FeaturesConfig(backend=features_backend)),
             (match, match.MatchConfig()), (essential, essential.EssentialConfig())]
    for module, cfg in steps:
        name = module.__name__.rsplit(".", 1)[-1]
        ctx = StageContext(node_id=name, workdir=workdir / name)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        scene = module.run(scene, cfg, ctx)
        seconds[name] = time.perf_counter() - start
    return scene, seconds


def pycolmap_two_view(image_dir: Path, workdir: Path, camera_params: str) -> tuple[dict, dict, float]:
    """pycolmap's extract_features + match_exhaustive (SIMPLE_RADIAL with `camera_params`, one camera).

    Returns {(name1, name2): (num inliers, cam2_from_cam1 (4, 4) or None)}, the database path and seconds."""
    import pycolmap

    database = workdir / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_RADIAL"
    reader.camera_params = camera_params
    start = time.perf_counter()
    pycolmap.extract_features(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              device=pycolmap.Device.cpu)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.compute_relative_pose = True  # off by default: the mapper computes it later
    pycolmap.match_exhaustive(database, verification_options=verification, device=pycolmap.Device.cpu)
    seconds = time.perf_counter() - start
    out = {}
    with pycolmap.Database.open(database) as db:
        names = {im.image_id: im.name for im in db.read_all_images()}
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, g in zip(pair_ids, geometries, strict=True):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            pose = None
            if g.cam2_from_cam1 is not None and g.config in (pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
                            pycolmap.TwoViewGeometryConfiguration.PLANAR_OR_PANORAMIC,
                            pycolmap.TwoViewGeometryConfiguration.PLANAR):
                pose = np.eye(4)
                pose[:3, :] = g.cam2_from_cam1.matrix()
            key, flip = (names[a], names[b]), False
            if key[0] > key[1]:
                key, flip = (key[1], key[0]), True
            if pose is not None and flip:
                pose = invert_rigid(pose)
            out[key] = (len(g.inlier_matches), pose)
    return out, database, seconds


def mapped_poses(database: Path, image_dir: Path, workdir: Path) -> dict[str, np.ndarray]:
    """cam_from_world (4, 4) of the largest model of pycolmap's incremental mapper on `database`."""
    import pycolmap

    models = pycolmap.incremental_mapping(database, image_dir, workdir / "sparse")
    best = max(models.values(), key=lambda rec: rec.num_reg_images())
    cams = best.cameras
    print("  reference (pycolmap incremental mapping): "
          + ", ".join(f"camera {cid}: {cam.params_to_string()}" for cid, cam in cams.items()))
    return {im.name: np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]]) for im in best.images.values()
            if im.has_pose}


def relative_rotation(cam_from_world: dict[str, np.ndarray], a: str, b: str) -> np.ndarray:
    return cam_from_world[b][:3, :3] @ cam_from_world[a][:3, :3].T


def sceaux(data: Path) -> None:
    root = data / "sceaux_castle"
    print(f"\n== {root}: recon3d vs pycolmap (extract + exhaustive match + two-view geometry), same K")
    k = np.loadtxt(root / "K.txt")
    backends = ("opencv_rootsift", "pycolmap_sift")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        theirs, database, their_seconds = pycolmap_two_view(root / "images", tmp, f"{k[0, 0]},{k[0, 2]},{k[1, 2]},0")
        ours = {b: recon3d_two_view(root, tmp / b, features_backend=b) for b in backends}
        reference = mapped_poses(database, root / "images", tmp)
    names = sorted(im.name for im in ours[backends[0]][0].images)
    print("columns per recon3d features backend (A = opencv_rootsift, the default; B = pycolmap_sift): inliers, "
          "rotation difference to pycolmap's (deg), rotation error against the mapped reference (deg)")
    print(f"{'pair':26s} {'pycolmap':>8s} {'err':>6s} | {'A inl':>6s} {'dR':>6s} {'err':>6s} | "
          f"{'B inl':>6s} {'dR':>6s} {'err':>6s}")
    at_least, agree = dict.fromkeys(backends, 0), dict.fromkeys(backends, 0)
    pairs = list(zip(names[:-1], names[1:], strict=True))
    for a, b in pairs:
        n_theirs, pose_theirs = theirs.get((a, b), (0, None))
        ref = relative_rotation(reference, a, b) if a in reference and b in reference else None
        err = "-" if pose_theirs is None or ref is None else f"{rotation_angle_deg(pose_theirs[:3, :3], ref):.3f}"
        row = f"{a + ' | ' + b:26s} {n_theirs:8d} {err:>6s}"
        for backend in backends:
            g = ours[backend][0].two_view.get((a, b))
            n_ours = 0 if g is None else int(g.inliers.sum())
            at_least[backend] += n_ours >= n_theirs
            cells = ["-", "-"]
            if g is not None and pose_theirs is not None:
                d = rotation_angle_deg(g.cam2_from_cam1[:3, :3], pose_theirs[:3, :3])
                agree[backend] += d <= 1.0
                cells[0] = f"{d:.3f}"
            if g is not None and ref is not None:
                cells[1] = f"{rotation_angle_deg(g.cam2_from_cam1[:3, :3], ref):.3f}"
            row += f" | {n_ours:6d} {cells[0]:>6s} {cells[1]:>6s}"
        print(row)
    print(f"pycolmap seconds (extract+match+verify): {their_seconds:.2f}")
    for backend in backends:
        seconds = ours[backend][1]
        total = sum(seconds.values()) - seconds["ingest"]
        print(f"recon3d {backend}: inliers >= pycolmap's on {at_least[backend]}/{len(pairs)} adjacent pairs, "
              f"rotations within 1 deg on {agree[backend]}/{len(pairs)}; seconds "
              + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
              + f"; total {total:.2f} = {total / their_seconds:.2f}x pycolmap")


def lego(data: Path) -> None:
    root = data / "SYNTHETIC_nerf_lego_200px"
    print(f"\n== {root}/train: recon3d relative rotations against the GT poses")
    with tempfile.TemporaryDirectory() as tmp:
        scene, seconds = recon3d_two_view(root, Path(tmp))
    train = [im.name for im in scene.images if im.name.startswith("train/")]
    errors, inliers, kinds = [], [], {}
    for (a, b), g in scene.two_view.items():
        if a not in train or b not in train or g.cam2_from_cam1 is None:
            continue
        kinds[g.kind] = kinds.get(g.kind, 0) + 1
        errors.append(rotation_angle_deg(g.cam2_from_cam1[:3, :3], relative_rotation(scene.poses, a, b)))
        inliers.append(int(g.inliers.sum()))
    e, n = np.array(errors), np.array(inliers)
    print(f"images {len(train)} (of {len(scene.images)} ingested), verified pairs with a pose {len(e)}, kinds {kinds}")
    for lo, hi in ((0, 10**9), (15, 30), (30, 60), (60, 120), (120, 10**9)):
        sel = (n >= lo) & (n < hi)
        if sel.any():
            label = "all pairs" if lo == 0 else f"{lo}-{hi if hi < 10**9 else ''} inliers"
            print(f"  {label:16s} {sel.sum():5d} pairs: rotation error deg median {np.median(e[sel]):.3f}, "
                  f"p90 {np.percentile(e[sel], 90):.3f}, max {e[sel].max():.3f}; < 1 deg {np.mean(e[sel] < 1):.2f}, "
                  f"< 5 deg {np.mean(e[sel] < 5):.2f}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: synthetic, sceaux, lego")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if "synthetic" not in skip:
        synthetic(args.seeds)
    for part, run in (("sceaux", sceaux), ("lego", lego)):
        if part not in skip:
            if args.data.is_dir():
                run(args.data)
            else:
                print(f"\n(skipping {part}: {args.data} not found)")


if __name__ == "__main__":
    main()
