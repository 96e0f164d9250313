"""3D Gaussian splatting figures: test PSNR / SSIM against training wall-clock, Gaussian count, peak memory,
render speed.

    .venv/bin/python benchmarks/gaussians.py [--data ../shared/data/SYNTHETIC_nerf_lego_200px]
        [--budget-min 20] [--steps 10000] [--out out/bench_gaussians] [--set gaussians.key=value ...]

Runs pipelines/gaussians.yaml (ingest -> gaussians -> render -> evaluate) through the library, so the
figures are those `recon3d splat` gives; prints the PSNR-vs-time curve the trainer measured on 5 test views,
the final means over every test view, and the render speed of the trained model (each test view rendered
5 times after a warm-up, projection + SH + compositing, no file I/O).
"""

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/SYNTHETIC_nerf_lego_200px")
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--out", default="out/bench_gaussians")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    sets = parse_sets(args.sets)
    sets["gaussians"] = {"budget_min": args.budget_min, "steps": args.steps, **sets.get("gaussians", {})}
    name, nodes = load_pipeline("gaussians", sets, Path(args.data))
    tic = time.perf_counter()
    result = run_pipeline(name, nodes, args.out)
    wall = time.perf_counter() - tic
    report = read_json(result.folders["gaussians"] / "report.json")
    metrics = read_json(Path(args.out) / "metrics.json")
    print(f"data {args.data}; {report['counts']['train_views']} train / {report['counts']['test_views']} test views; "
          f"pipeline wall {wall:.0f} s (cached nodes: {result.cached})")
    print(f"training: {report['counts']['steps']} steps in {report['counts']['train_seconds']:.0f} s "
          f"(stopped by {report['stopped_by']}), {report['counts']['gaussians']} Gaussians, "
          f"peak RSS {report['peak_rss_mb']:.0f} MB, model {report['model_bytes'] / 1e6:.1f} MB, {report['events']}")
    print("\n| train s | step | PSNR (5 test views) | SSIM | Gaussians |\n|---|---|---|---|---|")
    for p in report["curve"]:
        print(f"| {p['seconds']:.0f} | {p['step']} | {p['psnr']:.2f} | {p['ssim']:.4f} | {p['gaussians']} |")
    print(f"\nfinal, all {len(metrics['views'])} test views (8-bit renders): PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.4f}")
    scene = result.scene("gaussians")
    model = scene.radiance["gaussians"]
    renderer = open_model(model)
    views = load_views(scene, renderer.meta["test"], BACKGROUNDS[renderer.meta["background"]])
    renderer.render(views[0])
    tic = time.perf_counter()
    for _ in range(5):
        for v in views:
            renderer.render(v)
    per_view = (time.perf_counter() - tic) / (5 * len(views))
    print(f"render {views[0].width}x{views[0].height}: {1000 * per_view:.1f} ms per view = {1 / per_view:.1f} FPS "
          f"({torch.get_num_threads()} threads); peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
