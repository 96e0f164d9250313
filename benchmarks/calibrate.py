"""Calibration figures (issue 4). Prints; not a test.

    .venv/bin/python benchmarks/calibrate.py [--stereo-data ../shared/data/opencv_stereo_chessboard]

1. Synthetic boards at known poses (recon3d.synthetic): exact corners + 0.3 px Gaussian noise, per camera
   model and number of views, over seeds: worst relative error of fx, fy, cx, cy; |k1 error|; largest
   |error| / reported std (should stay < 3). Also one rendered + detected run (no added noise).
2. OpenCV's stereo sample: recon3d's calibrate stage vs plain cv2.calibrateCamera on the same corners.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from recon3d.calib import mono
from recon3d.calib.targets import BoardSpec, detect
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.geometry.camera_models import split_params
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.render import board_poses, chessboard, render_board

SPEC = BoardSpec("chessboard", corners=(9, 6), square=1.0)


def noisy_views(camera, n, seed, noise=0.3, tilt=50.0, off_center=0.3):
    rng = np.random.default_rng(seed)
    obj = SPEC.object_points()
    poses = board_poses(n, seed=seed, board=chessboard(), camera=camera, max_tilt_deg=tilt, off_center=off_center)
    views = []
    for i, pose in enumerate(poses):
        px = camera.project(obj @ pose[:3, :3].T + pose[:3, 3])
        views.append(mono.View(str(i), obj, px + rng.normal(0, noise, px.shape), np.arange(len(obj))))
    return views


def errors(model, truth, result):
    f, c, d = split_params(model, result.camera.params)
    tf, tc, td = split_params(model, truth.params)
    rel = np.abs(np.r_[f, c] / np.r_[tf, tc] - 1).max()
    std = np.where(result.param_std > 0, result.param_std, np.inf)
    z = np.abs(result.camera.params - truth.params) / std
    return rel, abs(d[0] - td[0]) if len(d) else 0.0, z.max()


def synthetic(seeds: int) -> None:
    print("## synthetic boards, 0.3 px noise, 640x480, tilt <= 50 deg, seeds", seeds)
    print(f"{'model':15s} {'views':>5s} {'max rel err f,c (median / worst)':>34s} {'|dk1| worst':>12s} "
          f"{'max |err|/std worst':>20s}")
    for model in ("PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE"):
        truth = make_camera(model, 640, 480)
        for n in (15, 25, 40):
            rows = [errors(model, truth, mono.fit(noisy_views(truth, n, s), (640, 480), model)) for s in range(seeds)]
            rel, dk1, z = np.array(rows).T
            print(f"{model:15s} {n:5d} {np.median(rel) * 100:15.3f} % / {rel.max() * 100:.3f} % "
                  f"{dk1.max():12.4f} {z.max():20.2f}")


def rendered() -> None:
    print("\n## rendered + detected boards (classic + cornerSubPix), OPENCV 640x480, 25 views, no added noise")
    truth = make_camera("OPENCV", 640, 480)
    board = chessboard()
    with tempfile.TemporaryDirectory() as d:
        views = []
        for i, pose in enumerate(board_poses(25, seed=7, board=board, camera=truth, max_tilt_deg=50,
                                             off_center=0.3)):
            rgb, _, _ = render_board(board, truth, pose)
            path = f"{d}/{i}.png"
            cv2.imwrite(path, rgb[..., ::-1])
            det = detect(path, SPEC)
            if not isinstance(det, str):
                views.append(mono.View(str(i), SPEC.object_points()[det.ids], det.corners, det.ids))
        result = mono.fit(views, (640, 480), "OPENCV")
    rel, dk1, z = errors("OPENCV", truth, result)
    print(f"views {len(views)}, RMS {result.rms:.3f} px, max rel err {rel * 100:.3f} %, |dk1| {dk1:.4f}, "
          f"max |err|/std {z:.2f}")


def opencv_sample(data: Path) -> None:
    print(f"\n## {data} (9x6, 640x480): recon3d calibrate vs plain cv2.calibrateCamera on the same corners")
    out = Path(tempfile.mkdtemp()) / "run"
    start = time.perf_counter()
    name, nodes = load_pipeline("calibrate", {"calibrate": {"images": f"{data}/left*.jpg",
                                                            "stereo_images": f"{data}/right*.jpg"}})
    run_pipeline(name, nodes, out)
    seconds = time.perf_counter() - start
    report = json.loads((out / "reports" / "calibrate.json").read_text())
    for side, key in (("left", "rms_px"), ("right", "right_rms_px")):
        obj, img = [], []
        for p in sorted(data.glob(f"{side}*.jpg")):
            det = detect(str(p), SPEC)
            if not isinstance(det, str):
                obj.append(SPEC.object_points().astype(np.float32))
                img.append(det.corners.astype(np.float32))
        plain, *_ = cv2.calibrateCamera(obj, img, (640, 480), None, None)
        ours = report[key]
        print(f"{side:5s}: images {len(obj)}, recon3d OPENCV RMS {ours:.4f} px, plain OpenCV (k1 k2 p1 p2 k3) RMS "
              f"{plain:.4f} px, ratio {ours / plain:.4f}")
    s = report["stereo"]
    print(f"stereo: pairs {s['pairs']}, RMS {s['rms_px']:.4f} px, baseline {s['baseline']:.4f} squares, rectified "
          f"epipolar error {s['epipolar_error_px']:.4f} px")
    print(f"depth: {report['depth']}")
    print(f"stage wall time {seconds:.1f} s; files in {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stereo-data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/opencv_stereo_chessboard")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    synthetic(args.seeds)
    rendered()
    if args.stereo_data.is_dir():
        opencv_sample(args.stereo_data)
    else:
        print(f"\n(skipping the OpenCV sample: {args.stereo_data} not found)")
