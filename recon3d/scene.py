"""`Scene`: everything a reconstruction knows, passed from stage to stage and saved as a folder.

A Scene is immutable by convention: a stage returns `scene.replace(...)`, never edits its input. Fields
fill in as stages run. Poses are `cam_from_world` (4, 4) float64, OpenCV axes; cameras use COLMAP model
names and parameter order; pixels use COLMAP's convention (see CONVENTIONS.md).

On disk (`save` / `load`): `scene.json` holds everything but arrays, and each field that holds arrays has
its own `<field>.npz` (loaded with `allow_pickle=False`) pooling them: one flat buffer per dtype, each array a
slice of it (its file, buffer, offset and shape in `scene.json`), since a scene of thousands of image pairs
holds tens of thousands of small arrays and reading each as its own npz member cost more than the stage that
made them (format 1, still read, did that). A field a stage left untouched is hard-linked from its input's
folder rather than written again (`save(base=...)`): the descriptors of a thousand photos are written once
per run, not once per node. Loaded arrays are read-only memory maps of those files (scenes are immutable,
and their files are replaced whole, never edited), so loading a scene reads none of its arrays: a node reads
only the pages it touches. Files are written atomically; the round trip is exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.errors import DataError, StageError
from recon3d.geometry import camera_models
from recon3d.io.files import atomic_write, link_or_copy, read_json, write_json

SCENE_FORMAT = 2  # 2: a <field>.npz per field, its arrays pooled per dtype (1: arrays.npz, a member each)


@dataclass(frozen=True)
class Camera:
    """An intrinsic camera: COLMAP model name, image size in pixels and parameters in COLMAP order."""

    model: str
    width: int
    height: int
    params: np.ndarray  # (P,) float64

    def __post_init__(self):
        camera_models.check_model(self.model, self.params)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the field's name for it
        """The pinhole matrix (3, 3) float64; distortion not included."""
        return camera_models.calibration_matrix(self.model, self.params)

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """points_cam: (..., 3) camera frame -> (..., 2) pixels, COLMAP convention."""
        return camera_models.project(self.model, self.params, points_cam)


@dataclass(frozen=True)
class ImageInfo:
    """One image of the scene; pixels stay on disk at `path`."""

    name: str  # unique within the scene, relative to the image folder (COLMAP's image name)
    path: str  # absolute path of the file
    camera_id: int
    width: int
    height: int
    mask_path: str | None = None  # non-zero pixels are kept, zero pixels are masked out (COLMAP)
    split: str = ""  # "train", "val", "test" or "" when the data has no split
    exposure: float | None = None  # log2(exposure time s * ISO / f-number^2) from EXIF; None when not recorded
    label_split: str = ""  # the labels' own split (a YOLO data yaml's train / val folders): the labelling stages'


@dataclass(frozen=True)
class Calibration:
    """How well a camera's intrinsics are known, from a calibration target."""

    camera_id: int
    rms_px: float
    param_std: np.ndarray  # (P,) standard deviation of each COLMAP parameter
    per_image_rms_px: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # image name -> why it was dropped


@dataclass(frozen=True)
class StereoCalibration:
    """The extrinsics of a calibrated stereo pair and how well they fit."""

    left_camera_id: int
    right_camera_id: int
    right_from_left: np.ndarray  # (4, 4), x_right = R @ x_left + t, in board units
    rms_px: float
    epipolar_error_px: float  # mean |y_left - y_right| of matched corners after rectification


@dataclass(frozen=True)
class Features:
    """Keypoints of one image, COLMAP pixel convention."""

    keypoints: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray | None = None  # (N, D), uint8 or float32


@dataclass(frozen=True)
class TwoViewGeometry:
    """Verified geometry of an image pair `(name1, name2)`; indices refer to the pair's matches."""

    kind: str  # "calibrated" (E), "uncalibrated" (F), "planar" / "panoramic" (H)
    inliers: np.ndarray  # (K,) bool over the pair's matches
    E: np.ndarray | None = None  # noqa: N815 - the field's name for it
    F: np.ndarray | None = None  # noqa: N815
    H: np.ndarray | None = None  # noqa: N815
    cam2_from_cam1: np.ndarray | None = None  # (4, 4), translation of unit norm
    tri_angle_deg: float = 0.0  # median triangulation angle of the inliers


