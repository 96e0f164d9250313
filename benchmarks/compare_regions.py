"""Where two radiance models differ: held-out PSNR over the whole photo, its near half and its far half.

    .venv/bin/python benchmarks/compare_regions.py OUT [--depth-from gaussians-s0]

OUT is a finished `recon3d compare` run (its renders in OUT/renders/<node>/). Each held-out photo's pixels
are split at the median of one model's rendered depth (`--depth-from`, default the first model): the near
half is mostly the subject, the far half the background and sky. The photos are read as the training read
them (the run's downscale, undistorted), so the figures are the evaluate stage's, split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from recon3d.radiance.metrics import psnr
from recon3d.radiance.renderers import model_meta
from recon3d.radiance.views import background_colour, load_views, radiance_scene
from recon3d.report.html import load_run
from recon3d.stages.base import StageContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--depth-from", default=None, help="the model whose depth splits the pixels")
    args = parser.parse_args()
    _, _, scene = load_run(args.out)
    models = sorted(n for n in scene.radiance if (args.out / "renders" / n).is_dir())
    if not models:
        raise SystemExit(f"{args.out}: no renders of a radiance model in {args.out / 'renders'}")
    split_by = args.depth_from or models[0]
    if split_by not in models:
        raise SystemExit(f"--depth-from {split_by}: no renders of it in {args.out / 'renders'}; one of {models}")
    meta = model_meta(scene.radiance[models[0]])
    source = radiance_scene(scene, StageContext.standalone("regions"), meta["test"], meta.get("downscale", 1.0),
                            meta.get("max_side", 0))
    print(f"{args.out}: pixels split at the median of {split_by}'s depth")
    print("| view | region | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for view in load_views(source, meta["test"], background_colour(meta)):
        stem = Path(view.name).stem
        photo = view.image.double()
        depth = np.load(args.out / "renders" / split_by / f"{stem}_depth.npy").squeeze()
        near = torch.from_numpy((depth > 0) & (depth < np.median(depth[depth > 0])))
        renders = {m: torch.from_numpy(cv2.imread(str(args.out / "renders" / m / f"{stem}.png"))[..., ::-1] / 255.0)
                   for m in models}
        for region, mask in (("all", torch.ones_like(near)), ("near half", near), ("far half", ~near)):
            print(f"| {stem} | {region} | "
                  + " | ".join(f"{psnr(renders[m][mask], photo[mask]):.2f}" for m in models) + " |")


if __name__ == "__main__":
    main()
