"""Structure from motion at scale on the synthetic street walk (issue 21). Prints figures; not a test.

    .venv/bin/python benchmarks/sfm_scale.py --images 1000 --work /tmp/scale [--set match.retrieval_k=20 ...]

Renders the walk (`recon3d.synthetic.walk`: 320x240, out along a street and back, the truth in
`ground_truth/`) once into WORK/walk-N, then runs `recon3d run sfm --data WORK/walk-N --out WORK/out-N` as a
user does (default pairs: retrieval above 100 images) and prints: wall time, the largest process's peak memory,
seconds per node, registered images, ATE relative to the camera extent (the `check` node's figure), candidate and
matched pairs against exhaustive, the recall of the truly overlapping pairs among the matched pairs (a lower
bound of the candidates' recall; overlap from the rendered depth, `walk.overlap_shares`), the cost per task
(features per image, matching and verification per pair) and a projection of those stages to 10,000 images on 8
and 64 Dask workers (mapping, one process, extrapolated from its measured time as N log N).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from recon3d.scene import Scene
from recon3d.synthetic.walk import overlap_shares, pairs_above, write_walk

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], help="passed to recon3d run as --set")
    parser.add_argument("--score-only", action="store_true", help="read the figures of the last run in WORK")
    args = parser.parse_args()
    data, out = args.work / f"walk-{args.images}", args.work / f"out-{args.images}"
    depths_file = args.work / f"walk-{args.images}-depths.npy"
    if not depths_file.is_file():
        start = time.perf_counter()
        np.save(depths_file, write_walk(data, args.images)[1])
        print(f"rendered {args.images} images in {time.perf_counter() - start:.0f} s")
    if not args.score_only:
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(ROOT / ".venv/bin/recon3d"), "run", "sfm", "--data", str(data), "--out", str(out)]
        for s in args.set:
            cmd += ["--set", s]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"recon3d run sfm: exit {done.returncode}, {wall / 60:.1f} min, largest process peak {peak_gb:.2f} GB")
        if done.returncode != 0:
            print(done.stderr[-3000:])
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    print("seconds per node: " + ", ".join(f"{k} {r['seconds']:.0f}" for k, r in reports.items() if "seconds" in r))
    print("memory of the run's process per node, MB at its start -> its peak (the stages' worker processes not "
          "included): " + ", ".join(f"{k} {r['memory_start_mb']} -> {r['memory_peak_mb']}"
                                    for k, r in reports.items() if "memory_peak_mb" in r))
    n = args.images
    exhaustive = n * (n - 1) // 2
    m = reports["match"]["counts"]
    e = reports["essential"]["counts"]
    t = reports["triangulate"]["counts"]
    print(f"pairs: {m['pairing']}, {m['pairs_candidate']} candidates ({100 * m['pairs_candidate'] / exhaustive:.2f} % "
          f"of {exhaustive} exhaustive), {m['pairs_kept']} matched, {e['pairs_verified']} verified")
    print(f"registered {t['registered']}/{n}")
    check = reports.get("check", {}).get("counts", {})
    if check:
        print(f"ATE {100 * check['position_rmse_rel']:.4f} % of the camera extent, rotation error max "
              f"{check['rotation_error_max_deg']:.3f} deg, check passed={check.get('passed')}")
    truth = Scene.load(data / "ground_truth")
    shares = overlap_shares(truth, np.load(depths_file))
    matched = Scene.load(next((out / "cache").glob("match-*")) / "scene")
    index = {im.name: i for i, im in enumerate(truth.images)}
    kept = {(index[Path(a).name], index[Path(b).name]) for a, b in matched.matches}
    for min_share in (0.2, 0.35, 0.5, 0.7):
        overlap = pairs_above(shares, min_share)
        print(f"pairs overlapping by >= {min_share:.0%}: {len(overlap)} ({100 * len(overlap) / exhaustive:.2f} % "
              f"of exhaustive); recall among matched pairs {len(kept & overlap) / max(1, len(overlap)):.3f}")
    f_img = reports["features"]["seconds"] / n
    m_pair = reports["match"]["seconds"] / m["pairs_candidate"]
    v_pair = reports["essential"]["seconds"] / max(1, e["pairs_in"])
    mapping = reports["triangulate"]["seconds"] + reports["bundle_adjust"]["seconds"]
    print(f"per task on this machine's pool (2 processes): features {f_img:.3f} s/image, matching {m_pair * 1000:.1f} "
          f"ms/pair, verification {v_pair * 1000:.1f} ms/pair, mapping + BA {mapping:.0f} s")
    big = 10_000
    pairs_big = m["pairs_candidate"] / n * big
    for workers in (8, 64):
        parallel = (f_img * big + m_pair * pairs_big + v_pair * pairs_big) * 2 / workers  # 2: this pool's width
        mapped = mapping * (big * math.log(big)) / (n * math.log(n))
        print(f"projection, {big} images on {workers} Dask workers: features + matching + verification "
              f"{parallel / 60:.0f} min, mapping {mapped / 60:.0f} min (one process), {pairs_big:.0f} pairs")


if __name__ == "__main__":
    main()
