"""COLMAP sparse models (binary or text), read and written through `pycolmap`.

COLMAP's conventions are recon3d's: `cam_from_world` with OpenCV camera axes, COLMAP camera models and
parameter order, pixel centres at +0.5. So nothing converts here; only the containers change. pycolmap's
`Rotation3d.quat` is (x, y, z, w): poses cross as matrices, never as quaternions, to avoid the question.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from recon3d.colmap_module import pycolmap
from recon3d.errors import DataError
from recon3d.geometry import camera_models
from recon3d.geometry.rotation import rigid
from recon3d.io.files import atomic_write, read_text
from recon3d.scene import Camera, Features, ImageInfo, Points, Scene, Source

MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")  # what pycolmap 4 writes, .bin or .txt


def find_model(folder: str | Path) -> tuple[Path, Path] | None:
    """`(model_dir, image_dir)` if `folder` is a COLMAP project, else None.

    A project has `images/` and a model in `sparse/0/` or `sparse/` (cameras.bin or cameras.txt).
    """
    folder = Path(folder)
    image_dir = folder / "images"
    if not image_dir.is_dir():
        return None
    for model_dir in (folder / "sparse" / "0", folder / "sparse"):
        if (model_dir / "cameras.bin").is_file() or (model_dir / "cameras.txt").is_file():
            return model_dir, image_dir
    return None


class _Cursor:
    """Reads a binary COLMAP file front to back; a record or count that does not fit is a ValueError."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ValueError(f"cut short at byte {self.at}")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values

    def count(self, item_bytes: int) -> int:
        """A uint64 count of items of at least `item_bytes` each, checked against what the file holds."""
        (n,) = self.take("<Q")
        if n * item_bytes > len(self.data) - self.at:
            raise ValueError(f"byte {self.at - 8} declares {n} records, more than the file holds")
        return n

    def skip(self, size: int) -> None:
        if self.at + size > len(self.data):
            raise ValueError(f"cut short at byte {self.at}")
        self.at += size


def _walk_cameras(f: _Cursor) -> None:
    for _ in range(f.count(24)):
        _, model_id, _, _ = f.take("<iiQQ")
        name = pycolmap.CameraModelId(model_id).name  # INVALID or ??? for ids COLMAP does not have
        if name not in camera_models.MODELS:
            raise ValueError(f"camera model id {model_id} at byte {f.at - 24} is not one recon3d reads")
        f.skip(8 * len(camera_models.MODELS[name]))


def _walk_images(f: _Cursor) -> None:
    for _ in range(f.count(73)):
        f.take("<i7di")
        end = f.data.find(b"\0", f.at)
        if end < 0:
            raise ValueError(f"image name at byte {f.at} has no end")
        try:
            f.data[f.at:end].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"image name at byte {f.at} is not UTF-8") from None
        f.at = end + 1
        f.skip(24 * f.count(24))


def _walk_points(f: _Cursor) -> None:
    for _ in range(f.count(51)):
        f.take("<Q3d3Bd")
        f.skip(8 * f.count(8))


def check_model_files(model_dir: Path) -> None:
    """The text files (where they exist) must be UTF-8; cameras.bin, images.bin and points3D.bin are walked
    record by record: every declared count must fit the file and the last record end it. pycolmap trusts the
    counts, so a damaged one would allocate without bound or read past the end."""
    for name in ("cameras.txt", "images.txt", "points3D.txt"):  # names pycolmap hands over must decode
        if (model_dir / name).is_file():
            read_text(model_dir / name)
    for name, walk in (("cameras.bin", _walk_cameras), ("images.bin", _walk_images), ("points3D.bin", _walk_points)):
        path = model_dir / name
        if not path.is_file():
            continue
        cursor = _Cursor(path.read_bytes())
        try:
            walk(cursor)
            if cursor.at != len(cursor.data):
                raise ValueError(f"{len(cursor.data) - cursor.at} bytes after the last record")
        except (ValueError, struct.error) as exc:
            raise DataError(f"{path} is damaged: {exc}", "re-export the model from COLMAP") from None


