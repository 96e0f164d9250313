"""ingest: recognise the `--data` folder and fill the Scene.

Accepted: a COLMAP project (`images/` + `sparse/0` or `sparse/`), a nerfstudio folder (`transforms.json`),
a Blender / NeRF-synthetic folder (`transforms_{train,val,test}.json`), a plain folder of images (or
one with an `images/` subfolder, and optional COLMAP-style masks in `masks/<image name>.png`; HEIC, HEIF,
AVIF and WebP photos are decoded to JPEG copies in the node's folder, `<photo>.jpg`), or a video file
(its keyframes, `recon3d.io.video`, become the images, in time order, their timestamps in
`keyframes.json` of the node's folder), with the
images' labels when there are some (`labels`: COCO, YOLO, labelme or VOC, read by `recon3d.io.labels`
into `Scene.labels` and one class table). Axis conventions are converted here, through the readers in
`recon3d.io`, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from recon3d.errors import DataError
from recon3d.geometry import camera_models
from recon3d.io import colmap, images, nerfstudio
from recon3d.io.files import file_sha256, read_json
from recon3d.io.video import VIDEO_SUFFIXES, extract_keyframes, is_video
from recon3d.scene import Camera, ImageInfo, Scene, Source
from recon3d.stages.base import Stage, StageConfig, StageContext, hash_files

FORMATS = ("auto", "images", "colmap", "nerfstudio", "blender", "video")
UNREAD_DATABASE = "database.db"  # a COLMAP database in the data folder: features and matches are not taken from it
AUTO_LABELS = ("labels.json", "annotations.json", "data.yaml")
HELP = "pass an image folder, a video file, a COLMAP project (images/ + sparse/0) or a folder with transforms*.json"


class IngestConfig(StageConfig):
    path: str = Field("", description="the data folder (set by `--data`)")
    format: Literal["auto", "images", "colmap", "nerfstudio", "blender", "video"] = Field(
        "auto", description="data layout; auto recognises it")
    video_every: int = Field(10, ge=1, description="video: one keyframe (the sharpest frame) per this many frames")
    video_min_motion: float = Field(0.01, ge=0, le=1, description="video: a keyframe must differ from the last one "
                                    "by this mean absolute grey level (of full scale) on 64-px thumbnails: a camera "
                                    "standing still adds none")
    video_max_frames: int = Field(0, ge=0, description="video: stop after this many keyframes (0 = the whole video)")
    camera_model: str = Field("SIMPLE_RADIAL", description="COLMAP model for image folders without intrinsics")
    single_camera: bool = Field(True, description="image folders: images of one size and one EXIF camera (make, "
                                "model, focal length) share one camera, as COLMAP's")
    focal_factor: float = Field(1.2, gt=0, description="focal prior = factor * max(width, height) px without EXIF")
    masks: str = Field("masks", description="image folders: subfolder with <image name>.png masks ('' = none)")
    poses: bool = Field(True, description="keep the poses (and points) the data gives; false = keep images and "
                        "intrinsics only, to reconstruct them (SfM) and compare with the given ones")
    labels: str = Field("auto", description="the images' labels: a COCO .json, a YOLO data.yaml or labels folder, "
                        "a folder of labelme .json or a VOC folder (SegmentationClass/SegmentationObject), relative "
                        "to the data folder or absolute; auto = the first of " + ", ".join(AUTO_LABELS) + " there, "
                        "else its one YOLO data yaml (a .yaml with names: and train: or val:), else labelme's .json "
                        "beside the photos; '' = none")
    unknown_label_images: Literal["error", "skip"] = Field(
        "error", description="labels of images the data does not have: an error, or skipped and reported")
    intrinsics_file: str = Field("K.txt", description="image folders: a 3x3 K (OpenMVG's K.txt, pixels of the "
                                 "images as stored) in the data folder gives every image that focal length and "
                                 "principal point, distortion zero ('' = ignore)")

    @field_validator("camera_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        camera_models.check_model(value)
        return value


def detect_format(root: Path) -> str:
    if root.is_file() and is_video(root):
        return "video"
    if colmap.find_model(root) is not None:
        return "colmap"
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if any((root / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
        return "blender"
    return "images"


def data_root(cfg: IngestConfig) -> Path:
    if not cfg.path:
        raise DataError("no input data was given (--data is missing)", HELP + " with --data PATH")
    root = Path(cfg.path).expanduser().resolve()
    if root.is_file() and is_video(root):
        return root
    if root.is_file():
        raise DataError(f"--data {cfg.path} is a file, but not a video ({', '.join(VIDEO_SUFFIXES)})", HELP)
    if not root.is_dir():
        raise DataError(f"--data {cfg.path}: no such folder", HELP)
    return root


def labels_path(root: Path, cfg: IngestConfig) -> Path | None:
    """Where the labels are (None: no labels); DataError when `cfg.labels` names something that is not there."""
    if not cfg.labels:
        return None
    if cfg.labels == "auto":
        named = next((root / name for name in AUTO_LABELS if (root / name).exists()), None)
        yamls = [] if named is not None or not root.is_dir() else \
            [p for p in sorted(root.iterdir()) if p.suffix.lower() in (".yaml", ".yml") and _yolo_data_yaml(p)]
        if named is not None or len(yamls) == 1:
            return named if named is not None else yamls[0].resolve()
        return _labelme_beside_photos(root)
    path = (root / cfg.labels).expanduser()
    if not path.exists():
        raise DataError(f"ingest.labels {cfg.labels}: no such file or folder (looked at {path})",
                        "give the labels' path relative to the data folder or absolute, or labels='' for none")
    return path.resolve()


def _labelme_beside_photos(root: Path) -> Path | None:
    """The folder (the data folder or its images/) where labelme saved its .json beside the photos, each named
    after its photo: the first such file has labelme's `shapes`."""
    for folder in (root, root / "images"):
        if not folder.is_dir():
            continue
        photos = {p.stem for p in folder.iterdir() if p.suffix.lower() in images.IMAGE_EXTENSIONS}
        first = next((p for p in sorted(folder.glob("*.json")) if p.stem in photos), None)
        if first is not None:
            try:
                return folder.resolve() if "shapes" in json.loads(first.read_text(errors="replace")) else None
            except (OSError, ValueError, TypeError):
                return None
    return None


