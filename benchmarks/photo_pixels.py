"""The pixels a radiance field trains on, from large phone photos: undistort and downscale in one pass per image
(`recon3d.radiance.views.pixel_scene`) against the two passes it replaced (a full-size undistorted PNG twin
written, read back and area-averaged). Prints figures; not a test.

    .venv/bin/python benchmarks/photo_pixels.py --data ../shared/data/monstree --scale 4 --work /tmp/pixels

`--scale 4` makes monstree's 756x1008 photos 3024x4032 (12 Mpx, an iPhone's size; EXIF kept) in WORK/photos
first. Both ways run on the ingested scene's SIMPLE_RADIAL cameras (distortion 0.005) to a longest side of 512,
one process per core for the new way, as the radiance stages run it; the old way ran in the stage's process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def make_photos(data: Path, scale: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    source = data / "images" if (data / "images").is_dir() else data
    for path in sorted(source.glob("*.jpg")):
        target = folder / path.name
        if not target.is_file():
            with Image.open(path) as im:
                big = im.resize((im.width * scale, im.height * scale), Image.Resampling.LANCZOS)
                big.save(target, quality=92, exif=im.info.get("exif", b""))


def old_way(scene, ctx, max_side: int):
    """The two passes: `undistort_images` (full-size PNG twins), then each twin read and area-averaged."""
    from recon3d.calib.undistort import undistort_images
    from recon3d.io import images as image_io
    from recon3d.radiance.views import downscale_factor

    twins = undistort_images(scene, ctx)
    out = []
    for im in twins.images:
        cam = twins.cameras[im.camera_id]
        f = downscale_factor(cam.width, cam.height, 1.0, max_side)
        rgba = image_io.read_rgba(im.path)
        small = cv2.resize(rgba, (round(cam.width / f), round(cam.height / f)), interpolation=cv2.INTER_AREA)
        out.append(image_io.write_rgb(ctx.workdir / "old" / f"{im.name}.png", np.ascontiguousarray(small[..., :3])))
    return out


def main() -> None:
    from recon3d.dag.executor import LocalExecutor
    from recon3d.scene import Scene
    from recon3d.stages import ingest
    from recon3d.stages.base import StageContext

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/photo_pixels"))
    parser.add_argument("--max-side", type=int, default=512)
    args = parser.parse_args()
    photos = args.work / "photos"
    make_photos(args.data, args.scale, photos)
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(photos)))
    scene = scene.replace(cameras={cid: dataclasses.replace(cam, params=np.r_[cam.params[:3], 0.005])
                                   for cid, cam in scene.cameras.items()})
    sizes = sorted({f"{im.width}x{im.height}" for im in scene.images})
    print(f"{len(scene.images)} photos ({', '.join(sizes)}) in {photos}, to a longest side of {args.max_side}")
    from recon3d.radiance.views import pixel_scene

    for label in ("two passes (before)", "one pass (pixel_scene)"):
        work = args.work / label.split()[0]
        shutil.rmtree(work, ignore_errors=True)
        executor = LocalExecutor(workers=os.cpu_count() or 1)  # the command line's, one process per core
        ctx = StageContext(node_id="pixels", workdir=work, executor=executor)
        start = time.perf_counter()
        if label.startswith("two"):
            written = old_way(scene, ctx, args.max_side)
        else:
            written = [im.path for im in pixel_scene(scene, ctx, 1.0, args.max_side).images]
        seconds = time.perf_counter() - start
        executor.close()
        disk = sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) / 2**20
        print(f"{label:24s} {seconds:6.1f} s  {seconds / len(written):5.2f} s a photo  {disk:7.1f} MB on disk")
    old = sorted((args.work / "two").rglob("old/*.png"))
    new = {p.name: p for p in (args.work / "one").rglob("*.png")}
    worst = max(int(np.abs(cv2.imread(str(p)).astype(int) - cv2.imread(str(new[p.name]))).max()) for p in old)
    print(f"largest pixel difference between the two ways: {worst} (of 255)")


if __name__ == "__main__":
    main()