@dataclass(frozen=True)
class Points:
    """A sparse 3D model: points in the world frame with colours, errors and tracks.

    The track of point i is `track_image[o[i]:o[i+1]]`, `track_keypoint[o[i]:o[i+1]]` with
    `o = track_offsets`: indices into `Scene.images` and into that image's `Features.keypoints`.
    """

    xyz: np.ndarray  # (N, 3) float64
    rgb: np.ndarray  # (N, 3) uint8
    error: np.ndarray  # (N,) float64, mean reprojection error in pixels
    track_offsets: np.ndarray  # (N + 1,) int64
    track_image: np.ndarray  # (M,) int32
    track_keypoint: np.ndarray  # (M,) int32
    classes: np.ndarray | None = None  # (N,) int32 object class (Scene.class_names), -1 background, -2 undecided

    def __len__(self) -> int:
        return len(self.xyz)

    def track(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.track_offsets[i], self.track_offsets[i + 1]
        return self.track_image[lo:hi], self.track_keypoint[lo:hi]

    def seen_by(self, images: np.ndarray, min_track: int = 2) -> Points:
        """The points restricted to the observations of `images` (a (I,) bool mask over Scene.images), keeping
        those still seen at least `min_track` times; xyz, colour and error of the kept points are unchanged."""
        keep_obs = np.asarray(images, bool)[self.track_image]
        point_of = np.repeat(np.arange(len(self)), np.diff(self.track_offsets))
        counts = np.bincount(point_of[keep_obs], minlength=len(self))
        keep = counts >= min_track
        keep_obs &= keep[point_of]
        return Points(self.xyz[keep], self.rgb[keep], self.error[keep],
                      np.r_[0, np.cumsum(counts[keep])].astype(np.int64),
                      self.track_image[keep_obs], self.track_keypoint[keep_obs],
                      None if self.classes is None else self.classes[keep])


@dataclass(frozen=True)
class Labels:
    """Boxes, masks and polygons of one image's objects (instances), pixels in COLMAP's convention.

    Instance i has box `boxes[i]` (x0, y0, x1, y1: corners, so a box round one pixel (r, c) is
    (c, r, c + 1, r + 1), the same as COCO's [x, y, w, h]), class `class_names[classes[i]]` of the scene,
    and optionally a mask and outline polygons. Polygon p (vertices `polygon_xy[o[p]:o[p+1]]`,
    `o = polygon_offsets`) outlines instance `polygon_instance[p]`; an instance may have several.
    """

    boxes: np.ndarray  # (N, 4) float64, xyxy in pixels
    classes: np.ndarray  # (N,) int32, index into Scene.class_names
    scores: np.ndarray | None = None  # (N,) float32 for predictions
    masks: np.ndarray | None = None  # (N, H, W) bool instance masks
    polygon_xy: np.ndarray | None = None  # (V, 2) float64 vertices of every polygon
    polygon_offsets: np.ndarray | None = None  # (P + 1,) int64
    polygon_instance: np.ndarray | None = None  # (P,) int32, the instance each polygon outlines

    def __len__(self) -> int:
        return len(self.boxes)

    def region(self, i: int, height: int, width: int) -> np.ndarray:
        """(H, W) bool pixels of instance i: its mask when not empty, else its polygons rasterised, else (a box
        alone) the pixels whose centres lie in its box."""
        if self.masks is not None and self.masks[i].any():
            return np.asarray(self.masks[i], dtype=bool)
        polygons = self.polygons(i)
        if polygons:
            from recon3d.io.labels_coco import polygon_mask

            return polygon_mask(polygons, height, width)
        x0, y0, x1, y1 = self.boxes[i]
        cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
        return ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]

    def polygons(self, i: int) -> list[np.ndarray]:
        """The outline polygons of instance i, each (K, 2) float64; [] without polygons."""
        if self.polygon_xy is None:
            return []
        o = self.polygon_offsets
        return [self.polygon_xy[o[p]:o[p + 1]] for p in np.flatnonzero(self.polygon_instance == i)]


