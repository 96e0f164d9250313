"""Retrieval pair selection (`match.pairs=retrieval`) against the truly overlapping pairs of a synthetic rig
(issue 21). Prints figures; not a test.

    .venv/bin/python benchmarks/retrieval.py [--images 300] [--seed 0] [--k 20,45] [--matched 35:0,25:9] [--sfm]

Renders the synthetic street walk (`recon3d.synthetic.walk`: out along a street and back, 320x240) with its
truth, extracts features (COLMAP's SIFT), and calls a pair "truly overlapping" when at least a given share
of one image's surface samples are seen, unoccluded, by the other (`walk.overlap_shares`), for a share of 20,
35, 50 and 70 %. For each k: the pairs retrieval picks (VLAD on a codebook learnt from the scene's descriptors,
the capture-order window; with and without query expansion), pairs as a share of exhaustive, recall of the
overlapping pairs at each share, and the seconds the global descriptors took. `--matched K:R,...` runs the
match stage itself (COLMAP's matcher, two processes) with retrieval_k K and retrieval_rounds R, whose rounds
need the earlier rounds' matches: pairs tried, recall of the tried pairs and of the pairs kept
(>= min_matches), seconds. With `--sfm`, structure from
motion from retrieval pairs (k = the last value) beside exhaustive pairs: pairs matched, registered images, ATE
relative to the camera extent, seconds (exhaustive pairs are slow beyond a few hundred images).
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from recon3d.dag.executor import LocalExecutor
from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.scene import Scene
from recon3d.stages import bundle_adjust, essential, features, match, triangulate
from recon3d.stages.base import StageContext
from recon3d.synthetic.walk import overlap_shares, pairs_above, write_walk

SHARES = (0.2, 0.35, 0.5, 0.7)


def stage(module, scene: Scene, cfg, tmp: Path) -> tuple[Scene, StageContext, float]:
    name = module.__name__.rsplit(".", 1)[-1]
    ctx = StageContext(node_id=name, workdir=tmp / name)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    return module.run(scene, cfg, ctx), ctx, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="the walk's seed (its facades, boxes and path)")
    parser.add_argument("--k", default="20,45")
    parser.add_argument("--matched", default="", help="K:R,... run the match stage with retrieval_k K and "
                        "retrieval_rounds R")
    parser.add_argument("--sfm", action="store_true", help="also map from retrieval and from exhaustive pairs")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth, depths = write_walk(tmp / "data", args.images, seed=args.seed)
        scene = Scene(images=truth.images, cameras=truth.cameras)
        scene, _, secs = stage(features, scene, features.FeaturesConfig(backend="pycolmap_sift"), tmp)
        names = [im.name for im in scene.images]
        n = len(names)
        exhaustive = n * (n - 1) // 2
        shares = overlap_shares(truth, depths)
        true_pairs = {share: pairs_above(shares, share) for share in SHARES}
        print(f"street walk, {n} images 320x240, features {secs:.1f} s; pairs overlapping by >= "
              + ", ".join(f"{s:.0%}: {100 * len(p) / exhaustive:.1f} %" for s, p in true_pairs.items())
              + " of the exhaustive pairs")
        print(f"{'k':>3s} {'expand':>6s} {'pairs':>6s} {'% exh':>6s} "
              + " ".join(f"{'recall ' + format(s, '.0%'):>11s}" for s in SHARES) + f" {'seconds':>8s}")
        index = {name: i for i, name in enumerate(names)}
        folder = tmp / "descriptors"
        folder.mkdir()
        paths = {}
        for name in names:
            paths[name] = str(folder / f"{index[name]:06d}.npy")
            np.save(paths[name], scene.features[name].descriptors)
        start = time.perf_counter()
        n_features = [len(scene.features[name].keypoints) for name in names]
        vectors = match.global_descriptors(names, paths, n_features, match.MatchConfig(), StageContext("match", folder))
        seconds = time.perf_counter() - start
        for k in ks:
            for expand in (0, match.MatchConfig().retrieval_expand):
                cfg = match.MatchConfig(pairs="retrieval", retrieval_k=k, retrieval_expand=expand)
                pairs = {(index[a], index[b]) for a, b in match.select_pairs(names, cfg, None, "retrieval", vectors)}
                recall = [len(pairs & p) / max(1, len(p)) for p in true_pairs.values()]
                print(f"{k:3d} {expand:6d} {len(pairs):6d} {100 * len(pairs) / exhaustive:6.2f} "
                      + " ".join(f"{r:11.3f}" for r in recall) + f" {seconds:8.2f}")
        for spec in filter(None, args.matched.split(",")):
            k, rounds = (int(v) for v in spec.split(":"))
            cfg = match.MatchConfig(pairs="retrieval", retrieval_k=k, retrieval_rounds=rounds, matcher="pycolmap")
            ctx = StageContext(node_id="match", workdir=tmp / f"match_{k}_{rounds}", executor=LocalExecutor(2))
            ctx.workdir.mkdir(parents=True)
            start = time.perf_counter()
            out = match.run(scene, cfg, ctx)
            seconds = time.perf_counter() - start
            kept = {(index[a], index[b]) for a, b in out.matches}
            tried = kept | {tuple(index[x] for x in d["item"].split(" | ")) for d in ctx.dropped if " | " in d["item"]}
            print(f"matched k={k} rounds={rounds}: tried {len(tried)} pairs ({100 * len(tried) / exhaustive:.2f} %, "
                  f"{ctx.counts['pairs_covisible']} in {ctx.counts['covisible_rounds']} rounds), kept {len(kept)}; "
                  "recall of the tried "
                  + " ".join(f"{len(tried & p) / max(1, len(p)):.3f}" for p in true_pairs.values())
                  + ", of the kept " + " ".join(f"{len(kept & p) / max(1, len(p)):.3f}" for p in true_pairs.values())
                  + f"; {seconds:.0f} s")
        if not args.sfm:
            return
        k = ks[-1]
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
