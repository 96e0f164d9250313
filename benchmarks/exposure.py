"""How much a photo's EXIF exposure moves its pixel values, read off an SfM model (issue 19). Prints figures;
not a test.

    .venv/bin/python benchmarks/exposure.py --model OUT/sparse/0 --images PHOTOS

For each 3D point seen in two or more photos, the 3x3-pixel mean colour at each of its observations; the
slope of log2(grey value) against log2(exposure time x ISO / f-number^2) over the observations, each taken
about its point's mean, is how the same surface brightens from one photo to the next as the camera lets in
more light (1 for a linear sensor, about 0.45 through an sRGB curve, less where the camera's tone mapping
evens frames out). Observations near black or white are left out. Also prints each photo's exposure: what
`gaussians.exposure` / `nerf.exposure` (`auto`) feed the trainers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pycolmap

from recon3d.io.images import exif_exposure, read_rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a COLMAP model folder (OUT/sparse/0)")
    ap.add_argument("--images", required=True, help="the photo folder the model was made from")
    args = ap.parse_args()
    rec = pycolmap.Reconstruction(args.model)
    exposure, pixels = {}, {}
    for image_id, image in rec.images.items():
        path = Path(args.images) / image.name
        exposure[image_id] = exif_exposure(path)
        pixels[image_id] = read_rgb(path).astype(np.float64) / 255.0
        print(f"{image.name}: log2 exposure {exposure[image_id]}")
    if any(e is None for e in exposure.values()):
        print("some photos record no exposure: the trainers' exposure model stays off for this folder")
        return
    dx, dy = [], []
    for point in rec.points3D.values():
        e, grey = [], []
        for el in point.track.elements:
            x, y = (int(v) for v in rec.images[el.image_id].points2D[el.point2D_idx].xy)
            img = pixels[el.image_id]
            if 1 <= x < img.shape[1] - 1 and 1 <= y < img.shape[0] - 1:
                e.append(exposure[el.image_id])
                grey.append(img[y - 1:y + 2, x - 1:x + 2].mean())
        e, grey = np.array(e), np.array(grey)
        if len(e) < 2 or (grey < 0.05).any() or (grey > 0.95).any():
            continue
        dx.extend(e - e.mean())
        dy.extend(np.log2(grey) - np.log2(grey).mean())
    dx, dy = np.array(dx), np.array(dy)
    values = np.array(list(exposure.values()))
    print(f"\n{len(rec.images)} photos spanning {values.max() - values.min():.2f} stops (std {values.std():.2f}); "
          f"{len(dx)} observations of points seen twice or more")
    print(f"slope of log2(grey) on log2(exposure): {(dx * dy).sum() / (dx * dx).sum():.3f} "
          f"(correlation {np.corrcoef(dx, dy)[0, 1]:.3f})")


if __name__ == "__main__":
    main()