@dataclass(frozen=True)
class RadianceModel:
    """A trained radiance field on disk."""

    kind: str  # "gaussians" or "nerf"
    path: str


@dataclass(frozen=True)
class Source:
    """Where the scene's data came from."""

    path: str
    format: str  # "images", "colmap", "nerfstudio", "blender", "synthetic"


@dataclass(frozen=True)
class Scene:
    """Everything a reconstruction knows. Stages return `scene.replace(...)`; nobody edits one in place."""

    source: Source | None = None
    images: tuple[ImageInfo, ...] = ()
    cameras: dict[int, Camera] = field(default_factory=dict)
    calibration: dict[int, Calibration] = field(default_factory=dict)
    stereo: StereoCalibration | None = None
    features: dict[str, Features] = field(default_factory=dict)  # image name -> features
    matches: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # pair -> (K, 2) int32
    two_view: dict[tuple[str, str], TwoViewGeometry] = field(default_factory=dict)
    poses: dict[str, np.ndarray] = field(default_factory=dict)  # image name -> cam_from_world (4, 4)
    points: Points | None = None
    class_names: tuple[str, ...] = ()
    labels: dict[str, Labels] = field(default_factory=dict)  # image name -> labels
    radiance: dict[str, RadianceModel] = field(default_factory=dict)  # node id -> model
    metrics: dict[str, Any] = field(default_factory=dict)  # JSON values
    reports: dict[str, Any] = field(default_factory=dict)  # node id -> JSON report

    def replace(self, **changes: Any) -> Scene:
        """A new Scene with `changes`; this one is untouched."""
        return dataclasses.replace(self, **changes)

    def metrics_of_kind(self, kind: str) -> dict[str, dict]:
        """The metrics entries (node id -> dict) whose `kind` is `kind` ("renders", "images", "comparison")."""
        return {k: v for k, v in self.metrics.items() if isinstance(v, dict) and v.get("kind") == kind}

    def posed_points(self) -> Points | None:
        """The points restricted to observations by posed images, keeping those still seen at least twice
        (what a COLMAP model or a bundle adjustment can hold); None without points."""
        if self.points is None:
            return None
        return self.points.seen_by(np.array([im.name in self.poses for im in self.images], dtype=bool))

    def image(self, name: str) -> ImageInfo:
        for im in self.images:
            if im.name == name:
                return im
        raise KeyError(f"no image named {name!r} in the scene")

    def filled_fields(self) -> list[str]:
        """Names of the fields that hold something."""
        return [f.name for f in dataclasses.fields(self) if not _is_empty(getattr(self, f.name))]

    def summary(self) -> dict[str, int]:
        """Counts per field, for reports and `recon3d show`."""
        return {
            "images": len(self.images),
            "cameras": len(self.cameras),
            "features": sum(len(f.keypoints) for f in self.features.values()),
            "pairs_matched": len(self.matches),
            "pairs_verified": len(self.two_view),
            "poses": len(self.poses),
            "points": 0 if self.points is None else len(self.points),
            "labeled_images": len(self.labels),
            "radiance_models": len(self.radiance),
        }

    # -- persistence -------------------------------------------------------------------------------------

    def save(self, folder: str | Path, base: tuple[Scene, Path] | None = None) -> Path:
        """Write `scene.json` and a `<field>.npz` per field holding arrays into `folder`, atomically each.

        base: (a scene, the folder it was loaded from). A field of this scene that is the very object of the
        base's is hard-linked from the base's file (copied where the filesystem cannot link) instead of
        written again. The files are never modified in place, so a link is as safe as a copy."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state, by_field = _encode_scene(self)
        table: dict[str, list] = {}
        for name, arrays in by_field.items():
            file = f"{name}.npz"
            layout, sizes = _layout(arrays, file)
            table.update(layout)
            source = None if base is None else Path(base[1]) / file
            if source is not None and getattr(base[0], name) is getattr(self, name) and source.is_file():
                link_or_copy(source, folder / file)
                continue
            atomic_write(folder / file, lambda f, arrays=arrays, layout=layout, sizes=sizes:
                         _write_pools(f, arrays, layout, sizes))
        write_json(folder / "scene.json", {"format": SCENE_FORMAT, "arrays": table, "scene": state},
                   indent=None)  # compact: read by recon3d, and indenting a scene of many pairs cost as much as
        # the stage that made it
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Scene:
        folder = Path(folder)
        meta_path = folder / "scene.json"
        if not meta_path.is_file():
            raise DataError(f"{folder} is not a saved recon3d scene (no scene.json)",
                            "pass the folder that Scene.save or `recon3d run` wrote")
        meta = read_json(meta_path)
        found = meta.get("format") if isinstance(meta, dict) else None
        if found not in (1, SCENE_FORMAT):
            raise DataError(f"{meta_path} has scene format {found}, this recon3d reads 1 and {SCENE_FORMAT}",
                            "re-run the pipeline that wrote it")
        try:
            if found == 1:  # one npz member per array (ground truth saved by an older recon3d)
                with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                    return _decode(meta["scene"], {k: npz[k] for k in npz.files})
            pools: dict[str, dict[str, np.ndarray]] = {}
            for file in sorted({entry[0] for entry in meta["arrays"].values()}):
                if Path(file).name != file or not file.endswith(".npz"):
                    raise ValueError(f"array file {file!r} is not a file of the scene's folder")
                pools[file] = _map_pools(folder / file)
            return _decode(meta["scene"], _unpool(pools, meta["arrays"]))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{folder} holds a damaged scene ({type(exc).__name__}: {exc})",
                            "re-run the pipeline that wrote it (the same command recomputes it)") from None

    def content_hash(self) -> str:
        """sha256 over the JSON state and every array's dtype, shape and bytes: equal content, equal hash."""
        state, by_field = _encode_scene(self)
        return _hash(state, {k: a for arrays in by_field.values() for k, a in arrays.items()})

    def merge(self, other: Scene, names: tuple[str, str] = ("first", "second")) -> Scene:
        """Combine two scenes from parallel branches of a pipeline.

        Dict fields are united (a key both hold must have equal content); any other field must be equal
        in both, or empty in one of them. Raises StageError naming the field that conflicts.
        """
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if _is_empty(b):
                continue
            if _is_empty(a):
                changes[f.name] = b
            elif isinstance(a, dict):
                for key in a.keys() & b.keys():
                    if _hash_value(a[key]) != _hash_value(b[key]):
                        raise StageError(f"inputs {names[0]} and {names[1]} disagree on {f.name}[{key!r}]",
                                         "make one node depend on the other instead of running them side by side")
                changes[f.name] = {**a, **b}
            elif _hash_value(a) != _hash_value(b):
                raise StageError(f"inputs {names[0]} and {names[1]} both set `{f.name}` differently",
                                 "make one node depend on the other instead of running them side by side")
        return self.replace(**changes)


