"""nerfstudio `transforms.json` and Blender / NeRF-synthetic `transforms_{train,val,test}.json`.

The axis convention changes here and nowhere else in recon3d. Both formats store each frame's
`transform_matrix` as camera-to-world with OpenGL camera axes (x right, y up, z back); recon3d stores
`cam_from_world` with OpenCV camera axes (x right, y down, z forward), as COLMAP does. Flipping the
camera's y and z axes converts one into the other: `world_from_cam_opencv = c2w_opengl @ diag(1, -1, -1, 1)`.

Intrinsics copy unchanged: nerfstudio's cx, cy use COLMAP's pixel convention (cx = W / 2 is the centre).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.errors import DataError
from recon3d.geometry import camera_models
from recon3d.geometry.rotation import invert_rigid
from recon3d.io.files import read_json, write_json
from recon3d.io.images import image_size
from recon3d.scene import Camera, ImageInfo, Scene, Source

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera axes: flips y and z; it is its own inverse
SPLITS = ("train", "val", "test")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # the order of nerfstudio's `distortion_params`
INTRINSIC_KEYS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "distortion_params") + DISTORTION_KEYS
PERSPECTIVE = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")  # nerfstudio's names
# recon3d model -> (nerfstudio camera_model, nerfstudio names of its distortion parameters, COLMAP order)
_EXPORTED = {
    "SIMPLE_PINHOLE": ("PINHOLE", ()),
    "PINHOLE": ("PINHOLE", ()),
    "SIMPLE_RADIAL": ("OPENCV", ("k1",)),
    "RADIAL": ("OPENCV", ("k1", "k2")),
    "OPENCV": ("OPENCV", ("k1", "k2", "p1", "p2")),
    "FULL_OPENCV": ("OPENCV", ("k1", "k2", "p1", "p2", "k3")),  # only when k4 = k5 = k6 = 0
    "OPENCV_FISHEYE": ("OPENCV_FISHEYE", ("k1", "k2", "k3", "k4")),
}
Frame = tuple[Path, Camera, np.ndarray, str, Path | None]  # image, camera, c2w OpenGL (4, 4), split, mask


def opengl_c2w_to_cam_from_world(c2w: np.ndarray) -> np.ndarray:
    """c2w: (4, 4) camera-to-world, OpenGL camera axes (x right, y up, z back).

    Returns `cam_from_world` (4, 4) float64, OpenCV camera axes (x right, y down, z forward).
    """
    return invert_rigid(np.asarray(c2w, dtype=np.float64) @ OPENGL_FROM_OPENCV)


def cam_from_world_to_opengl_c2w(cam_from_world: np.ndarray) -> np.ndarray:
    """The inverse of `opengl_c2w_to_cam_from_world`: (4, 4) OpenCV `cam_from_world` -> (4, 4) OpenGL c2w."""
    return invert_rigid(cam_from_world) @ OPENGL_FROM_OPENCV


def read_transforms(folder: str | Path) -> Scene:
    """Read a nerfstudio folder (`transforms.json`) or a Blender one (`transforms_{train,val,test}.json`).

    Image names are paths relative to `folder`, image paths are absolute; one camera per distinct set of
    intrinsics, ids from 1; every frame's pose goes into `poses` as `cam_from_world` (4, 4), OpenCV axes.
    """
    folder = Path(os.path.abspath(folder))
    if (folder / "transforms.json").is_file():
        return _assemble(folder, "nerfstudio", _nerfstudio_frames(folder))
    if any((folder / f"transforms_{split}.json").is_file() for split in SPLITS):
        return _assemble(folder, "blender", _blender_frames(folder))
    raise DataError(f"{folder} has no transforms.json nor transforms_{{train,val,test}}.json",
                    "pass a nerfstudio folder or a Blender / NeRF-synthetic folder")


def ply_file_path(folder: str | Path) -> str:
    """The `ply_file_path` a nerfstudio folder's transforms.json names ('' for none). recon3d does not read the
    cloud: a point without its track (which images see it) cannot be kept to the training views."""
    try:
        meta = read_json(Path(folder) / "transforms.json")
    except (OSError, DataError):
        return ""
    value = meta.get("ply_file_path") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else ""


def write_transforms(scene: Scene, path: str | Path, image_root: str | Path | None = None,
                     ply_path: str | Path | None = None, absolute_paths: bool = False,
                     applied_transform: list[list[float]] | None = None) -> Path:
    """Write the scene's posed images as a nerfstudio `transforms.json` at `path`, atomically.

    image_root: folder holding the images under their scene names; None uses each image's `path`.
    ply_path: a point cloud to name in `ply_file_path`; applied_transform: the 3 x 4 map from that cloud's frame
    to the poses' (nerfstudio applies it to the points only). Paths are written relative to the JSON's folder,
    except that `absolute_paths` writes the image and mask paths absolute (for a file that will be copied).
    Intrinsics go top-level when the written images share one camera, else into every frame; images
    without a pose are left out. Splits go into `{train,val,test}_filenames` (val = test when the scene has no
    val images: nerfstudio evaluates on val unless told otherwise).
    """
    path = Path(path)
    posed = [im for im in scene.images if im.name in scene.poses]
    if not posed:
        raise DataError(f"cannot write {path}: the scene has no posed images",
                        "run structure from motion first, or ingest posed data")
    camera_ids = sorted({im.camera_id for im in posed})
    intrinsics = {cid: _export_camera(scene.cameras[cid], path) for cid in camera_ids}
    models = {d.pop("camera_model") for d in intrinsics.values()}
    if models == {"PINHOLE", "OPENCV"}:
        models = {"OPENCV"}  # a pinhole camera is an OPENCV camera without distortion
    if len(models) > 1:
        raise DataError(f"cannot write {path}: nerfstudio takes one camera_model per file, the scene has "
                        f"{sorted(models)}", "undistort the images first, or export the cameras separately")
    meta: dict[str, Any] = {"camera_model": models.pop()}
    shared = len(intrinsics) == 1
    if shared:
        meta.update(next(iter(intrinsics.values())))

    def relative(file: str | Path) -> str:
        return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(path.parent))).as_posix()

    image_path = (lambda file: Path(os.path.abspath(file)).as_posix()) if absolute_paths else relative
    frames = []
    for im in posed:
        frame = {"file_path": image_path(Path(image_root) / im.name if image_root is not None else im.path),
                 "transform_matrix": cam_from_world_to_opengl_c2w(scene.poses[im.name]).tolist()}
        if im.mask_path:
            frame["mask_path"] = image_path(im.mask_path)
        if not shared:
            frame.update(intrinsics[im.camera_id])
        frames.append(frame)
    meta["frames"] = frames
    for split in SPLITS:
        files = [frame["file_path"] for im, frame in zip(posed, frames, strict=True) if im.split == split]
        if files:
            meta[f"{split}_filenames"] = files
    if "test_filenames" in meta and "val_filenames" not in meta:  # nerfstudio's eval split is val by default:
        meta["val_filenames"] = meta["test_filenames"]  # without it `ns-train` stops on "split val is missing"
    if ply_path is not None:
        meta["ply_file_path"] = relative(ply_path)
    if applied_transform is not None:
        meta["applied_transform"] = applied_transform
    return write_json(path, meta)


# -- reading -----------------------------------------------------------------------------------------------

def _nerfstudio_frames(folder: Path) -> list[Frame]:
    file = folder / "transforms.json"
    meta, frame_list = _load(file)
    top = {key: meta[key] for key in INTRINSIC_KEYS if key in meta}
    with _malformed(f"{file}, {{train,val,test}}_filenames"):
        split_of = {_path(folder, name): split
                    for split in SPLITS for name in meta.get(f"{split}_filenames", [])}
    frames = []
    for i, frame in enumerate(frame_list):
        with _malformed(f"{file}, frame {i}"):
            image = _existing(folder, frame["file_path"], file, "image")
            mask = _existing(folder, frame["mask_path"], file, "mask") if "mask_path" in frame else None
            intrinsics = top | {key: frame[key] for key in INTRINSIC_KEYS if key in frame}
            if "w" in intrinsics and "h" in intrinsics:
                width, height = int(intrinsics["w"]), int(intrinsics["h"])
            else:
                width, height = image_size(image)
            camera = _import_camera(intrinsics, width, height)
            frames.append((image, camera, _c2w(frame["transform_matrix"]), split_of.get(image, ""), mask))
    return frames


def _blender_frames(folder: Path) -> list[Frame]:
    frames = []
    for split in SPLITS:
        file = folder / f"transforms_{split}.json"
        if not file.is_file():
            continue
        meta, frame_list = _load(file)
        for i, frame in enumerate(frame_list):
            with _malformed(f"{file}, frame {i}"):
                image = _path(folder, frame["file_path"])  # NeRF-synthetic leaves out the extension
                if not image.is_file():
                    image = _existing(folder, frame["file_path"] + ".png", file, "image")
                width, height = image_size(image)
                f = 0.5 * width / math.tan(0.5 * float(meta["camera_angle_x"]))
                params = camera_models.make_params("PINHOLE", (f, f), (width / 2, height / 2))
                frames.append((image, Camera("PINHOLE", width, height, params),
                               _c2w(frame["transform_matrix"]), split, None))
    return frames


def _assemble(folder: Path, fmt: str, frames: list[Frame]) -> Scene:
    cameras: dict[int, Camera] = {}
    camera_ids: dict[tuple, int] = {}
    images, poses = [], {}
    root = _names_root(folder, [frame[0] for frame in frames])
    for image, camera, c2w, split, mask in frames:
        camera_id = camera_ids.setdefault((camera.model, camera.width, camera.height, tuple(camera.params)),
                                          len(camera_ids) + 1)
        cameras.setdefault(camera_id, camera)
        name = Path(os.path.relpath(image, root)).as_posix()
        if name in poses:
            raise DataError(f"{folder}: image {name} appears in more than one frame",
                            "list each image once in the transforms file(s)")
        images.append(ImageInfo(name, str(image), camera_id, camera.width, camera.height,
                                mask_path=None if mask is None else str(mask), split=split))
        poses[name] = opengl_c2w_to_cam_from_world(c2w)
    return Scene(source=Source(str(folder), fmt), images=tuple(images), cameras=cameras, poses=poses)


def _names_root(folder: Path, images: list[Path]) -> str:
    """The folder image names are relative to: the data folder, or, when some image lies outside it (recon3d's
    export names the photos by absolute path), the deepest folder holding them all: `100_7100.jpg`, as the
    photo folder named them, not `../../data/sceaux_castle/images/100_7100.jpg`."""
    root = os.path.abspath(folder)
    paths = [os.path.abspath(image) for image in images]
    if not paths or all(os.path.commonpath([root, p]) == root for p in paths):
        return root
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def _import_camera(intrinsics: dict[str, Any], width: int, height: int) -> Camera:
    """A recon3d Camera from nerfstudio intrinsics; the distortion decides the COLMAP model."""
    model = intrinsics.get("camera_model", "OPENCV")  # nerfstudio's default
    fx = float(intrinsics["fl_x"])
    focal = (fx, float(intrinsics.get("fl_y", fx)))
    principal = (float(intrinsics["cx"]), float(intrinsics["cy"]))
    values = intrinsics.get("distortion_params") or [intrinsics.get(key, 0.0) for key in DISTORTION_KEYS]
    k1, k2, k3, k4, p1, p2 = (float(v) for v in values)
    if model == "OPENCV_FISHEYE":
        chosen, distortion = "OPENCV_FISHEYE", (k1, k2, k3, k4)
    elif model not in PERSPECTIVE:
        raise ValueError(f"camera_model {model!r} is not supported; recon3d reads "
                         f"{', '.join(PERSPECTIVE)}, OPENCV_FISHEYE")
    elif k4:
        raise ValueError("k4 (an r^8 radial term) has no COLMAP camera model; undistort the images first")
    elif k3:
        chosen, distortion = "FULL_OPENCV", (k1, k2, p1, p2, k3)
    elif model == "OPENCV" or any((k1, k2, p1, p2)):
        chosen, distortion = "OPENCV", (k1, k2, p1, p2)
    else:
        chosen, distortion = "PINHOLE", ()
    return Camera(chosen, width, height, camera_models.make_params(chosen, focal, principal, distortion))


def _c2w(value: Any) -> np.ndarray:
    """A frame's `transform_matrix` as (4, 4) float64; ValueError unless it is rigid.

    A matrix with NaN or inf passes through as it is: the ingest stage keeps such an image unposed and says so.
    """
    c2w = np.asarray(value, dtype=np.float64)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4):
        raise ValueError(f"transform_matrix must be 4x4, got shape {c2w.shape}")
    if not np.isfinite(c2w).all():
        return c2w
    rotation = c2w[:3, :3]
    if (not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0
            or not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0])):
        raise ValueError("transform_matrix is not a rigid transform (rotation and translation only)")
    return c2w


def _load(file: Path) -> tuple[dict[str, Any], list]:
    """The file's JSON object and its `frames` list; DataError naming the file if it has none."""
    try:
        meta = read_json(file)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {file}: {exc}", "fix the JSON file or regenerate it") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise DataError(f"{file} has no `frames` list", "fix the file: a JSON object with a `frames` list")
    return meta, meta["frames"]