def read_model(model_dir: str | Path, image_dir: str | Path) -> Scene:
    """Read a COLMAP model into a Scene; image files are looked up as `image_dir / <image name>`.

    Fills cameras (COLMAP ids kept), images (ordered by COLMAP image id), poses of registered images,
    features (each image's points2D xy as float32 keypoints, for images that have any) and points
    (tracks index `scene.images` and the image's keypoints). A point without a computed error gets NaN.
    """
    model_dir, image_dir = Path(model_dir), Path(os.path.abspath(image_dir))
    check_model_files(model_dir)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - whatever pycolmap trips on in a user's model is a data error
        raise DataError(f"cannot read the COLMAP model in {model_dir} ({type(exc).__name__}: {exc})",
                        "pass a folder with cameras, images and points3D (.bin or .txt) as COLMAP writes "
                        "them") from None
    cameras = {}
    for camera_id, cam in rec.cameras.items():
        model = cam.model.name
        if model not in camera_models.MODELS:
            raise DataError(f"{model_dir}: camera {camera_id} uses the {model} model, which recon3d does "
                            f"not support ({', '.join(camera_models.MODELS)})",
                            "undistort the images with COLMAP first")
        cameras[camera_id] = Camera(model, cam.width, cam.height, np.array(cam.params, dtype=np.float64))

    images, poses, features, index = [], {}, {}, {}
    missing = []
    for image_id in sorted(rec.images):
        image = rec.images[image_id]
        camera = cameras[image.camera_id]
        path = image_dir / image.name
        if not path.is_file():
            missing.append(image.name)
        index[image_id] = len(images)
        images.append(ImageInfo(image.name, str(path), image.camera_id, camera.width, camera.height))
        if image.has_pose:
            pose = image.cam_from_world()
            poses[image.name] = rigid(pose.rotation.matrix(), pose.translation)
        if image.num_points2D() > 0:
            with np.errstate(over="ignore", invalid="ignore"):
                xy = np.array([p.xy for p in image.points2D], dtype=np.float64).astype(np.float32)
            if not np.isfinite(xy).all():
                raise DataError(f"{model_dir}: image {image.name} has keypoints that are not finite numbers",
                                "re-export the model from COLMAP")
            features[image.name] = Features(xy)
    if missing:
        raise DataError(f"{image_dir} lacks {len(missing)} image(s) of the model in {model_dir}, "
                        f"e.g. {missing[0]}", "pass the image folder the model was made from")
    return Scene(source=Source(str(image_dir.parent), "colmap"), images=tuple(images), cameras=cameras,
                 poses=poses, features=features, points=_read_points(rec, index))


def _read_points(rec: pycolmap.Reconstruction, index: dict[int, int]) -> Points | None:
    point_ids = sorted(rec.points3D)
    if not point_ids:
        return None
    xyz, rgb, error, lengths, track_image, track_keypoint = [], [], [], [], [], []
    for point_id in point_ids:
        point = rec.points3D[point_id]
        xyz.append(point.xyz)
        rgb.append(point.color)
        error.append(point.error if point.has_error() else np.nan)
        elements = point.track.elements
        lengths.append(len(elements))
        track_image += [index[e.image_id] for e in elements]
        track_keypoint += [e.point2D_idx for e in elements]
    return Points(xyz=np.array(xyz, dtype=np.float64).reshape(-1, 3), rgb=np.array(rgb, dtype=np.uint8),
                  error=np.array(error, dtype=np.float64),
                  track_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                  track_image=np.array(track_image, dtype=np.int32),
                  track_keypoint=np.array(track_keypoint, dtype=np.int32))


