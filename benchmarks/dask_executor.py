"""The dask executor against local: equality, speed, a killed worker, and a 2,000-image scale simulation.

    .venv/bin/python benchmarks/dask_executor.py --data ../shared/data/sceaux_castle [--skip-scale]

1. speed: ingest + features + matching (the `sfm` pipeline's nodes) with `local` and with `dask` on a warm
   LocalCluster of 2 single-threaded worker processes; wall time per node and the ratio.
2. equality: the whole `sfm` pipeline continued from those caches under each executor; features, matches,
   two-view inliers, poses and points compared byte for byte.
3. fault: features + matching on dask again (fresh folder) while one worker process is SIGKILLed as soon
   as the first match task completes; the output must equal local's.
4. scale: a synthetic 2,000-image sequential rig at the features level (recon3d.synthetic.descriptors)
   matched on the cluster with Dask's task stream recorded: tasks, per-task compute, scheduler overhead
   per task (a no-op map and the real run), the serial part, and the wall time projected for 8 and 64
   workers from those measurements (Amdahl with the stage's own block sizing).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from recon3d.dag.dask_executor import DaskExecutor
from recon3d.dag.executor import LocalExecutor
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.stages import match
from recon3d.stages.base import AUTO_BLOCK_MAX, StageContext
from recon3d.synthetic.descriptors import descriptor_scene

FRONT = ("ingest", "features", "match")


def run_sfm(data: Path, out: Path, executor, nodes_wanted=None, on_progress=None, sets=None):
    name, nodes = load_pipeline("sfm", sets or {}, data)
    # real data has no ground truth for the `check` node
    nodes = [n for n in nodes if n.id in (nodes_wanted or [n.id for n in nodes if n.id != "check"])]
    start = time.perf_counter()
    result = run_pipeline(name, nodes, out, executor, on_progress=on_progress)
    return result, time.perf_counter() - start


def same_arrays(a: dict, b: dict, attr=None) -> bool:
    if list(a) != list(b):
        return False
    get = (lambda v: v) if attr is None else (lambda v: getattr(v, attr))
    return all(np.array_equal(get(a[k]), get(b[k])) for k in a)


def compare(a, b) -> dict[str, bool]:
    return {
        "keypoints": same_arrays(a.features, b.features, "keypoints"),
        "descriptors": same_arrays(a.features, b.features, "descriptors"),
        "matches": same_arrays(a.matches, b.matches),
        "two_view_inliers": same_arrays(a.two_view, b.two_view, "inliers"),
        "poses": same_arrays(a.poses, b.poses),
        "points": a.points is not None and b.points is not None and np.array_equal(a.points.xyz, b.points.xyz),
    }


def speed_and_equality(data: Path, work: Path, dask: DaskExecutor):
    """Returns local's scene after matching, the reference of the fault run."""
    for matcher in ("brute_force", "flann"):
        sets = {"match": {"matcher": matcher}}
        print(f"== speed: {', '.join(FRONT)} on {data.name} (match.matcher={matcher}), local vs dask "
              f"({dask.workers} workers, warm cluster)")
        times = {}
        for name, executor in (("local", LocalExecutor()), ("dask", dask)):
            result, wall = run_sfm(data, work / f"{name}-{matcher}", executor, FRONT, sets=sets)
            times[name] = (wall, result.seconds)
            per_node = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
            print(f"{name:>6}: {wall:6.1f} s wall ({per_node})")
        ratio = times["dask"][0] / times["local"][0]
        feat = times["dask"][1]["features"] / times["local"][1]["features"]
        mat = times["dask"][1]["match"] / times["local"][1]["match"]
        print(f" ratio dask/local: {ratio:.2f}x in all (features {feat:.2f}x, matching {mat:.2f}x); goal <= 0.65x")

    print("== equality: the whole sfm pipeline continued from those caches under each executor")
    one_thread = {"triangulate": {"num_threads": 1}, "bundle_adjust": {"num_threads": 1}}  # repeats to the bit
    local, t_local = run_sfm(data, work / "local-brute_force", LocalExecutor(), sets=one_thread)
    remote, t_dask = run_sfm(data, work / "dask-brute_force", dask, sets=one_thread)
    print(f"  rest of the pipeline: local {t_local:.1f} s, dask {t_dask:.1f} s")
    a, b = local.scene("bundle_adjust"), remote.scene("bundle_adjust")
    print(f"  registered {len(a.poses)} / {len(b.poses)} images, {len(a.points)} / {len(b.points)} points")
    print("  identical:", ", ".join(f"{k} {v}" for k, v in compare(a, b).items()))
    return local.scene("match")


