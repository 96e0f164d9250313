"""Meshes from trained models, measured: against exact surfaces, against silhouettes, and on real photos.

    .venv/bin/python benchmarks/mesh.py synthetic [--steps 5000] [--nerf-min 8] [--opaque] [--flatten W]
        [--variant mesh.depth=planar ...] [--out out/bench_mesh]
    .venv/bin/python benchmarks/mesh.py lego [--data ../shared/data/SYNTHETIC_nerf_lego_200px] [--out ...]
        [--budget-min 20] [--steps 10000] [--run FINISHED_SPLAT_RUN]
    .venv/bin/python benchmarks/mesh.py photos --data ../shared/data/sceaux_castle [--budget-min 10] [--out ...]
        [--run FINISHED_SPLAT_RUN]

Every mode runs the commands a user types (`recon3d splat`, `recon3d nerf`, `recon3d mesh OUT`), so a second
call with the same arguments reuses the trained models from the run folder's cache and measures the meshing
again.

- `synthetic`: a seeded scene of recon3d.synthetic (three boxes on a 6 x 6 ground; 48 orbit views, 320 x 240,
  PINHOLE, RGBA transparent where no surface is, as Blender's scenes; `--opaque`: on a grey background
  instead). Trains Gaussians (`--steps`; with `--flatten W` a second model with `gaussians.flatten=W`) and the
  NeRF (`--nerf-min` minutes), meshes them (`tsdf` from both, `poisson` from the Gaussians, `--variant`s) and
  scores each mesh against the true quads: accuracy (mesh -> truth), completeness (the truth the cameras saw
  -> mesh), Chamfer = their mean, as % of the extent (diagonal of the seen truth's bounds), F-score at 1 %
  of the extent.
- `lego`: meshes a Gaussians run on lego, renders the mesh from each test camera: silhouette IoU against the
  test images' alpha, and the PSNR of its vertex colours on white against the test images, beside the
  Gaussians' own test PSNR.
- `photos`: `recon3d mesh --data PHOTOS` (structure from motion, Gaussians, mesh): triangles, watertightness,
  wall time; the files are opened again with Open3D and trimesh.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RECON3D = str(Path(sys.executable).with_name("recon3d"))


def recon3d(*args) -> float:
    """Run a recon3d command as a user would; its wall time. Stops the benchmark on a failure."""
    cmd = [RECON3D, *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return time.perf_counter() - tic


def mesh(run: Path, *sets: str, backend: str = "tsdf") -> tuple[dict, float]:
    wall = recon3d("mesh", run, "--backend", backend, *[a for s in sets for a in ("--set", s)])
    return json.loads((run / "mesh.json").read_text()), wall


def synthetic(args) -> None:
    from recon3d.io.mesh import read_mesh
    from recon3d.surface import fuse, measure
    from recon3d.synthetic.dataset import write_dataset
    from recon3d.synthetic.render import render
    from recon3d.synthetic.surfaces import make_world, quad_mesh

    out = Path(args.out)
    data = out / ("data_opaque" if args.opaque else "data_alpha")
    quads = make_world(0)[:-1]  # no backdrop wall: boxes on a ground, an object-centric capture as lego or DTU
    if not (data / "transforms.json").is_file():
        write_dataset(data, rig="orbit", model="PINHOLE", n_images=48, width=320, height=240, seed=0,
                      alpha=not args.opaque, world=quads)
    truth_scene = __import__("recon3d.scene", fromlist=["Scene"]).Scene.load(data / "ground_truth")
    seen = []
    for im in truth_scene.images:
        cam = truth_scene.cameras[im.camera_id]
        _, depth = render(quads, cam, truth_scene.poses[im.name])
        frame = fuse.DepthFrame(np.where(np.isfinite(depth), depth, 0).astype(np.float32),
                                np.zeros((*depth.shape, 3), np.uint8), cam.K, truth_scene.poses[im.name])
        seen.append(fuse.backproject(frame, stride=2)[0])
    seen = np.concatenate(seen)
    extent = float(np.linalg.norm(seen.max(0) - seen.min(0)))
    truth = measure.o3d_mesh(*quad_mesh(quads))
    print(f"truth: {len(quads)} quads, {len(seen)} seen surface points, extent {extent:.3f}")

    runs = {"gaussians": out / ("splat_opaque" if args.opaque else "splat_alpha"),
            "nerf": out / ("nerf_opaque" if args.opaque else "nerf_alpha")}
    recon3d("splat", "--data", data, "--out", runs["gaussians"], "--steps", args.steps)
    if args.nerf_min:
        recon3d("nerf", "--data", data, "--out", runs["nerf"], "--budget-min", args.nerf_min)
    if args.flatten:
        runs["flat"] = out / f"splat_flatten{args.flatten:g}_{'opaque' if args.opaque else 'alpha'}"
        recon3d("splat", "--data", data, "--out", runs["flat"], "--steps", args.steps,
                "--set", f"gaussians.flatten={args.flatten}")
    cases = [("gaussians", "tsdf", ()), ("gaussians", "poisson", ())]
    cases += [("gaussians", "tsdf", tuple(v.split(","))) for v in args.variant]
    if args.flatten:
        cases += [("flat", "tsdf", ()), ("flat", "tsdf", ("mesh.depth=planar",))]
    if args.nerf_min:
        cases.append(("nerf", "tsdf", ()))
    print(f"\n{'model':10} {'backend':8} {'variant':28} {'PSNR':>6} {'Chamfer %':>9} {'F@1%':>6} {'acc %':>7} "
          f"{'comp %':>7} {'triangles':>10} {'mesh s':>7} {'peak MB':>8}")
    for kind, backend, sets in cases:
        entry, wall = mesh(runs[kind], *sets, backend=backend)
        psnr = json.loads((runs[kind] / "metrics.json").read_text())["psnr"]
        score = measure.score_surface(read_mesh(runs[kind] / "mesh.ply"), truth, seen, 0.01 * extent)
        print(f"{kind:10} {backend:8} {','.join(sets) or 'default':28} {psnr:6.2f} {100 * score.chamfer / extent:9.3f} "
              f"{score.fscore:6.3f} {100 * score.accuracy / extent:7.3f} {100 * score.completeness / extent:7.3f} "
              f"{entry['triangles']:10d} {wall:7.1f} {entry['peak_memory_mb']:8.0f}", flush=True)


def lego(args) -> None:
    import torch

    from recon3d.io.images import read_rgba
    from recon3d.io.mesh import read_mesh
    from recon3d.radiance.metrics import psnr
    from recon3d.report.html import load_run
    from recon3d.surface import measure

    run = Path(args.run or args.out)
    if not args.run:
        recon3d("splat", "--data", args.data, "--out", run, "--budget-min", args.budget_min, "--steps", args.steps)
    entry, wall = mesh(run, *args.set)
    print(f"mesh: {entry['triangles']} triangles, {entry['vertices']} vertices, watertight {entry['watertight']}, "
          f"voxel {entry['voxel']:.4g}; `recon3d mesh` {wall:.1f} s wall, peak {entry['peak_memory_mb']:.0f} MB")
    _, _, scene = load_run(run)
    model = read_mesh(run / "mesh.ply")
    ious, psnrs = [], []
    for im in scene.images:
        if im.split != "test":
            continue
        cam = scene.cameras[im.camera_id]
        rgba = read_rgba(im.path).astype(np.float64) / 255
        view = measure.raycast_view(model, cam.K, scene.poses[im.name], cam.width, cam.height)
        ious.append(measure.silhouette_iou(view, rgba[..., 3] > 0.5))
        target = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])  # on white, as the Gaussians are scored
        render = np.where(view.hit[..., None], view.rgb, 1.0)
        psnrs.append(float(psnr(torch.from_numpy(render).float(), torch.from_numpy(target).float())))
    gaussians = json.loads((run / "metrics.json").read_text())["psnr"]
    print(f"{len(ious)} test views: silhouette IoU mean {np.mean(ious):.4f} (min {np.min(ious):.4f}); mesh colour "
          f"PSNR {np.mean(psnrs):.2f} dB; Gaussians' test PSNR {gaussians:.2f} dB")


def photos(args) -> None:
    import trimesh

    from recon3d.io.mesh import read_mesh

    run = Path(args.run or args.out)
    tic = time.perf_counter()
    if args.run:  # a finished run: mesh its model
        mesh(run, *args.set)
    else:
        recon3d("mesh", "--data", args.data, "--out", run, "--budget-min", args.budget_min,
                *[a for s in args.set for a in ("--set", s)])
    wall = time.perf_counter() - tic
    metrics = json.loads((run / "metrics.json").read_text())
    if args.run:
        entry = json.loads((run / "mesh.json").read_text())
        report = {"seconds": wall, "counts": {k: entry[k] for k in ("triangles", "vertices", "watertight", "voxel")}
                  | {"peak_memory_mb": round(entry["peak_memory_mb"])}}
    else:
        report = json.loads((run / "reports" / "mesh.json").read_text())
    o3d_mesh = read_mesh(run / "mesh.ply")
    loaded = {fmt: trimesh.load(run / f"mesh.{fmt}", force="mesh") for fmt in ("ply", "obj", "glb")}
    counts = report["counts"]
    print(f"data {args.data}: test PSNR {metrics['psnr']:.2f} dB; mesh {counts['triangles']} triangles, "
          f"{counts['vertices']} vertices, watertight {counts['watertight']}, voxel {counts['voxel']:.4g}; "
          f"mesh node {report['seconds']:.1f} s, peak {counts['peak_memory_mb']} MB; whole command {wall:.0f} s")
    print(f"reopened: Open3D {len(o3d_mesh.triangles)} triangles; trimesh " +
          ", ".join(f"{fmt} {len(m.faces)} faces" for fmt, m in loaded.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["synthetic", "lego", "photos"])
    ap.add_argument("--data", default="../shared/data/SYNTHETIC_nerf_lego_200px")
    ap.add_argument("--out", default="out/bench_mesh")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--nerf-min", type=float, default=8.0)
    ap.add_argument("--flatten", type=float, default=0.0, help="synthetic: also train with gaussians.flatten=W")
    ap.add_argument("--opaque", action="store_true", help="synthetic: images on a grey background, no alpha")
    ap.add_argument("--variant", action="append", default=[], help="synthetic: another tsdf mesh of the Gaussians "
                    "with these settings, e.g. mesh.views=train,mesh.resolution=1024")
    ap.add_argument("--set", action="append", default=[], help="lego, photos: node.key=value")
    ap.add_argument("--run", default="", help="lego, photos: mesh this finished run (`recon3d splat --out`) instead "
                    "of training")
    args = ap.parse_args()
    {"synthetic": synthetic, "lego": lego, "photos": photos}[args.mode](args)


if __name__ == "__main__":
    main()