def write_model(scene: Scene, model_dir: str | Path, binary: bool = True) -> Path:
    """Write the scene as a COLMAP model in `model_dir` (binary or text); returns `model_dir`.

    Only posed images are written (COLMAP's writer drops unregistered ones); image ids are the image's
    index in `scene.images` + 1, so the order survives a round trip. Keypoints become points2D. Each file
    is written to a temporary folder and moved into place; the other format's files are removed.
    """
    model_dir = Path(model_dir)
    spaced = [name for name in scene.poses if not binary and len(name.split()) != 1]
    if spaced:
        raise DataError(f"cannot write a text model to {model_dir}: image name {spaced[0]!r} has a "
                        "space, which COLMAP's text format cannot hold",
                        "write a binary model, or rename the images")
    rec, _ = to_reconstruction(scene, str(model_dir))
    model_dir.mkdir(parents=True, exist_ok=True)
    ext, stale = (".bin", ".txt") if binary else (".txt", ".bin")
    with tempfile.TemporaryDirectory(prefix=".colmap.", dir=model_dir) as tmp:
        (rec.write_binary if binary else rec.write_text)(tmp)
        for name in MODEL_FILES:
            (model_dir / f"{name}{stale}").unlink(missing_ok=True)
            if (Path(tmp) / f"{name}{ext}").is_file():
                os.replace(Path(tmp) / f"{name}{ext}", model_dir / f"{name}{ext}")
    return model_dir


def to_reconstruction(scene: Scene, where: str = "the COLMAP model") -> tuple[pycolmap.Reconstruction, list[int]]:
    """The scene as an in-memory pycolmap Reconstruction, and the COLMAP id of each scene point in order.

    Only posed images are added; image ids are the scene index + 1. `where` names the target in errors.
    """
    rec = pycolmap.Reconstruction()
    for camera_id, camera in scene.cameras.items():
        rec.add_camera_with_trivial_rig(pycolmap.Camera(model=camera.model, width=camera.width,
                                                        height=camera.height, params=camera.params,
                                                        camera_id=camera_id))
    for i, info in enumerate(scene.images):
        if info.name not in scene.poses:
            continue
        feats = scene.features.get(info.name)
        keypoints = np.zeros((0, 2)) if feats is None else feats.keypoints.astype(np.float64)
        image = pycolmap.Image(name=info.name, keypoints=keypoints, camera_id=info.camera_id, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(matrix=scene.poses[info.name][:3]))
    point_ids = _write_points(scene, rec, where) if scene.points is not None else []
    return rec, point_ids


def _write_points(scene: Scene, rec: pycolmap.Reconstruction, model_dir: str) -> list[int]:
    points = scene.points
    ids: list[int] = []
    observed: dict[tuple[int, int], int] = {}  # (image index, keypoint) -> point
    for i in range(len(points)):
        image_idx, keypoint_idx = points.track(i)
        elements = []
        for j, k in zip(image_idx.tolist(), keypoint_idx.tolist(), strict=True):
            info = scene.images[j]
            n_keypoints = len(scene.features[info.name].keypoints) if info.name in scene.features else 0
            if info.name not in scene.poses or not 0 <= k < n_keypoints:
                raise DataError(f"cannot write {model_dir}: point {i} is seen by keypoint {k} of "
                                f"{info.name}, which has no pose or no such keypoint",
                                "drop unposed images from the tracks (or the points) before export")
            if observed.setdefault((j, k), i) != i:
                raise DataError(f"cannot write {model_dir}: keypoint {k} of {info.name} observes points "
                                f"{observed[(j, k)]} and {i}; COLMAP allows one",
                                "merge or split the tracks first")
            elements.append(pycolmap.TrackElement(j + 1, k))
        point_id = rec.add_point3D(points.xyz[i], pycolmap.Track(elements), points.rgb[i])
        if np.isfinite(points.error[i]):
            rec.points3D[point_id].error = float(points.error[i])
        ids.append(point_id)
    return ids


def write_cameras_txt(cameras: dict[int, Camera], path: str | Path) -> Path:
    """COLMAP's `cameras.txt` for the given cameras alone (the format of `Reconstruction.write_text`)."""
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    for camera_id, cam in sorted(cameras.items()):
        lines.append(" ".join([str(camera_id), cam.model, str(cam.width), str(cam.height)]
                              + [repr(float(p)) for p in cam.params]))
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")