# -- encoding: arrays to npz, everything else to JSON, a closed set of types (no pickle) -------------------

_TYPES = {cls.__name__: cls for cls in
          (Camera, ImageInfo, Calibration, StereoCalibration, Features, TwoViewGeometry, Points, Labels,
           RadianceModel, Source, Scene)}


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (tuple, list, dict)) and len(value) == 0)


def _encode_scene(scene: Scene) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """The scene's JSON state and its arrays by field ({field: {key: array}}, only fields holding arrays)."""
    state: dict[str, Any] = {"__type__": "Scene"}
    by_field: dict[str, dict[str, np.ndarray]] = {}
    for f in dataclasses.fields(scene):
        arrays: dict[str, np.ndarray] = {}
        state[f.name] = _encode(getattr(scene, f.name), arrays, prefix=f"{f.name}.")
        if arrays:
            by_field[f.name] = arrays
    return state, by_field


def _layout(arrays: dict[str, np.ndarray], file: str) -> tuple[dict[str, list], dict[str, tuple[str, int]]]:
    """Where each array lies in `file`: ({key: [file, pool, offset, shape]}, {pool: (dtype, size)}); one pool
    per dtype, the arrays raveled (C order) one after another in key order."""
    pools: dict[str, str] = {}  # dtype -> pool name
    sizes: dict[str, tuple[str, int]] = {}
    layout = {}
    for key, a in arrays.items():
        name = pools.setdefault(a.dtype.str, f"pool{len(pools)}")
        offset = sizes.get(name, (a.dtype.str, 0))[1]
        layout[key] = [file, name, offset, list(a.shape)]
        sizes[name] = (a.dtype.str, offset + a.size)
    return layout, sizes


