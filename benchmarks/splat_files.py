"""Splat files of a finished Gaussians run: sizes, and the test views rendered from each file against the truth.

    .venv/bin/python benchmarks/splat_files.py RUN      # a `recon3d splat` output folder

Reads `RUN/gaussians/point_cloud.ply` (the 3DGS layout), writes its `.splat` and `.spz` copies afresh, renders
every test view of the run from the `.ply`, the `.splat` and the `.spz` read back (CPU rasterizer, the run's
background), and prints file sizes and mean PSNR against the test images (the `.splat` drops view-dependent
colour and quantises to 8 bits; the `.spz` keeps it, quantised to 4-5 bits).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from recon3d.io.splat_ply import read_splats
from recon3d.io.splat_spz import read_spz, write_spz
from recon3d.io.splat_web import read_dot_splat, write_dot_splat
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.trainer import render_view
from recon3d.radiance.metrics import psnr
from recon3d.radiance.views import BACKGROUNDS, load_views
from recon3d.report.html import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    ply = args.run / "gaussians" / "point_cloud.ply"
    model_json = json.loads(next((args.run / "cache").glob("gaussians-*/files/model.json")).read_text())
    background = torch.tensor(BACKGROUNDS[model_json["background"]], dtype=torch.float32)
    _, _, scene = load_run(args.run)
    views = load_views(scene, model_json["test"], tuple(background.tolist()))
    tensors, degree = read_splats(ply)
    with tempfile.TemporaryDirectory() as tmp:
        splat = write_dot_splat(Path(tmp) / "point_cloud.splat", tensors)
        spz = write_spz(Path(tmp) / "point_cloud.spz", tensors)
        sizes = {"ply": ply.stat().st_size, "splat": splat.stat().st_size, "spz": spz.stat().st_size}
        models = {"ply": GaussianModel.from_tensors({k: torch.from_numpy(v) for k, v in tensors.items()}, degree),
                  "splat": GaussianModel.from_tensors({k: torch.from_numpy(v) for k, v in
                                                       read_dot_splat(splat).items()}, 0),
                  "spz": GaussianModel.from_tensors({k: torch.from_numpy(v) for k, v in read_spz(spz).items()},
                                                    degree)}
    print(f"{args.run}: {len(tensors['means'])} Gaussians, SH degree {degree}; " + ", ".join(
        f"point_cloud.{k} {v / 2**20:.2f} MiB ({v / sizes['ply']:.1%})" for k, v in sizes.items()))
    for name, model in models.items():
        with torch.no_grad():
            scores = [psnr(render_view(model, v, background, "cpu")[0].clamp(0, 1), v.image) for v in views]
        print(f"{name}: mean test PSNR {np.mean(scores):.2f} dB over {len(views)} views")


if __name__ == "__main__":
    main()
