"""features: keypoints and descriptors per image, masks respected.

Backends: OpenCV SIFT, OpenCV RootSIFT (Arandjelovic & Zisserman 2012: L1-normalise, square root) and
pycolmap's SIFT (COLMAP's CPU extractor, RootSIFT-normalised as COLMAP stores it). Every backend returns
keypoints in COLMAP's pixel convention (centre of the top-left pixel at (0.5, 0.5)) of the full-size
image, and 128-byte uint8 descriptors (RootSIFT values are scaled by 512 and clipped, as COLMAP does).

Pixel conventions at the OpenCV boundary: `cv2.KeyPoint.pt` has the top-left pixel's centre at (0, 0),
so 0.5 is added. OpenCV's SIFT is created with `enable_precise_upscale`: without it, its doubled first
octave shifts keypoints by +0.25 px (measured on a synthetic blob; tests/test_features_match.py).
Downscaling for extraction keeps the continuous frame: `x_full = x_small * W / w_small` in COLMAP pixels.

Images are read as RGBA: transparent pixels (NeRF-synthetic backgrounds) are composited over a grey
`background` and, with `alpha_as_mask`, masked. A mask (`ImageInfo.mask_path`, zero = masked) drops
keypoints whose pixel is masked, as COLMAP does; with `mask_classes`, so do the pixels of the labeled
instances of those classes (objects that move: people, cars), grown by `mask_dilate_px`. An image
without keypoints is kept with empty arrays and reported; an unreadable one is dropped and reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from recon3d.errors import DataError, StageError
from recon3d.io import images
from recon3d.scene import Features, Scene
from recon3d.stages.base import Stage, StageConfig, StageContext

DESCRIPTOR_SIZE = 128


class FeaturesConfig(StageConfig):
    backend: Literal["opencv_sift", "opencv_rootsift", "pycolmap_sift"] = Field(
        "opencv_rootsift", description="feature extractor")
    max_keypoints: int = Field(8192, ge=1, description="keep at most this many keypoint locations per image, "
                               "each with all its orientations, as COLMAP's max_num_features (OpenCV: strongest "
                               "response first; pycolmap: COLMAP's own, approximate cap)")
    max_image_size: int = Field(1600, ge=0, description="extract on a copy downscaled (INTER_AREA) so that its "
                                "longest side is at most this many px; keypoints are scaled back; 0 = full size")
    contrast_threshold: float = Field(0.02, gt=0, description="OpenCV's contrastThreshold: a DoG extremum is kept "
                                      "when |DoG| >= contrast_threshold / octave_layers (image in [0, 1]); pycolmap "
                                      "gets that as peak_threshold. 0.02 is COLMAP's default (0.02 / 3); OpenCV's "
                                      "own 0.04 finds about half as many keypoints")
    edge_threshold: float = Field(10.0, gt=0, description="edge-response threshold (both backends)")
    octave_layers: int = Field(3, ge=1, le=8, description="scales per octave (OpenCV nOctaveLayers, COLMAP "
                               "octave_resolution)")
    alpha_as_mask: bool = Field(True, description="images with an alpha channel: drop keypoints on pixels "
                                "with alpha 0")
    background: int = Field(128, ge=0, le=255, description="grey level that transparent pixels are composited "
                            "over before extraction")
    mask_classes: tuple[str, ...] = Field((), description="label classes whose pixels are masked out (e.g. "
                                          "person, car: objects that move), from the scene's labels: instance "
                                          "masks, or boxes where an instance has none")
    mask_dilate_px: int = Field(4, ge=0, description="grow those masks by this many pixels, so that keypoints "
                                "whose descriptor window reaches into a moving object are dropped too")


@dataclass(frozen=True)
class ExtractTask:
    """One image to extract: paths and sizes only, so an executor can ship it to another process."""

    name: str
    path: str
    mask_path: str | None
    width: int  # expected size (ImageInfo), px
    height: int
    cfg: FeaturesConfig
    descriptors_path: str  # the .npy file the task writes the (N, 128) uint8 descriptors to
    label_mask_path: str | None = None  # PNG, non-zero = pixels of a masked class (mask_classes)


@dataclass(frozen=True)
class ExtractResult:
    name: str
    keypoints: np.ndarray  # (N, 2) float32, COLMAP pixels of the full-size image; descriptors: in the task's file
    error: str | None = None  # why the image could not be used
    scale: float = 1.0  # extraction size / full size
    masked: int = 0  # keypoints dropped by the mask or alpha
    seconds: float = 0.0


def run(scene: Scene, cfg: FeaturesConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("features")
    if not scene.images:
        raise StageError("features: the scene has no images", "run ingest first")
    label_masks = write_label_masks(scene, cfg, ctx)
    folder = Path(ctx.workdir) / "descriptors"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [ExtractTask(im.name, im.path, im.mask_path, im.width, im.height, cfg, str(folder / f"{i:06d}.npy"),
                         label_masks.get(im.name)) for i, im in enumerate(scene.images)]
    start = time.perf_counter()
    results = ctx.map(extract_image, tasks, describe=lambda t: f"image {t.name} ({t.path})")
    features: dict[str, Features] = {}
    per_image: dict[str, int] = {}
    for task, res in zip(tasks, results, strict=True):
        if res.error is not None:
            ctx.drop(res.name, res.error)
            continue
        features[res.name] = Features(keypoints=res.keypoints, descriptors=_map_and_unlink(task.descriptors_path))
        per_image[res.name] = len(res.keypoints)
        if len(res.keypoints) == 0:
            ctx.drop(res.name, "no keypoints found (textureless, too small or fully masked); it will match nothing")
    counts = np.array(list(per_image.values()) or [0])
    ctx.count("backend", cfg.backend)
    ctx.count("images", len(scene.images))
    ctx.count("images_with_keypoints", int(np.count_nonzero(counts)))
    ctx.count("keypoints_total", int(counts.sum()))
    ctx.count("keypoints_min_median_max", [int(counts.min()), float(np.median(counts)), int(counts.max())])
    ctx.count("keypoints_per_image", per_image)
    ctx.count("keypoints_masked", int(sum(r.masked for r in results)))
    ctx.count("downscaled_images", int(sum(r.scale < 1.0 for r in results if r.error is None)))
    ctx.count("seconds_extract", round(time.perf_counter() - start, 3))
    if not any(len(f.keypoints) for f in features.values()):
        raise StageError(f"features: no keypoints in any of the {len(scene.images)} images",
                         "check the images (textured? readable? masks not all zero?), or "
                         f"--set features.contrast_threshold={cfg.contrast_threshold / 2:g}")
    return scene.replace(features=features)


def extract_image(task: ExtractTask) -> ExtractResult:
    """Read one image, extract, scale keypoints back to full size, apply its mask. Never raises on bad data:
    the result's `error` says what was wrong."""
    start = time.perf_counter()
    cfg = task.cfg
    try:
        gray, valid = load_gray(task.path, task.mask_path, cfg)
        if task.label_mask_path:
            moving = images.read_rgb(task.label_mask_path)[..., 0] > 0
            valid = ~moving if valid is None else valid & ~moving
    except DataError as exc:
        return _failed(task.name, exc.problem)
    height, width = gray.shape
    if (width, height) != (task.width, task.height):
        return _failed(task.name, f"image {task.path} is {width}x{height} px but the scene says "
                                  f"{task.width}x{task.height}; re-run ingest")
    small, scale = downscale(gray, cfg.max_image_size)
    small_valid = None
    if valid is not None and scale < 1.0:
        small_valid = cv2.resize(valid.view(np.uint8), (small.shape[1], small.shape[0]),
                                 interpolation=cv2.INTER_NEAREST).astype(bool)
    elif valid is not None:
        small_valid = valid
    if cfg.backend == "pycolmap_sift":
        xy, desc = _extract_pycolmap(small, cfg)
    else:
        xy, desc = _extract_opencv(small, small_valid, cfg)
    # COLMAP pixels scale with the image: both frames have their edges at 0 and W
    xy = xy * np.array([width / small.shape[1], height / small.shape[0]])
    masked = 0
    if valid is not None and len(xy):
        col = np.clip(np.floor(xy[:, 0]).astype(int), 0, width - 1)
        row = np.clip(np.floor(xy[:, 1]).astype(int), 0, height - 1)
        keep = valid[row, col]
        masked = int((~keep).sum())
        xy, desc = xy[keep], desc[keep]
    np.save(task.descriptors_path, np.ascontiguousarray(desc, dtype=np.uint8))
    return ExtractResult(task.name, xy.astype(np.float32), scale=scale, masked=masked,
                         seconds=time.perf_counter() - start)


