"""Your own photos, end to end: `recon3d splat` (or `nerf`) on a plain photo folder, as a user types it.

    .venv/bin/python benchmarks/photos.py --data ../shared/data/monstree --budget-min 20 [--command splat]
        [--out out/bench_photos] [--variant NAME=node.key=value,node.key=value ...]

The first variant runs into a fresh run folder, so its wall time is the whole run: SfM (ingest, features,
match, verification, mapping, bundle adjustment, export), training, renders of the held-out photos (every 8th
registered photo, the LLFF / Mip-NeRF 360 protocol) and the report. Later variants run into the same folder,
so they reuse the SfM from the cache (its nodes are not run again) and change only what they set; each
variant's metrics.json and report are copied aside as `<variant>.metrics.json` / `<variant>.report.html`.
Prints per variant: held-out PSNR / SSIM at the evaluated resolution, steps, training seconds, Gaussians,
wall time, the PSNR-vs-time curve, per-view PSNR.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def parse_variant(text: str) -> tuple[str, list[str]]:
    """NAME=node.key=value,node.key=value -> (NAME, settings); a comma splits only before the next
    `node.key=`, so a value may be a YAML list (`nerf.upsample_at=[1000, 2500, 6000]`)."""
    name, _, sets = text.partition("=")
    return name, [s for s in re.split(r",(?=[\w-]+\.\w+=)", sets) if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/monstree")
    ap.add_argument("--command", default="splat", choices=["splat", "nerf"])
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--out", default="out/bench_photos")
    ap.add_argument("--variant", action="append", default=[], help="NAME=node.key=value,... (default: defaults)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder's cache from an earlier call")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    variants = [parse_variant(v) for v in args.variant] or [("default", [])]
    rows = []
    recon3d = Path(sys.executable).with_name("recon3d")
    for name, sets in variants:
        cmd = [str(recon3d), args.command, "--data", args.data, "--out", str(out), "--budget-min", str(args.budget_min)]
        for s in sets:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        tic = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        shutil.copyfile(out / "metrics.json", out / f"{name}.metrics.json")
        shutil.copyfile(out / "report.html", out / f"{name}.report.html")
        ran = next((line for line in proc.stderr.splitlines() if line.startswith("ran ")), "")
        train = metrics["train"]
        rows.append((name, metrics, wall, ran))
        print(f"{name}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} (colour-corrected "
              f"{metrics['psnr_cc']:.2f} dB, {metrics['ssim_cc']:.4f}) over {len(metrics['views'])} "
              f"held-out views at {metrics['protocol']['resolution']}; {train.get('steps')} steps in "
              f"{train.get('train_seconds')} s, {train.get('gaussians', train.get('grid', ''))} "
              f"{'Gaussians' if args.command == 'splat' else ''}; wall {wall:.0f} s ({ran})", flush=True)
        print("  curve (train s, step, PSNR): " + ", ".join(f"({p['seconds']:.0f}, {p['step']}, {p['psnr']:.2f})"
                                                           for p in train.get("curve", [])))
        print("  per view: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in metrics["views"].items()), flush=True)
    print(f"\npeak RSS of the runs: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")
    protocol = rows[0][1]["protocol"] if rows else {}
    print(f"data {args.data}, `recon3d {args.command} --budget-min {args.budget_min:g}`; split: "
          f"{protocol.get('split')}; resolution: {protocol.get('resolution_source')}")
    print("\n| variant | PSNR dB | SSIM | PSNR cc | steps | Gaussians | wall s |\n|---|---|---|---|---|---|---|")
    for name, m, wall, _ in rows:
        print(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_cc']:.2f} | {m['train'].get('steps')} | "
              f"{m['train'].get('gaussians', '')} | {wall:.0f} |")


if __name__ == "__main__":
    main()
