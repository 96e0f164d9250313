"""A synthetic scene written as a dataset a user would have: images plus nerfstudio or COLMAP files,
with the exact truth saved beside them in `ground_truth/` (a recon3d Scene)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recon3d.errors import ConfigError
from recon3d.geometry.camera_models import MODELS
from recon3d.io import colmap, nerfstudio
from recon3d.scene import Scene
from recon3d.synthetic.generate import make_scene
from recon3d.synthetic.rigs import RIGS
from recon3d.synthetic.surfaces import TexturedQuad

FORMATS = ("nerfstudio", "colmap")


def write_dataset(out: str | Path, fmt: str = "nerfstudio", rig: str = "orbit", model: str = "OPENCV",
                  n_images: int = 12, n_points: int = 2000, width: int = 320, height: int = 240, seed: int = 0,
                  alpha: bool = False, world: list[TexturedQuad] | None = None) -> Scene:
    """Render the scene into `out/images/`, write `out/transforms.json` (fmt "nerfstudio") or
    `out/sparse/0` (fmt "colmap", with the true points and tracks), and save the truth to
    `out/ground_truth/`. Image names in the truth are those ingest will read back; its paths are saved
    relative to `out`; the truth's observations are exact (for noisy ones, `make_scene(noise_px=...)` or
    `noisy_matches`). With `alpha` the images are RGBA, transparent where no surface is (as Blender's synthetic
    scenes). `world` replaces `make_world(seed)`. Returns the truth (absolute paths)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    if rig not in RIGS:
        raise ConfigError(f"unknown rig {rig!r}", f"choose one of: {', '.join(RIGS)}")
    if model not in MODELS:
        raise ConfigError(f"unknown camera model {model!r}", f"choose one of: {', '.join(MODELS)}")
    out = Path(out).resolve()
    truth, _ = make_scene(out, rig=rig, model=model, n_images=n_images, n_points=n_points, width=width,
                          height=height, seed=seed, alpha=alpha, world=world)
    if fmt == "nerfstudio":
        truth = _prefix_names(truth, "images/")  # nerfstudio names are relative to the data folder
        nerfstudio.write_transforms(truth, out / "transforms.json")
    else:
        colmap.write_model(truth, out / "sparse" / "0")
    _relative_paths(truth, out).save(out / "ground_truth")
    return truth


def write_labeled_dataset(out: str | Path, n_images: int = 24, width: int = 320, height: int = 240,
                          seed: int = 0, moving: bool = False, n_points: int = 3000) -> Scene:
    """`make_labeled_scene` as a labeled nerfstudio dataset: `out/images/`, `out/transforms.json`,
    `out/labels.json` (COCO: boxes and RLE masks, `file_name` = the image name ingest reads back) and the
    truth, labels included, in `out/ground_truth/`. Returns the truth (absolute paths); the world's
    object ids come back from `surfaces.make_labeled_world(seed, 3)`."""
    from recon3d.io.labels import write_coco
    from recon3d.synthetic.labeled import make_labeled_scene

    out = Path(out).resolve()
    truth, _ = make_labeled_scene(out, n_images=n_images, width=width, height=height, seed=seed, moving=moving,
                                  n_points=n_points)
    truth = _prefix_names(truth, "images/")
    nerfstudio.write_transforms(truth, out / "transforms.json")
    write_coco(out / "labels.json", truth.class_names, truth.labels, truth.images)
    _relative_paths(truth, out).save(out / "ground_truth")
    return truth


def _relative_paths(scene: Scene, root: Path) -> Scene:
    """The truth as saved: paths relative to the dataset folder, so the folder can move (or be committed)."""
    images = tuple(dataclasses.replace(im, path=Path(im.path).relative_to(root).as_posix()) for im in scene.images)
    return scene.replace(images=images, source=dataclasses.replace(scene.source, path="."))


def _prefix_names(scene: Scene, prefix: str) -> Scene:
    images = tuple(dataclasses.replace(im, name=prefix + im.name) for im in scene.images)
    return scene.replace(images=images,
                         poses={prefix + k: v for k, v in scene.poses.items()},
                         features={prefix + k: v for k, v in scene.features.items()},
                         labels={prefix + k: v for k, v in scene.labels.items()})