def _map_and_unlink(path: str) -> np.ndarray:
    """The (N, 128) descriptors a task wrote to `path`, memory-mapped read-only, the file's name removed at once:
    the descriptors of a thousand photos then sit in the page cache, not in this process's own memory, until the
    node's scene file holds them (the mapping keeps the data; the disk space goes with the last reference)."""
    descriptors = np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)  # as a loaded scene's arrays
    Path(path).unlink()
    return descriptors


def write_label_masks(scene: Scene, cfg: FeaturesConfig, ctx: StageContext) -> dict[str, str]:
    """image name -> PNG in the node's folder of the pixels that `cfg.mask_classes` cover (dilated by
    `mask_dilate_px`), for the labeled images that show such a class."""
    if not cfg.mask_classes:
        return {}
    from recon3d.labels.masks import class_masks

    out: dict[str, str] = {}
    for name, mask in class_masks(scene, cfg.mask_classes, cfg.mask_dilate_px, "features").items():
        path = ctx.workdir / "label_masks" / f"{len(out):05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
        out[name] = str(path)
    ctx.count("images_label_masked", len(out))
    if not out:
        ctx.drop("mask_classes", f"no labeled image shows {', '.join(cfg.mask_classes)}: nothing masked")
    return out


def _failed(name: str, why: str) -> ExtractResult:
    return ExtractResult(name, np.zeros((0, 2), np.float32), error=why)