def _yolo_data_yaml(path: Path) -> bool:
    """Whether `path` reads as an ultralytics data yaml (a mapping with `names:` and `train:` or `val:`), as
    coco8.yaml; a yaml of other notes beside the photos is not taken for labels."""
    import yaml

    try:
        meta = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError, RecursionError):
        return False
    return isinstance(meta, dict) and "names" in meta and ("train" in meta or "val" in meta)


def fingerprint(cfg: IngestConfig) -> str:
    root = data_root(cfg)
    if root.is_file():  # a video
        return hash_files(root.parent, [root])
    files = [p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts)
             and p != root / UNREAD_DATABASE]  # never read (see `run`): a new one there changes nothing
    labels = labels_path(root, cfg)
    outside = labels is not None and not labels.is_relative_to(root)  # labels kept outside the data folder
    if outside:
        files += [labels] if labels.is_file() else [p for p in labels.rglob("*") if p.is_file()]
    return hash_files(Path("/") if outside else root, files)


def run(scene: Scene, cfg: IngestConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("ingest")
    root = data_root(cfg)
    fmt = detect_format(root) if cfg.format == "auto" else cfg.format
    if fmt == "colmap":
        found = colmap.find_model(root)
        if found is None:
            raise DataError(f"{root} is not a COLMAP project", "expected images/ and sparse/0 (or sparse/)")
        ingested = colmap.read_model(*found)
    elif fmt in ("nerfstudio", "blender"):
        ingested = nerfstudio.read_transforms(root)
    elif fmt == "video":
        ingested = _read_video(root, cfg, ctx)
    else:
        ingested = _read_image_folder(root, cfg, ctx)
    if not ingested.images and fmt == "images":
        raise DataError(f"no images found in {root} (read: {', '.join(sorted(images.IMAGE_EXTENSIONS))})",
                        "put the photos in that folder (or in its images/), or " + HELP)
    if not ingested.images:
        raise DataError(f"no images found in {root}", HELP)
    ingested = ingested.replace(images=_with_exposures(ingested.images, ctx))
    poses, points, features = ingested.poses, ingested.points, ingested.features
    if not cfg.poses:
        poses, points, features = {}, None, {}
    bad = {n for n, pose in poses.items() if not np.isfinite(pose).all()}
    for name in sorted(bad):
        ctx.drop(name, "its pose in the data is not finite (NaN or inf): kept as an unposed image")
    poses = {n: p for n, p in poses.items() if n not in bad}
    ctx.count("format", fmt)
    ctx.count("images", len(ingested.images))
    ctx.count("cameras", len(ingested.cameras))
    ctx.count("posed_images", len(poses))
    ctx.count("points", 0 if points is None else len(points))
    if fmt == "images" and (root / UNREAD_DATABASE).is_file():  # COLMAP's, of another run: said, not used
        ctx.count("not_read", f"{UNREAD_DATABASE} (features and matches are computed afresh; recon3d's own "
                  "database is OUT/database.db)")
    if fmt == "nerfstudio" and cfg.poses and (ply := nerfstudio.ply_file_path(root)):
        ctx.count("not_read", f"{ply} (ply_file_path: points without tracks; the training commands triangulate "
                  "points from the poses, so that the held-out photos' own points stay out of the model)")
    found = _read_labels(root, cfg, ingested.images, ctx)
    infos = ingested.images
    if found is not None and found.splits:  # a YOLO yaml's train / val folders: the labelling stages' split (the
        # radiance fields keep the data's own, or every 8th photo)
        infos = tuple(dataclasses.replace(im, label_split=found.splits[im.name]) if im.name in found.splits else im
                      for im in infos)
        tally = sorted(Counter(found.splits.values()).items())
        ctx.count("label_splits", ", ".join(f"{split} {n}" for split, n in tally))
    return scene.replace(source=ingested.source, images=infos, cameras=ingested.cameras, poses=poses,
                         features=features, points=points, class_names=() if found is None else found.class_names,
                         labels={} if found is None else found.labels)


def _with_exposures(infos: tuple[ImageInfo, ...], ctx: StageContext) -> tuple[ImageInfo, ...]:
    """The images with their EXIF exposure (`ImageInfo.exposure`, for the radiance trainers' `exposure`);
    reported as how many photos carry one and the stops they span. A file that cannot be read has none."""
    out = []
    for im in infos:
        try:
            out.append(dataclasses.replace(im, exposure=images.exif_exposure(im.path)))
        except (DataError, OSError, ValueError):  # a missing file, a damaged EXIF block
            out.append(im)
    found = [im.exposure for im in out if im.exposure is not None]
    if found:
        ctx.count("exif_exposure", f"{len(found)} of {len(out)} photo(s), spanning {max(found) - min(found):.2f} stops")
    return tuple(out)


def _read_labels(root: Path, cfg: IngestConfig, infos: tuple[ImageInfo, ...], ctx: StageContext):
    """The LabelSet the config points at (None without labels); every repair is reported as dropped."""
    path = labels_path(root, cfg)
    if path is None:
        return None
    from recon3d.io.labels import read_labels
    from recon3d.io.labels_common import UnknownLabelImage

    try:
        found = read_labels(path, infos, unknown_images=cfg.unknown_label_images)
    except UnknownLabelImage as exc:
        raise DataError(exc.problem, "ingest that image too, fix the name in the label file, or skip such labels: "
                        "--set ingest.unknown_label_images=skip") from None
    for fix in found.fixes:
        ctx.drop(str(path.name), fix)
    crowd = sum(int(np.sum(flags)) for flags in found.crowd.values())
    if crowd:  # Labels has no crowd flag: said, so that nobody takes them for single objects unawares
        ctx.count("crowd", f"{crowd} COCO iscrowd regions, kept as ordinary instances")
    if any(np.any(v) for v in found.void.values()):
        ctx.count("void", f"VOC void (255) pixels of {len(found.void)} images, read as background")
    ctx.count("labels", str(path))
    ctx.count("labeled_images", len(found.labels))
    ctx.count("instances", sum(len(lab) for lab in found.labels.values()))
    return found


def _read_image_folder(root: Path, cfg: IngestConfig, ctx: StageContext) -> Scene:
    image_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = root / cfg.masks if cfg.masks else None
    known_k = _read_k(root / cfg.intrinsics_file) if cfg.intrinsics_file else None
    cameras: dict[int, Camera] = {}
    shared: dict[tuple, int] = {}  # (width, height[, EXIF camera, EXIF focal px]) -> camera id
    infos = []
    seen: dict[str, str] = {}  # sha256 of the file -> the first image name with it
    turned: list[str] = []  # photos with an EXIF orientation other than 1: used, not dropped
    grey: list[str] = []  # black-and-white photos: used, and said when colour ones are beside them
    listed = [(path.relative_to(image_dir).as_posix(), path) for path in images.list_images(image_dir)]
    for listed_name, name, path in _jpeg_copies(listed, ctx):
        try:
            width, height = images.image_size(path)
        except DataError as exc:
            ctx.drop(name, exc.problem)
            continue
        digest = file_sha256(path)
        if digest in seen:
            ctx.drop(name, f"the same file as {seen[digest]} (a copy adds nothing to a reconstruction)")
            continue
        seen[digest] = name
        if images.is_grey(path):
            grey.append(name)
        orientation = images.exif_orientation(path)
        if orientation != 1:  # a phone held upright saves its sensor's landscape pixels and orientation 6
            turned.append(f"{name} ({orientation}, {width}x{height})")
        focal = None if known_k is not None else images.exif_focal_px(path, width, height)
        # as COLMAP: one camera per size and EXIF camera (make, model, focal length) when sharing
        key = (width, height) if focal is None else (width, height, images.exif_camera(path), focal)
        if cfg.single_camera and key in shared:
            camera_id = shared[key]
        else:
            f = focal or cfg.focal_factor * max(width, height)
            fxy, cxy = ((f, f), (width / 2, height / 2)) if known_k is None else known_k
            camera_id = len(cameras) + 1
            cameras[camera_id] = Camera(cfg.camera_model, width, height,
                                        camera_models.make_params(cfg.camera_model, fxy, cxy))
            shared[key] = camera_id
        mask = mask_dir / f"{listed_name}.png" if mask_dir is not None else None
        infos.append(ImageInfo(name, str(path), camera_id, width, height,
                               mask_path=str(mask) if mask is not None and mask.is_file() else None))
    labels = labels_path(root, cfg)
    read = {cfg.intrinsics_file, UNREAD_DATABASE} | ({labels.name} if labels is not None else set())
    labelme_here = labels is not None and labels.is_dir() and labels == Path(image_dir).resolve()
    others = [f for f in images.other_files(image_dir)  # the labels and K.txt are read (labelme's .json too, when
              if f not in read and not (labelme_here and f.lower().endswith(".json"))]  # they are beside the photos)
    if others:
        more = f" and {len(others) - 4} more" if len(others) > 4 else ""
        ctx.count("not_images", f"{len(others)} file(s) not read, not images by their extension "
                  f"({', '.join(sorted(images.IMAGE_EXTENSIONS))}): {', '.join(others[:4])}{more}")
    if grey and len(grey) < len(infos):
        more = f" and {len(grey) - 4} more" if len(grey) > 4 else ""
        ctx.count("grey_photos", f"{len(grey)} black-and-white photo(s) among colour ones: "
                  f"{', '.join(grey[:4])}{more}; they help place the cameras, and a radiance field trains on their "
                  "grey as the scene's colour where they see it (leave them out of the folder for one)")
    if turned:
        more = f" and {len(turned) - 4} more" if len(turned) > 4 else ""
        ctx.count("exif_orientation", f"{len(turned)} photo(s) used as stored, their EXIF orientation not applied "
                  f"(as COLMAP and nerfstudio read them): {', '.join(turned[:4])}{more}")
    return Scene(source=Source(str(root), "images"), images=tuple(infos), cameras=cameras)


@dataclass(frozen=True)
class JpegCopy:
    source: str
    target: str


def write_copy(task: JpegCopy) -> str:
    """Write the JPEG copy; '' when written, else what is wrong with the source (a bad photo is named, not
    raised)."""
    try:
        images.write_jpeg_copy(task.source, task.target)
    except DataError as exc:
        return exc.problem
    return ""


def _jpeg_copies(listed: list[tuple[str, Path]], ctx: StageContext) -> list[tuple[str, str, Path]]:
    """(listed name, image name, path) of each listed (name, path): a HEIC, HEIF, AVIF or WebP photo becomes a
    JPEG copy in the node's folder named `<name>.jpg` (quality 95, its EXIF kept), since COLMAP (point colours),
    browsers (the report) or nerfstudio (transforms.json) do not read all of them; one that cannot be
    decoded is dropped, named. Other photos are used where they are."""
    copies = {name: JpegCopy(str(path), str(Path(ctx.workdir) / "decoded" / f"{name}.jpg"))
              for name, path in listed if path.suffix.lower() in images.COPIED_EXTENSIONS}
    problems = dict(zip(copies, ctx.map(write_copy, list(copies.values()), describe=lambda c: f"photo {c.source}"),
                        strict=True)) if copies else {}
    out = []
    for name, path in listed:
        if name not in copies:
            out.append((name, name, path))
        elif problems[name]:
            ctx.drop(name, problems[name])
        else:
            out.append((name, f"{name}.jpg", Path(copies[name].target)))
    if copies:
        decoded = len(copies) - sum(map(bool, problems.values()))
        ctx.count("jpeg_copies", f"{decoded} HEIC/HEIF/AVIF/WebP photo(s) decoded to JPEG copies in "
                  f"{Path(ctx.workdir) / 'decoded'}, named <photo>.jpg")
    return out


def _read_video(video: Path, cfg: IngestConfig, ctx: StageContext) -> Scene:
    """The video's keyframes as an image folder in the node's own folder, one camera, in time order."""
    if not video.is_file():
        raise DataError(f"--data {video}: format video needs a video file", HELP)
    keyframes = extract_keyframes(video, ctx.workdir / "frames", cfg.video_every, cfg.video_min_motion,
                                  cfg.video_max_frames)
    ctx.count("keyframes", len(keyframes))
    ctx.count("video_frames", read_json(ctx.workdir / "keyframes.json")["frames"])
    ctx.count("video_seconds", round(keyframes[-1].seconds, 3))
    frames = _read_image_folder(ctx.workdir / "frames", cfg.model_copy(update={"masks": "", "intrinsics_file": ""}),
                                ctx)
    return frames.replace(source=Source(str(video), "video"))


def _read_k(path: Path) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((fx, fy), (cx, cy)) from a whitespace-separated 3x3 K file, or None when there is no such file."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # an empty file is refused below, by its shape
            warnings.simplefilter("ignore", UserWarning)
            k = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path} is not a 3x3 matrix of numbers ({exc})", "fix or remove the file") from exc
    if k.shape != (3, 3) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DataError(f"{path} must hold a 3x3 K with positive focal lengths, got {k.tolist()}",
                        "fix the file, or ignore it: --set ingest.intrinsics_file=")
    return (k[0, 0], k[1, 1]), (k[0, 2], k[1, 2])


STAGE = Stage(
    name="ingest",
    # 2: copies left out; 3: photos of one EXIF camera share it; 4: HEIC read; 5: names of outside photos;
    # 6: the EXIF 35 mm focal on the diagonal; 7: each photo's EXIF exposure; 8: a YOLO yaml's splits, and
    # its one data yaml found by `labels: auto`; 9: WebP photos read (through JPEG copies), a nerfstudio
    # ply_file_path said not read; 10: labelme's .json beside the photos found by `labels: auto`, grey photos
    # among colour ones said
    version=10,
    config=IngestConfig,
    run=run,
    reads=(),
    writes=("source", "images", "cameras", "poses", "features", "points", "class_names", "labels"),
    summary="recognise --data (images, COLMAP, nerfstudio, Blender; labels: COCO, YOLO, labelme, VOC) and fill "
            "the scene",
    fingerprint=fingerprint,
)
