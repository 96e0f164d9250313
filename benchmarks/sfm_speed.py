"""recon3d's `sfm` pipeline against pycolmap's own, as a user runs each on a folder of photos (issue 21).
Prints figures; not a test.

    .venv/bin/python benchmarks/sfm_speed.py folders --data ../shared/data --work /tmp/sfmspeed
    .venv/bin/python benchmarks/sfm_speed.py time --work /tmp/sfmspeed [--runs 3] [--only sceaux,monstree,lego]
    .venv/bin/python benchmarks/sfm_speed.py score --work /tmp/sfmspeed

`folders` makes a plain photo folder per scene under WORK (symlinks: sceaux_castle with its K.txt, monstree,
lego's 100 train views; lego's true poses kept beside it in truth.json, out of the folder). `time` runs the
two commands below in turn, A B A B, each into a fresh output folder, and prints the wall times, their
medians and the ratio; `score` reads both models back (COLMAP binary) and prints registered images, points,
mean reprojection error and, for lego, ATE against the truth (Sim(3)-aligned, relative to the camera extent).

The two commands, also usable on their own (e.g. under /usr/bin/time -v):
    recon3d:  .venv/bin/recon3d run sfm --data WORK/SCENE/photos --out WORK/SCENE/recon3d
    pycolmap: .venv/bin/python benchmarks/sfm_speed.py pycolmap WORK/SCENE/photos WORK/SCENE/pycolmap
The second is pycolmap's own pipeline: extract_features (K.txt's intrinsics for one camera when the folder
has one, as recon3d's ingest reads them; else COLMAP's defaults: a camera per image size and EXIF),
match_exhaustive and incremental_mapping, on every thread, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("sceaux", "monstree", "lego")


def folders(data: Path, work: Path) -> None:
    """WORK/SCENE/photos: a plain folder of the scene's photos (symlinks), nothing else but sceaux's K.txt."""
    from recon3d.scene import Scene
    from recon3d.stages import ingest

    sources = {"sceaux": sorted((data / "sceaux_castle/images").iterdir()),
               "monstree": sorted((data / "monstree/images").iterdir()),
               "lego": sorted((data / "SYNTHETIC_nerf_lego_200px/train").glob("*.png"))}
    for scene, files in sources.items():
        photos = work / scene / "photos"
        shutil.rmtree(photos, ignore_errors=True)
        photos.mkdir(parents=True)
        for f in files:
            (photos / f.name).symlink_to(f.resolve())
        print(f"{photos}: {len(files)} photos")
    shutil.copy(data / "sceaux_castle/K.txt", work / "sceaux/photos/K.txt")
    full = ingest.run(Scene(), ingest.IngestConfig(path=str(data / "SYNTHETIC_nerf_lego_200px")))
    truth = {Path(im.name).name: full.poses[im.name].tolist() for im in full.images if im.split == "train"}
    (work / "lego/truth.json").write_text(json.dumps(truth))


def pycolmap_pipeline(photos: Path, out: Path) -> None:
    """pycolmap's own extract + exhaustive match + incremental mapping into OUT/sparse/N."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import pycolmap

    shutil.rmtree(out, ignore_errors=True)
    (out / "sparse").mkdir(parents=True)
    reader = pycolmap.ImageReaderOptions()
    mode = pycolmap.CameraMode.AUTO  # COLMAP's default: a camera per image size (monstree has two)
    if (photos / "K.txt").is_file():
        k = np.loadtxt(photos / "K.txt")
        reader.camera_model = "SIMPLE_RADIAL"
        reader.camera_params = ",".join(repr(float(v)) for v in (k[0, 0], k[0, 2], k[1, 2], 0.0))
        mode = pycolmap.CameraMode.SINGLE  # the one K for every photo
    database = out / "database.db"
    pycolmap.extract_features(database, photos, camera_mode=mode, reader_options=reader, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
    pycolmap.incremental_mapping(database, photos, out / "sparse")


def commands(work: Path, scene: str) -> dict[str, list[str]]:
    photos = work / scene / "photos"
    return {"recon3d": [str(ROOT / ".venv/bin/recon3d"), "run", "sfm", "--data", str(photos),
                        "--out", str(work / scene / "recon3d")],
            "pycolmap": [sys.executable, str(Path(__file__).resolve()), "pycolmap", str(photos),
                         str(work / scene / "pycolmap")]}


def time_both(work: Path, scenes: list[str], runs: int) -> None:
    for scene in scenes:
        walls: dict[str, list[float]] = {"recon3d": [], "pycolmap": []}
        for _ in range(runs):
            for label, cmd in commands(work, scene).items():
                shutil.rmtree(work / scene / label, ignore_errors=True)  # no cache: every run from the photos
                start = time.perf_counter()
                done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                walls[label].append(time.perf_counter() - start)
                if done.returncode != 0:
                    print(f"{scene} {label}: exit {done.returncode}\n{done.stderr[-2000:]}")
        ratios = [a / b for a, b in zip(walls["recon3d"], walls["pycolmap"], strict=True)]
        print(f"{scene}: recon3d {_fmt(walls['recon3d'])} | pycolmap {_fmt(walls['pycolmap'])} | "
              f"ratio median {statistics.median(ratios):.2f} (each pair: {', '.join(f'{r:.2f}' for r in ratios)})")


def _fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} s (runs {', '.join(f'{v:.1f}' for v in values)})"


def score(work: Path, scenes: list[str]) -> None:
    import pycolmap

    from recon3d.geometry.align import camera_extent, pose_errors

    print(f"{'scene':9s} {'pipeline':9s} {'registered':>10s} {'points':>7s} {'reproj px':>9s} {'ATE %ext':>9s}")
    for scene in scenes:
        photos = sorted(p.name for p in (work / scene / "photos").iterdir() if p.suffix.lower() != ".txt")
        truth_file = work / scene / "truth.json"
        truth = json.loads(truth_file.read_text()) if truth_file.is_file() else None
        for label in ("recon3d", "pycolmap"):
            models = [pycolmap.Reconstruction(d) for d in sorted((work / scene / label / "sparse").iterdir())
                      if (d / "images.bin").is_file()]
            if not models:
                print(f"{scene:9s} {label:9s} no model")
                continue
            rec = max(models, key=lambda r: r.num_reg_images())
            poses = {Path(im.name).name: np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]])
                     for im in rec.images.values() if im.has_pose}
            ate = ""
            if truth:
                names = [n for n in truth if n in poses]
                gt = np.array([truth[n] for n in names])
                errors = pose_errors(np.stack([poses[n] for n in names]), gt).summary()
                ate = f"{100 * errors['ate_rmse'] / camera_extent(gt):9.4f}"
            print(f"{scene:9s} {label:9s} {len(poses):>5d}/{len(photos):<4d} {rec.num_points3D():7d} "
                  f"{rec.compute_mean_reprojection_error():9.3f} {ate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("folders")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    p.add_argument("--work", type=Path, required=True)
    for name in ("time", "score"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--only", default=",".join(SCENES))
        p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("pycolmap")
    p.add_argument("photos", type=Path)
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.what == "folders":
        folders(args.data, args.work)
    elif args.what == "pycolmap":
        pycolmap_pipeline(args.photos, args.out)
    elif args.what == "time":
        time_both(args.work, args.only.split(","), args.runs)
    else:
        score(args.work, args.only.split(","))


if __name__ == "__main__":
    main()