def load_gray(path: str, mask_path: str | None, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """The image as (H, W) uint8 grey, transparent pixels composited over `cfg.background`, and the
    (H, W) bool map of usable pixels (None when every pixel is usable). Grey, RGB and RGBA files all work."""
    rgba = images.read_rgba(path)
    alpha = rgba[..., 3]
    gray = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2GRAY)
    valid = None
    if (alpha < 255).any():
        a = alpha.astype(np.float32) / 255.0
        gray = np.clip(np.round(gray * a + cfg.background * (1.0 - a)), 0, 255).astype(np.uint8)
        if cfg.alpha_as_mask:
            valid = alpha > 0
    if mask_path:
        mask = np.asarray(images.read_rgb(mask_path)[..., 0])
        if mask.shape != gray.shape:
            raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px but its image {path} is "
                            f"{gray.shape[1]}x{gray.shape[0]}", "masks must have the size of their image")
        valid = mask > 0 if valid is None else valid & (mask > 0)
    return gray, valid


def downscale(gray: np.ndarray, max_size: int) -> tuple[np.ndarray, float]:
    """gray (H, W) -> a copy whose longest side is at most `max_size` (0 = unchanged), and the scale factor."""
    height, width = gray.shape
    if max_size <= 0 or max(width, height) <= max_size:
        return gray, 1.0
    scale = max_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), scale


