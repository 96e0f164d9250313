"""`recon3d export OUT --format F --to DIR`: a finished run as a folder another tool opens, moved anywhere.

- `nerfstudio`: `DIR/images/` (the posed photos, copied as they are: the cameras keep their distortion),
  `DIR/sparse_pc.ply` (the sparse points with colour) and `DIR/transforms.json` with every path relative to
  DIR, `ply_file_path` and an identity `applied_transform` (the points are in the poses' frame), the layout
  `ns-process-data` writes, so `ns-train splatfacto --data DIR` starts from the SfM points; with the
  held-out split of the run's trained model (or the data's own) as `{train,val,test}_filenames`, val the
  same as test (nerfstudio evaluates on `val` unless told `test`);
- `colmap`: `DIR/sparse/0/{cameras,images,points3D}.bin` and `DIR/images/`, COLMAP's project layout;
- `ply`: the trained Gaussians in the 3DGS layout, `DIR/point_cloud.ply`;
- `splat`: the same as antimatter15's `.splat` for web viewers, `DIR/point_cloud.splat` (lossy: degree-0
  colour in 8 bits; also for runs trained before the Gaussians stage wrote one);
- `spz`: the same as Niantic's compressed `.spz`, `DIR/point_cloud.spz` (about a tenth of the `.ply`,
  view-dependent colour kept).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.io import colmap, nerfstudio, ply
from recon3d.io.files import read_json
from recon3d.io.splat_ply import read_splats
from recon3d.io.splat_spz import write_spz
from recon3d.io.splat_web import write_dot_splat
from recon3d.report.html import load_run
from recon3d.report.web_splat import gaussians_folder
from recon3d.scene import Scene

FORMATS = ("nerfstudio", "colmap", "ply", "splat", "spz")
IDENTITY = np.eye(4)[:3].tolist()


def export_run(out: Path, fmt: str, to: Path) -> list[Path]:
    """Write run `out` as `fmt` into folder `to`; returns the files and folders written."""
    fmt = fmt.lower()  # SPZ, PLY: as file suffixes are written
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        what = "a file" if not to.is_dir() else "a folder that already holds files"
        raise DataError(f"--to {to} is {what}: an export mixed into it could not be told apart",
                        "give a new or empty folder")
    if fmt in ("ply", "splat", "spz"):
        return [_gaussians(out, fmt, to)]
    _, _, scene = load_run(out)
    if scene is None or not scene.poses:
        raise DataError(f"{out} has no posed images yet", "run structure from motion first: "
                        "recon3d run sfm --data PHOTOS --out OUT")
    scene = _with_training_split(scene.replace(points=scene.posed_points()))
    images = _copy_images(scene, to / "images")
    if fmt == "colmap":
        return [colmap.write_model(scene, to / "sparse" / "0", binary=True), images]
    points = None
    if scene.points is not None and len(scene.points):
        points = ply.write_points(to / "sparse_pc.ply", scene.points.xyz, scene.points.rgb)
    transforms = nerfstudio.write_transforms(scene, to / "transforms.json", image_root=images, ply_path=points,
                                             applied_transform=IDENTITY if points is not None else None)
    return [transforms, images] + ([points] if points is not None else [])


def _with_training_split(scene: Scene) -> Scene:
    """The scene with its images' split as the run's last trained model held them out (its model.json's train
    and test lists), so that the export carries the held-out views a photo folder's split was made at
    training time; a scene without a trained model keeps its data's own split."""
    if not scene.radiance:
        return scene
    meta_path = Path(list(scene.radiance.values())[-1].path).with_name("model.json")
    if not meta_path.is_file():
        return scene
    meta = read_json(meta_path)
    test, train = set(meta.get("test", [])), set(meta.get("train", []))
    return scene.replace(images=tuple(
        dataclasses.replace(im, split="test" if im.name in test else "train" if im.name in train else im.split)
        for im in scene.images))


def _gaussians(out: Path, fmt: str, to: Path) -> Path:
    folder = gaussians_folder(out, load_run(out)[2])
    if folder is None:
        raise DataError(f"{out} holds no trained Gaussians (no OUT/<node>/point_cloud.ply of a gaussians node)",
                        "train them first: recon3d splat --data DATA --out OUT (or recon3d compare)")
    source = folder / "point_cloud.ply"
    if fmt == "ply":
        to.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(source, to / "point_cloud.ply"))
    tensors, _ = read_splats(source)
    if fmt == "spz":
        return write_spz(to / "point_cloud.spz", tensors)
    return write_dot_splat(to / "point_cloud.splat", tensors)


def _copy_images(scene: Scene, folder: Path) -> Path:
    """Copy the posed images to `folder/<image name>` (unchanged bytes)."""
    for im in scene.images:
        if im.name in scene.poses:
            target = folder / im.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(im.path, target)
            except OSError as exc:
                raise DataError(f"cannot copy image {im.path}: {exc.strerror or exc}",
                                "the run's photos must still be where it read them") from exc
    return folder