def fault(data: Path, work: Path, dask: DaskExecutor, reference) -> None:
    print("== fault: SIGKILL one worker when the first match task completes")
    pids = dask.client.run(os.getpid)
    killed: list[tuple[int, float]] = []

    def on_progress(node_id, done, total, text):
        if node_id == "match" and done >= 1 and not killed:
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append((victim, time.perf_counter()))
            print(f"  killed worker pid {victim} at match task {done}/{total}")

    result, wall = run_sfm(data, work / "fault", dask, FRONT, on_progress)
    faulted = result.scene("match")
    replaced = killed and killed[0][0] not in dask.client.run(os.getpid).values()
    print(f"  completed in {wall:.1f} s; worker replaced by its nanny: {bool(replaced)}; identical to local: "
          f"matches {same_arrays(reference.matches, faulted.matches)}, "
          f"keypoints {same_arrays(reference.features, faulted.features, 'keypoints')}")


def _noop(i: int) -> int:
    return i


def scale(dask: DaskExecutor, n_images: int, work: Path) -> None:
    from distributed import get_task_stream

    print(f"== scale: a synthetic {n_images}-image sequential rig, matching (window 5) on {dask.workers} workers")
    t0 = time.perf_counter()
    scene, truth = descriptor_scene(n_images, keypoints=1000, seed=0)
    kp = np.mean([len(f.keypoints) for f in scene.features.values()])
    print(f"  scene: {n_images} images, {kp:.0f} keypoints each, made in {time.perf_counter() - t0:.1f} s")
    cfg = match.MatchConfig(pairs="sequential", window=5)
    pairs = len(match.select_pairs([im.name for im in scene.images], cfg))
    ctx = StageContext(node_id="match", workdir=work / "scale", executor=dask)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with get_task_stream(dask.client) as stream:
        out = match.run(scene, cfg, ctx)
    wall = time.perf_counter() - start
    spans = [ss for task in stream.data for ss in task["startstops"] if ss["action"] == "compute"]
    compute = np.array([ss["stop"] - ss["start"] for ss in spans])
    parallel = max(ss["stop"] for ss in spans) - min(ss["start"] for ss in spans)
    serial = wall - parallel
    tasks = len(compute)
    block = math.ceil(pairs / tasks)
    correct = np.mean([np.mean(truth[a][m[:, 0]] == truth[b][m[:, 1]]) for (a, b), m in out.matches.items()])
    print(f"  {pairs} pairs in {tasks} tasks of <= {block} pairs; wall {wall:.1f} s = serial {serial:.1f} s "
          f"(descriptor files, pair lists, collation, match graph) + parallel {parallel:.1f} s")
    print(f"  per task: compute mean {compute.mean() * 1e3:.0f} ms (median {np.median(compute) * 1e3:.0f}, "
          f"max {compute.max() * 1e3:.0f}); per pair {compute.sum() / pairs * 1e3:.2f} ms; "
          f"{len(out.matches)} pairs kept, {correct:.4f} of matches correct")
    busy = compute.sum() / dask.workers
    run_overhead = max(parallel - busy, 0.0) * dask.workers / tasks
    n_noop = 4000
    t = time.perf_counter()
    dask.client.gather(dask.client.map(_noop, range(n_noop), pure=False))
    noop = (time.perf_counter() - t) / n_noop
    print(f"  scheduler overhead per task: {noop * 1e3:.2f} ms (no-op map of {n_noop} tasks, throughput bound); "
          f"in the real run {run_overhead * 1e3:.1f} ms per task (worker idle time / tasks)")
    per_pair = compute.sum() / pairs
    overhead = max(run_overhead, noop)
    for w in (dask.workers, 8, 64):
        b = max(1, min(AUTO_BLOCK_MAX, math.ceil(pairs / (4 * w))))
        n = math.ceil(pairs / b)
        par = max(math.ceil(n / w) * (b * per_pair + overhead), n * noop)
        label = "measured" if w == dask.workers else "projected"
        extra = f" (measured {wall:.1f} s)" if w == dask.workers else ""
        print(f"  {label:>9} {w:3d} workers: {n} tasks of {b} pairs, {serial + par:7.1f} s = serial {serial:.1f} "
              f"+ parallel {par:.1f}{extra}; speed-up over 1 worker "
              f"{(serial + pairs * per_pair) / (serial + par):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sceaux_castle"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale-images", type=int, default=2000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="recon3d-dask-bench-"))
    t = time.perf_counter()
    dask = DaskExecutor(workers=args.workers)
    dask.map(_noop, list(range(2 * args.workers)))  # workers up
    print(f"LocalCluster of {dask.workers} single-threaded workers up in {time.perf_counter() - t:.1f} s; "
          f"runs in {work}")
    try:
        reference = speed_and_equality(args.data.resolve(), work, dask)
        fault(args.data.resolve(), work, dask, reference)
        if not args.skip_scale:
            scale(dask, args.scale_images, work)
    finally:
        dask.close()


if __name__ == "__main__":
    main()