@lru_cache(maxsize=4)
def _opencv_sift(layers: int, contrast: float, edge: float) -> cv2.SIFT:
    # precise upscale: the doubled first octave maps pixel x to 2x; OpenCV's default shifts keypoints +0.25 px.
    # No nfeatures cap: OpenCV's would count orientations, and finding all and capping locations is faster
    return cv2.SIFT_create(0, layers, contrast, edge, 1.6, cv2.CV_8U, True)


def _extract_opencv(gray: np.ndarray, valid: np.ndarray | None, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray]:
    sift = _opencv_sift(cfg.octave_layers, cfg.contrast_threshold, cfg.edge_threshold)
    mask = None if valid is None else valid.astype(np.uint8) * 255
    keypoints, desc = sift.detectAndCompute(gray, mask)
    if not keypoints:
        return np.zeros((0, 2)), np.zeros((0, DESCRIPTOR_SIZE), np.uint8)
    xy = np.array([k.pt for k in keypoints], dtype=np.float64) + 0.5  # OpenCV (0, 0) -> COLMAP (0.5, 0.5)
    keep = strongest_locations(xy, np.array([k.response for k in keypoints]), cfg.max_keypoints)
    desc = desc[keep]
    if cfg.backend == "opencv_rootsift":
        desc = rootsift(desc)
    return xy[keep], desc


def strongest_locations(xy: np.ndarray, response: np.ndarray, n: int) -> np.ndarray:
    """Indices of the keypoints at the `n` distinct locations of strongest response, all orientations of a
    location kept, strongest first. xy: (N, 2); response: (N,). Returns (K,) int64, K >= min(n, N)."""
    _, location, inverse = np.unique(xy, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    strength = np.full(len(location), -np.inf)
    np.maximum.at(strength, inverse, response)
    chosen = np.zeros(len(location), dtype=bool)
    chosen[np.argsort(-strength, kind="stable")[:n]] = True
    keep = np.flatnonzero(chosen[inverse])
    return keep[np.argsort(-response[keep], kind="stable")]


def rootsift(desc: np.ndarray) -> np.ndarray:
    """SIFT (N, 128) -> RootSIFT: L1-normalise, square root (unit L2 norm), then `512 x` clipped to uint8 (COLMAP)."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.clip(np.round(np.sqrt(d) * 512.0), 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _pycolmap_extractor(max_keypoints: int, layers: int, peak: float, edge: float):
    from recon3d.colmap_module import pycolmap

    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = 1 << 30  # recon3d downscales itself, the same way for every backend
    options.sift.max_num_features = max_keypoints
    options.sift.octave_resolution = layers
    options.sift.peak_threshold = peak
    options.sift.edge_threshold = edge
    quiet, pycolmap.logging.minloglevel = pycolmap.logging.minloglevel, int(pycolmap.logging.WARNING)
    try:  # COLMAP logs "Creating SIFT CPU feature extractor" at INFO: glog noise on the user's terminal
        return pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)
    finally:
        pycolmap.logging.minloglevel = quiet


def _extract_pycolmap(gray: np.ndarray, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray]:
    from recon3d.colmap_module import pycolmap

    extractor = _pycolmap_extractor(cfg.max_keypoints, cfg.octave_layers,
                                    cfg.contrast_threshold / cfg.octave_layers, cfg.edge_threshold)
    keypoints, desc = extractor.extract_from_uint8_array(np.ascontiguousarray(gray))
    kp = pycolmap.keypoints_to_matrix(keypoints)  # (N, 4) x, y, scale, orientation; COLMAP pixels already
    desc = np.asarray(desc.data, dtype=np.uint8).reshape(-1, DESCRIPTOR_SIZE)
    return kp[:, :2].astype(np.float64), desc


STAGE = Stage(
    name="features",
    version=2,  # 2: 16-bit grey photos read as their 8-bit image (had been clipped white)
    config=FeaturesConfig,
    run=run,
    reads=("images", "labels", "class_names"),
    writes=("features",),
    summary="SIFT / RootSIFT keypoints and descriptors per image (OpenCV or pycolmap), masks respected",
)
