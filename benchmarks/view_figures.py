"""`recon3d view` and the report as a user sees them, in headless Chromium (SwiftShader WebGL, no GPU):

    .venv/bin/python benchmarks/view_figures.py RUN [RUN ...] --shots DIR [--gaussians 300000]

For each run folder: starts `recon3d view RUN` as a user does, times the server's URL line and the first frame
that shows the model (colour in the 3D canvas other than the frustums), clicks "render from here" and times
the render's arrival, and saves the viewer's and the report's screenshots (`DIR/view_<run>.png`,
`DIR/report_<run>.png`). `--gaussians N` also times the first frame of a copy of the first run whose model is
resampled to N Gaussians (each a copy of one of the model's, moved by up to a standard deviation): a model of
that size, not a better one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser import Browser, model_drawn, save_png  # noqa: E402

RECON3D = Path(sys.executable).with_name("recon3d")


def resampled_run(run: Path, n: int, where: Path) -> Path:
    """A run folder beside `run` (its cache, reports and run.json linked) whose published Gaussians are `n`."""
    from recon3d.io.splat_ply import read_splats, write_splats

    copy = where / f"{run.name}_{n // 1000}k"
    (copy / "gaussians").mkdir(parents=True)
    for name in ("cache", "reports", "run.json"):
        os.symlink((run / name).resolve(), copy / name)
    raw, _ = read_splats(run / "gaussians" / "point_cloud.ply")
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(raw["means"]), n)
    out = {k: v[pick] for k, v in raw.items()}
    out["means"] = out["means"] + rng.uniform(-1, 1, (n, 3)).astype(np.float32) * np.exp(out["scales"])
    write_splats(copy / "gaussians" / "point_cloud.ply", out)
    return copy


def measure(run: Path, shots: Path, port: int) -> dict:
    tic = time.perf_counter()
    proc = subprocess.Popen([str(RECON3D), "view", str(run), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        served = time.perf_counter() - tic
        url = line.split("view: ")[1].split()[0]
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile, Browser(Path(profile)) as browser:
            browser.open(url)
            shot = browser.wait_for(model_drawn, timeout=600, every=0.25)
            first = time.perf_counter() - tic
            time.sleep(5)  # the rest of the photos and the sorted splats
            save_png(browser.screenshot(), shots / f"view_{run.name}.png")
            render = None
            count = "document.querySelectorAll('img').length"
            before = browser.call("Runtime.evaluate", expression=count)["result"]["value"]
            found = browser.call("Runtime.evaluate", expression="!!document.evaluate(\"//button[contains(., "
                                 "'render from here')]\", document).iterateNext()")["result"]["value"]
            if found:
                t0 = time.perf_counter()
                browser.call("Runtime.evaluate", expression="document.evaluate(\"//button[contains(., 'render from "
                             "here')]\", document).iterateNext().click()")
                while browser.call("Runtime.evaluate", expression=count)["result"]["value"] <= before:
                    time.sleep(0.1)
                render = time.perf_counter() - t0
            errors = [e for e in browser.errors if "computeBoundingSphere" not in e]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    del shot
    report = run / "report.html"
    if report.is_file():  # its top: the summary, the pictures and the splat view once drawn
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile, \
                Browser(Path(profile), 1300, 2400) as browser:
            browser.open(report.resolve().as_uri())
            time.sleep(30)  # gsplat.js sorts the splats in its workers
            save_png(browser.screenshot(), shots / f"report_{run.name}.png")
    return {"run": run.name, "url_s": served, "first_frame_s": first, "render_from_here_s": render,
            "page_errors": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--shots", type=Path, required=True)
    parser.add_argument("--gaussians", type=int, default=0)
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = list(args.runs)
        if args.gaussians:
            runs.append(resampled_run(args.runs[0], args.gaussians, Path(tmp)))
        print(f"{'run':28s} {'URL s':>7s} {'first frame s':>14s} {'render from here s':>19s} {'page errors':>12s}")
        for i, run in enumerate(runs):
            m = measure(run, args.shots, 8300 + i)
            render = f"{m['render_from_here_s']:.2f}" if m["render_from_here_s"] is not None else "-"
            print(f"{m['run']:28s} {m['url_s']:7.2f} {m['first_frame_s']:14.2f} {render:>19s} "
                  f"{m['page_errors']:12d}", flush=True)
    print(f"screenshots in {args.shots}")


if __name__ == "__main__":
    main()
