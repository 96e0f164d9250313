"""Retrieval pair selection (`match.pairs=retrieval`) against the truly overlapping pairs of a synthetic rig
(issue 21). Prints figures; not a test.

    .venv/bin/python benchmarks/retrieval.py [--images 300] [--k 5,10,20] [--min-share 0.2]

Renders the synthetic street walk (`recon3d.synthetic.walk`: out along a street and back, 320x240) with its
truth, extracts features (COLMAP's SIFT), and calls a pair "truly overlapping" when at least `--min-share`
of one image's surface samples are seen, unoccluded, by the other (`walk.overlapping_pairs`). For each k:
the pairs retrieval picks (VLAD on a codebook learnt from the scene's descriptors; with and without the
capture-order window), recall of the overlapping pairs, pairs as a share of exhaustive, and the seconds the
global descriptors took. Then structure from motion from retrieval pairs (k = the middle value) beside
exhaustive pairs: pairs matched, registered images, ATE relative to the camera extent, seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.scene import Scene
from recon3d.stages import bundle_adjust, essential, features, match, triangulate
from recon3d.stages.base import StageContext
from recon3d.synthetic.walk import overlapping_pairs, write_walk


def stage(module, scene: Scene, cfg, tmp: Path) -> tuple[Scene, StageContext, float]:
    name = module.__name__.rsplit(".", 1)[-1]
    ctx = StageContext(node_id=name, workdir=tmp / name)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    return module.run(scene, cfg, ctx), ctx, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--k", default="5,10,20")
    parser.add_argument("--min-share", type=float, default=0.2)
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth, depths = write_walk(tmp / "data", args.images)
        scene = Scene(images=truth.images, cameras=truth.cameras)
        scene, _, secs = stage(features, scene, features.FeaturesConfig(backend="pycolmap_sift"), tmp)
        names = [im.name for im in scene.images]
        n = len(names)
        exhaustive = n * (n - 1) // 2
        true_pairs = overlapping_pairs(truth, depths, min_share=args.min_share)
        print(f"street walk, {n} images 320x240, features {secs:.1f} s; {len(true_pairs)} of {exhaustive} pairs "
              f"overlap by >= {args.min_share:.0%} ({100 * len(true_pairs) / exhaustive:.1f} %)")
        print(f"{'k':>3s} {'window':>6s} {'pairs':>6s} {'% exh':>6s} {'recall':>7s} {'seconds':>8s}")
        index = {name: i for i, name in enumerate(names)}
        for k in ks:
            for window in (0, 5):
                cfg = match.MatchConfig(pairs="retrieval", retrieval_k=k, retrieval_window=window)
                ctx = StageContext(node_id="match", workdir=tmp / f"retrieval-{k}-{window}")
                ctx.workdir.mkdir(parents=True)
                paths = {}
                for name in names:
                    paths[name] = str(ctx.workdir / f"{index[name]:06d}.npy")
                    np.save(paths[name], scene.features[name].descriptors)
                start = time.perf_counter()
                vectors = match.global_descriptors(names, paths, cfg, ctx)
                seconds = time.perf_counter() - start
                pairs = {(index[a], index[b]) for a, b in match.select_pairs(names, cfg, None, "retrieval", vectors)}
                recall = len(pairs & true_pairs) / max(1, len(true_pairs))
                print(f"{k:3d} {window:6d} {len(pairs):6d} {100 * len(pairs) / exhaustive:6.1f} {recall:7.3f} "
                      f"{seconds:8.2f}")
        k = ks[len(ks) // 2]
        print(f"\nSfM (pycolmap matcher and two-view geometry, GLOMAP, Ceres BA) from retrieval k={k} beside "
              f"exhaustive pairs")
        gt = np.stack([truth.poses[name] for name in names])
        for label, pairs in ((f"retrieval k={k}", "retrieval"), ("exhaustive", "exhaustive")):
            s, seconds = scene, {}
            steps = [(match, match.MatchConfig(pairs=pairs, retrieval_k=k, matcher="pycolmap")),
                     (essential, essential.EssentialConfig(backend="pycolmap")),
                     (triangulate, triangulate.TriangulateConfig()),
                     (bundle_adjust, bundle_adjust.BundleAdjustConfig(backend="pycolmap"))]
            for module, cfg in steps:
                s, ctx, seconds[module.__name__.rsplit(".", 1)[-1]] = stage(module, s, cfg, tmp / label)
            registered = [name for name in names if name in s.poses]
            keep = [index[name] for name in registered]
            err = pose_errors(np.stack([s.poses[name] for name in registered]), gt[keep]).summary()
            print(f"{label:16s} pairs {len(s.matches):5d}  registered {len(registered)}/{n}  ATE "
                  f"{100 * err['ate_rmse'] / camera_extent(gt):.4f} % of extent  "
                  + ", ".join(f"{k2} {v:.1f} s" for k2, v in seconds.items()))


if __name__ == "__main__":
    main()
