"""How much a photo's EXIF exposure moves its pixel values, read off an SfM model (issue 19). Prints figures;
not a test.

    .venv/bin/python benchmarks/exposure.py --model OUT/sparse/0 --images PHOTOS

For each 3D point seen in two or more photos, the 3x3-pixel mean colour at each of its observations; the
slope of log2(grey value) against log2(exposure time x ISO / f-number^2) over the observations, each taken
about its point's mean, is how the same surface brightens from one photo to the next as the camera lets in
more light (1 for a linear sensor, about 0.45 through an sRGB curve, less where the camera's tone mapping
evens frames out). Observations near black or white are left out. Also prints each photo's exposure: what
`gaussians.exposure` / `nerf.exposure` (`auto`) feed the trainers; the slope per colour channel; and what one
gain, or a gain per channel, leaves of each photo's colour (its white balance, which no exposure predicts).
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
    dx, dy, seen_in = [], [], []  # exposure about the point's mean; log2 RGB about it (3,); the photo
    for point in rec.points3D.values():
        e, rgb, ids = [], [], []
        for el in point.track.elements:
            x, y = (int(v) for v in rec.images[el.image_id].points2D[el.point2D_idx].xy)
            img = pixels[el.image_id]
            if 1 <= x < img.shape[1] - 1 and 1 <= y < img.shape[0] - 1:
                e.append(exposure[el.image_id])
                rgb.append(img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0))
                ids.append(el.image_id)
        e, rgb = np.array(e), np.array(rgb)
        if len(e) < 2 or (rgb < 0.05).any() or (rgb > 0.95).any():
            continue
        dx.extend(e - e.mean())
        dy.extend(np.log2(rgb) - np.log2(rgb).mean(0))
        seen_in.extend(ids)
    dx, dy, seen_in = np.array(dx), np.array(dy), np.array(seen_in)
    grey = dy.mean(1)
    values = np.array(list(exposure.values()))
    print(f"\n{len(rec.images)} photos spanning {values.max() - values.min():.2f} stops (std {values.std():.2f}); "
          f"{len(dx)} observations of points seen twice or more")
    slope = (dx * grey).sum() / (dx * dx).sum()
    print(f"slope of log2(grey) on log2(exposure): {slope:.3f} (correlation {np.corrcoef(dx, grey)[0, 1]:.3f})")
    slopes = (dx[:, None] * dy).sum(0) / (dx * dx).sum()
    print("per channel (R, G, B): " + ", ".join(f"{s:.3f}" for s in slopes))
    # what a gain leaves of each photo's colour: its observations' mean offset, rms over the photos (log2)
    for what, residual in (("no gain", dy), ("one gain", dy - slope * dx[:, None]),
                           ("a gain per channel", dy - dx[:, None] * slopes)):
        offsets = np.array([residual[seen_in == i].mean(0) for i in rec.images if (seen_in == i).any()])
        print(f"{what}: per-photo colour offsets {np.sqrt((offsets ** 2).mean()):.4f} rms (log2)")

if __name__ == "__main__":
    main()