@contextmanager
def _malformed(where: str) -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where} is malformed ({type(exc).__name__}: {exc})",
                        "fix the frame; it needs file_path, transform_matrix and the camera's intrinsics",
                        ) from exc


def _path(folder: Path, file_path: str) -> Path:
    return Path(os.path.normpath(folder / file_path))


def _existing(folder: Path, file_path: str, file: Path, what: str) -> Path:
    path = _path(folder, file_path)
    if not path.is_file():
        raise DataError(f"{file}: {what} {path} does not exist", "fix the frame's path or add the file")
    return path


def _export_camera(camera: Camera, path: Path) -> dict[str, Any]:
    """nerfstudio intrinsics (camera_model included) of a recon3d camera; DataError without an equivalent."""
    (fx, fy), (cx, cy), distortion = camera_models.split_params(camera.model, camera.params)
    if camera.model == "FULL_OPENCV" and np.any(distortion[5:]):
        raise DataError(f"cannot write {path}: a FULL_OPENCV camera with k4, k5 or k6 (rational distortion) "
                        "has no nerfstudio equivalent",
                        "undistort the images first (or calibrate with OPENCV)")
    ns_model, keys = _EXPORTED[camera.model]
    return {"camera_model": ns_model, "fl_x": float(fx), "fl_y": float(fy), "cx": float(cx), "cy": float(cy),
            "w": int(camera.width), "h": int(camera.height),
            **{key: float(value) for key, value in zip(keys, distortion, strict=False)}}