def _write_pools(f, arrays: dict[str, np.ndarray], layout: dict[str, list],
                 sizes: dict[str, tuple[str, int]]) -> None:
    """Write the pools (1-D buffers) of `_layout` into `f` as an .npz (what `np.savez` writes), each array's
    bytes streamed into its pool's entry at its offset: no pool is assembled in memory (on this machine
    first-touching a fresh 38 MB buffer took 0.3 s, longer than writing it)."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, (dtype, size) in sizes.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array_header_1_0(entry, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                             "fortran_order": False, "shape": (size,)})
                for key, a in arrays.items():  # in `_layout`'s order, so each lands at its offset
                    if layout[key][1] == name and a.size:
                        entry.write(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _map_pools(path: Path) -> dict[str, np.ndarray]:
    """The pools of a `<field>.npz` that `_write_pools` wrote, memory-mapped read-only: a node that never
    touches the descriptors of a thousand photos never reads them, and what it reads the kernel can drop
    again (safe because scene files are only ever replaced whole, never changed in place). A member that is
    compressed (another writer's npz) is read with `np.load`."""
    pools: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                pools[name] = np.load(zf.open(info), allow_pickle=False)
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # a zip local file header: fixed part, then name and extra field
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise ValueError(f"member {info.filename} of {path.name} has no local header")
            f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                   + int.from_bytes(local[28:30], "little"))
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            if fortran or dtype.hasobject or len(shape) != 1:
                raise ValueError(f"member {info.filename} of {path.name} is not a flat pool")
            pools[name] = (np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape).view(np.ndarray)
                           if shape[0] else np.zeros(0, dtype))
    return pools


def _unpool(pools: dict[str, dict[str, np.ndarray]], table: dict[str, list]) -> dict[str, np.ndarray]:
    """The arrays of a saved table, each a read-only view of its pool. ValueError on a table that does not fit."""
    for file_pools in pools.values():
        for pool in file_pools.values():
            pool.flags.writeable = False
    arrays = {}
    for key, (file, name, offset, shape) in table.items():
        size = int(np.prod(shape, dtype=np.int64))
        pool = pools[file][name]
        if offset < 0 or offset + size > len(pool):
            raise ValueError(f"array {key} lies outside {file}:{name}")
        arrays[key] = pool[offset:offset + size].reshape(shape)
    return arrays


def _hash(state: Any, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _hash_value(value: Any) -> str:
    arrays: dict[str, np.ndarray] = {}
    return _hash(_encode(value, arrays), arrays)


def _encode(value: Any, arrays: dict[str, np.ndarray], prefix: str = "") -> Any:
    """`value` as JSON, its arrays moved into `arrays` under keys `<prefix>a<n>`."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("object arrays cannot be saved (no pickle); use a numeric dtype")
        key = f"{prefix}a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, prefix) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays, prefix) for v in value]
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
        return {"__items__": [[_encode(k, arrays, prefix), _encode(v, arrays, prefix)] for k, v in items]}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _TYPES:
        out = {"__type__": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name), arrays, prefix)
        return out
    raise TypeError(f"a Scene cannot hold a {type(value).__name__}; use arrays, JSON values or scene types")


def _decode(state: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(state, list):
        return [_decode(v, arrays) for v in state]
    if not isinstance(state, dict):
        return state
    if "__array__" in state:
        return arrays[state["__array__"]]
    if "__tuple__" in state:
        return tuple(_decode(v, arrays) for v in state["__tuple__"])
    if "__items__" in state:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in state["__items__"]}
    if "__type__" in state:
        cls = _TYPES.get(state["__type__"])
        if cls is None:
            raise DataError(f"unknown type {state['__type__']!r} in a saved scene", "re-run the pipeline")
        return cls(**{k: _decode(v, arrays) for k, v in state.items() if k != "__type__"})
    raise DataError("malformed scene.json: a JSON object outside the scene encoding", "re-run the pipeline")
