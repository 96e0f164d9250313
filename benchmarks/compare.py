"""NeRF against 3DGS under one protocol: `recon3d compare` end to end, its table, curves and report.

    .venv/bin/python benchmarks/compare.py --data ../shared/data/SYNTHETIC_nerf_lego_200px --budget-min 20
    .venv/bin/python benchmarks/compare.py --data ../shared/data/sceaux_castle --sfm --budget-min 3

With `--sfm` the data is a plain image folder: recon3d's own `sfm` pipeline poses it first, and the compare
runs on the COLMAP project it exported (images + sparse/0), holding out every 8th image. Prints the table
(mean +- std over seeds), each curve, and, when Debian's chromium is installed, takes a screenshot of the
report (OUT/report.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from recon3d.compare import compare_pipeline
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.report.html import write_report
from recon3d.stages.compare import FIGURES


def pose_with_sfm(images: Path, out: Path) -> Path:
    """Run the sfm pipeline on an image folder; return a COLMAP project folder (images/ + sparse/0)."""
    name, nodes = load_pipeline("sfm", {}, images)
    nodes = [n for n in nodes if n.id != "check"]  # no ground truth for real photos
    start = time.perf_counter()
    result = run_pipeline(name, nodes, out / "sfm")
    scene = result.scene("bundle_adjust")
    print(f"sfm: {len(scene.poses)} / {len(scene.images)} images registered, {len(scene.points)} points, "
          f"mean reprojection {scene.points.error.mean():.3f} px, {time.perf_counter() - start:.0f} s")
    project = out / "colmap_project"
    project.mkdir(parents=True, exist_ok=True)
    for name, target in (("images", images / "images"), ("sparse", out / "sfm" / "sparse")):
        link = project / name
        if not link.exists():
            link.symlink_to(target.resolve())
    return project


def screenshot(report: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium: no screenshot (apt-get install chromium)")
        return
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={png.parent / 'chromium-profile'}", f"--screenshot={png}",
                    "--window-size=1400,3000", report.resolve().as_uri()], check=True, timeout=180,
                   capture_output=True)
    print(f"screenshot: {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("out/bench-compare"))
    parser.add_argument("--methods", default="gaussians,nerf")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--budget-min", type=float, default=20.0)
    parser.add_argument("--sfm", action="store_true", help="pose an image folder with recon3d's sfm first")
    parser.add_argument("--steps", type=int, default=None, help="steps of every training node (stops by steps, "
                        "not by the clock: what reproducibility needs)")
    parser.add_argument("--repeat", action="store_true", help="run the same comparison again into OUT/again and "
                        "print the PSNR differences (reproducibility)")
    args = parser.parse_args()
    data = pose_with_sfm(args.data, args.out) if args.sfm else args.data
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    sets = {f"{m}-s{s}": {"steps": args.steps} for m in methods for s in seeds} if args.steps else None
    name, nodes = compare_pipeline(data, methods, seeds, args.budget_min, 8 if args.sfm else None, sets)
    start = time.perf_counter()
    run_pipeline(name, nodes, args.out)
    report = write_report(args.out)
    comparison = json.loads((args.out / "compare.json").read_text())
    print(f"compare: {time.perf_counter() - start:.0f} s wall; protocol:")
    for k, v in comparison["protocol"].items():
        print(f"  {k}: {v}")
    for row in comparison["table"]:
        cells = [f"{k} {row[k]:.4g} +- {row[k + '_std']:.2g}" for k in FIGURES if row.get(k) is not None]
        print(f"{row['method']} (seeds {row['seeds']}): " + ", ".join(cells))
    for node, entry in comparison["curves"].items():
        points = ", ".join(f"{p['seconds']:.0f} s {p['psnr']:.2f}" for p in entry["curve"])
        print(f"curve {node}: {points}")
    screenshot(report, args.out / "report.png")
    if args.repeat:
        again = run_pipeline(name, nodes, args.out / "again").scene()
        first = json.loads((args.out / "compare.json").read_text())["evaluations"]
        for node in first:
            a = json.loads((args.out / "metrics" / f"{node}.json").read_text())["psnr"]
            b = again.metrics[node]["psnr"]
            print(f"repeat {node}: {a:.4f} dB then {b:.4f} dB, difference {abs(a - b):.4f} dB")


if __name__ == "__main__":
    main()
