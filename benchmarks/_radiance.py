"""Shared by benchmarks/gaussians.py and benchmarks/nerf.py: run a radiance pipeline through the library and
print what it measured (the PSNR-vs-time curve, final test metrics, training time, memory, render speed)."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from recon3d.dag.pipeline import load_pipeline, parse_sets
from recon3d.dag.runner import run_pipeline
from recon3d.io.files import read_json
from recon3d.radiance.renderers import open_model
from recon3d.radiance.views import BACKGROUNDS, load_views


def arguments(doc: str, steps: int, out: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/SYNTHETIC_nerf_lego_200px")
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--out", default=out)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    return ap.parse_args()


def run(pipeline: str, node: str, args: argparse.Namespace) -> dict:
    sets = parse_sets(args.sets)
    sets[node] = {"budget_min": args.budget_min, "steps": args.steps, **sets.get(node, {})}
    name, nodes = load_pipeline(pipeline, sets, Path(args.data))
    tic = time.perf_counter()
    result = run_pipeline(name, nodes, args.out)
    wall = time.perf_counter() - tic
    report = read_json(result.folders[node] / "report.json")
    metrics = read_json(Path(args.out) / "metrics.json")
    counts = report["counts"]
    print(f"data {args.data}; {counts['train_views']} train / {counts['test_views']} test views; pipeline wall "
          f"{wall:.0f} s (cached nodes: {result.cached})")
    print(f"training: {counts['steps']} steps in {counts['train_seconds']:.0f} s (stopped by {report['stopped_by']}), "
          f"peak RSS {report['peak_rss_mb']:.0f} MB, model {report['model_bytes'] / 1e6:.1f} MB, {counts}, "
          f"{report['events']}")
    keys = [k for k in report["curve"][0] if k not in ("step", "seconds", "psnr", "ssim")] if report["curve"] else []
    print("\n| train s | step | PSNR (5 test views) | SSIM | " + " | ".join(keys) + " |")
    print("|---" * (4 + len(keys)) + "|")
    for p in report["curve"]:
        extra = " | ".join(str(p[k]) for k in keys)
        print(f"| {p['seconds']:.0f} | {p['step']} | {p['psnr']:.2f} | {p['ssim']:.4f} | {extra} |")
    print(f"\nfinal, all {len(metrics['views'])} test views (8-bit renders): PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.4f}")
    scene = result.scene(node)
    renderer = open_model(scene.radiance[node])
    views = load_views(scene, renderer.meta["test"], BACKGROUNDS[renderer.meta["background"]])
    renderer.render(views[0])
    tic = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        for v in views:
            renderer.render(v)
    per_view = (time.perf_counter() - tic) / (repeats * len(views))
    print(f"render {views[0].width}x{views[0].height}: {1000 * per_view:.1f} ms per view = {1 / per_view:.1f} FPS "
          f"({views[0].width * views[0].height / per_view / 1e6:.2f} M rays/s, {torch.get_num_threads()} threads); "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return {"report": report, "metrics": metrics, "seconds_per_view": per_view}
