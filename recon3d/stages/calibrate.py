"""calibrate: intrinsics, distortion and stereo extrinsics from pictures of a chessboard or ChArUco board.

Board images come from `images` (a folder or a glob) or, when empty, from the scene's images. The fit
drops images whose error is far above the rest and reports the uncertainty of every parameter. The
calibrated camera becomes camera 1 (the right camera of a stereo pair camera 2); the scene's images of
its size use it, undistorted on request.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from recon3d.calib import mono, plots, stereo
from recon3d.calib.targets import BoardSpec, Detection, detect
from recon3d.calib.undistort import undistort_images
from recon3d.errors import DataError, StageError
from recon3d.geometry import camera_models
from recon3d.io import images as image_io
from recon3d.io import ply
from recon3d.io.colmap import write_cameras_txt
from recon3d.scene import Calibration, ImageInfo, Scene, StereoCalibration
from recon3d.stages.base import Stage, StageConfig, StageContext


class CalibrateConfig(StageConfig):
    images: str = Field("", description="board images: a folder or a glob; '' = the scene's images")
    stereo_images: str = Field("", description="right-camera board images (folder or glob), paired by sorted name")
    target: Literal["chessboard", "charuco"] = Field("chessboard", description="kind of board")
    corners: tuple[int, int] = Field((9, 6), description="chessboard: inner corners (columns, rows)")
    squares: tuple[int, int] = Field((7, 5), description="ChArUco: squares (columns, rows)")
    square: float = Field(1.0, gt=0, description="side of a square; poses and baseline come in this unit")
    marker: float = Field(0.7, gt=0, description="ChArUco: side of a marker, same unit")
    dictionary: str = Field("DICT_4X4_50", description="ChArUco: cv2.aruco dictionary name")
    detector: Literal["classic", "sb"] = Field("classic", description="chessboard: findChessboardCorners + "
                                               "cornerSubPix (classic) or findChessboardCornersSB (sb)")
    subpix_window: int = Field(11, ge=3, description="classic: cornerSubPix window side, px")
    camera_model: str = Field("OPENCV", description="COLMAP camera model to fit")
    fix: tuple[str, ...] = Field((), description=f"parameters held at their initial value: {mono.FIXABLE}")
    outlier_factor: float = Field(3.0, gt=1, description="reject an image whose RMS > factor x the median RMS")
    outlier_floor_px: float = Field(0.3, ge=0, description="never reject an image whose RMS is below this, px")
    min_images: int = Field(3, ge=3, description="outlier rejection stops at this many images")
    undistort: bool = Field(False, description="undistort the scene's images to a PINHOLE camera")
    depth_pair: int = Field(0, ge=-1, description="stereo: index of the pair to compute depth for (-1: none)")
    num_disparities: int = Field(96, ge=16, description="SGBM disparity range, a multiple of 16, px")
    block_size: int = Field(5, ge=1, description="SGBM block size (odd), px")

    @field_validator("camera_model")
    @classmethod
    def _model(cls, value: str) -> str:
        camera_models.check_model(value)
        return value

    @field_validator("fix")
    @classmethod
    def _fix(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(mono.FIXABLE))
        if unknown:
            raise ValueError(f"cannot fix {unknown}; choose from {mono.FIXABLE}")
        return value

    @model_validator(mode="after")
    def _board(self):
        if min(self.corners) < 2 or min(self.squares) < 2:
            raise ValueError("a board needs at least 2 corners / squares per side")
        if self.target == "charuco" and not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r}")
        if self.num_disparities % 16:
            raise ValueError(f"num_disparities must be a multiple of 16, got {self.num_disparities}")
        return self

    def board(self) -> BoardSpec:
        return BoardSpec(self.target, self.corners, self.squares, self.square, self.marker, self.dictionary)


def board_image_paths(pattern: str, scene: Scene, what: str) -> list[str]:
    """Sorted image paths of a folder or glob, or the scene's images when `pattern` is empty."""
    if not pattern:
        paths = [im.path for im in scene.images]
    elif Path(pattern).is_dir():
        paths = [str(p) for p in image_io.list_images(pattern)]
    else:
        paths = sorted(p for p in glob.glob(pattern) if Path(p).suffix.lower() in image_io.IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"no {what + ' ' if what else ''}board images found at {pattern or 'the scene (no images)'}",
                        "pass a folder or a quoted glob of board pictures, e.g. 'calib/left*.jpg'")
    return paths


PAIRED = "left and right images are paired by sorted name: give the same number"


def check_board_images(images: str, stereo_images: str = "") -> None:
    """What can be said of the board pictures before a run folder is made (`recon3d calibrate` checks them
    first): a folder or glob that holds none, fewer than calibration needs, left and right counts that differ."""
    left = board_image_paths(images, Scene(), "")
    if len(left) < mono.MIN_VIEWS:
        raise DataError(f"{len(left)} board image(s) at {images}: calibration needs {mono.MIN_VIEWS} at least",
                        "take more pictures of the board from different angles")
    if stereo_images:
        right = board_image_paths(stereo_images, Scene(), "right")
        if len(right) != len(left):
            raise DataError(f"{len(left)} left but {len(right)} right board images", PAIRED)


def _detect(item: tuple[str, BoardSpec, str, int]) -> Detection | str:
    return detect(*item)


def _views(paths: list[str], cfg: CalibrateConfig, ctx: StageContext, camera: str,
           table: list[dict], what: str) -> tuple[dict[str, mono.View], tuple[int, int]]:
    """Detect the board in every image; record each image's fate in `table`."""
    spec = cfg.board()
    found = ctx.map(_detect, [(p, spec, cfg.detector, cfg.subpix_window) for p in paths])
    sizes = [d.size for d in found if isinstance(d, Detection)]
    if not sizes:
        raise StageError(f"no {what + ' ' if what else ''}image shows the board ({found[0] if found else 'no images'})",
                         "check --target, --corners (inner corners, e.g. 9x6) and --square")
    size = max(set(sizes), key=sizes.count)
    obj = spec.object_points()
    views = {}
    for path, det in zip(paths, found, strict=True):
        name = Path(path).name
        if isinstance(det, str):
            status, reason = ("unreadable" if "could not be read" in det else "no corners"), det
        elif det.size != size:
            status, reason = "wrong size", f"{det.size[0]}x{det.size[1]} px, the others are {size[0]}x{size[1]}"
        else:
            views[name] = mono.View(name, obj[det.ids], det.corners, det.ids)
            table.append({"image": name, "camera": camera, "status": "used", "corners": len(det.ids)})
            continue
        ctx.drop(f"{camera}/{name}", reason)
        table.append({"image": name, "camera": camera, "status": status, "reason": reason})
    return views, size


def _fit(views: dict[str, mono.View], size, cfg: CalibrateConfig, ctx: StageContext, camera: str,
         table: list[dict]) -> mono.MonoResult:
    result, rejected = mono.fit_rejecting_outliers(list(views.values()), size, cfg.camera_model, cfg.fix,
                                                   cfg.outlier_factor, cfg.outlier_floor_px, cfg.min_images)
    per_image = result.per_image_rms()
    for row in table:
        if row["camera"] == camera and row["status"] == "used":
            if row["image"] in rejected:
                rms, reason = rejected[row["image"]]
                row.update(status="rejected", reason=reason, rms_px=rms)
                ctx.drop(f"{camera}/{row['image']}", reason)
            else:
                row["rms_px"] = per_image[row["image"]]
    rejected_rms = {n: rms for n, (rms, _) in rejected.items()}
    plots.per_image_errors(per_image, rejected_rms, ctx.workdir / f"errors_{camera}.png")
    pts = np.concatenate([views[n].image_points for n in result.residuals])
    res = np.concatenate(list(result.residuals.values()))
    plots.residual_vectors(pts, res, size, ctx.workdir / f"residuals_{camera}.png")
    return result


def run(scene: Scene, cfg: CalibrateConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("calibrate")
    table: list[dict] = []
    what = "left" if cfg.stereo_images else ""
    left_paths = board_image_paths(cfg.images, scene, what)
    left_views, size = _views(left_paths, cfg, ctx, "left", table, what)
    left = _fit(left_views, size, cfg, ctx, "left", table)
    left_id = max(scene.cameras, default=0) + 1  # fresh ids: the scene's own cameras keep theirs
    cameras = {left_id: left.camera}
    calibration = {left_id: _calibration(left_id, left, table, "left")}
    ctx.record("rms_px", left.rms)
    ctx.count("left_rms_px" if cfg.stereo_images else "rms_px", left.rms)
    ctx.record("camera", _camera_json(left))
    rig, metrics = None, scene.metrics
    if cfg.stereo_images:
        right_paths = board_image_paths(cfg.stereo_images, scene, "right")
        if len(right_paths) != len(left_paths):
            raise DataError(f"{len(left_paths)} left but {len(right_paths)} right board images", PAIRED)
        right_views, right_size = _views(right_paths, cfg, ctx, "right", table, "right")
        right = _fit(right_views, right_size, cfg, ctx, "right", table)
        cameras[left_id + 1] = right.camera
        calibration[left_id + 1] = _calibration(left_id + 1, right, table, "right")
        pairs = [(left_views[Path(lp).name], right_views[Path(rp).name])
                 for lp, rp in zip(left_paths, right_paths, strict=True)
                 if Path(lp).name in left.residuals and Path(rp).name in right.residuals]
        result = stereo.calibrate(left.camera, right.camera, pairs)
        epi = stereo.epipolar_error(left.camera, right.camera, result, pairs)
        rig = StereoCalibration(left_id, left_id + 1, result.right_from_left, result.rms_px, epi)
        ctx.record("right_rms_px", right.rms)
        ctx.record("right_camera", _camera_json(right))
        ctx.record("stereo", {"rms_px": result.rms_px, "baseline": result.baseline, "epipolar_error_px": epi,
                              "pairs": len(pairs), "right_from_left": result.right_from_left.tolist()})
        ctx.count("right_rms_px", right.rms)
        ctx.count("stereo", f"rms_px={result.rms_px:.4g}, baseline={result.baseline:.4g} (board units), "
                  f"epipolar_error_px={epi:.3g} over {len(pairs)} pairs")
        if cfg.depth_pair >= 0 and cfg.depth_pair < len(pairs):
            depth = _depth(left_paths, right_paths, pairs[cfg.depth_pair], left.camera, right.camera, result, cfg, ctx)
            ctx.record("depth", depth)  # its frame, for the mesh stage: world = the left camera's frame
            metrics = {**scene.metrics, ctx.node_id: {"kind": "depth_maps", "frames": [depth["frame"]]}}
    ctx.record("images", table)
    write_cameras_txt(cameras, ctx.workdir / "cameras.txt")
    ctx.count("images_used", sum(r["status"] == "used" for r in table))
    ctx.count("images_dropped", sum(r["status"] != "used" for r in table))
    images = tuple(im if (im.width, im.height) != size else _with_camera(im, left_id) for im in scene.images)
    in_use = {im.camera_id for im in images}
    kept = {i: c for i, c in scene.cameras.items() if i in in_use}  # drop the guesses nobody uses now
    out = scene.replace(cameras={**kept, **cameras}, calibration=calibration, stereo=rig, images=images,
                        metrics=metrics)
    if cfg.undistort and out.images:
        out = undistort_images(out, ctx)
    return out


def _with_camera(image: ImageInfo, camera_id: int) -> ImageInfo:
    return dataclasses.replace(image, camera_id=camera_id)


def _calibration(camera_id: int, result: mono.MonoResult, table: list[dict], camera: str) -> Calibration:
    dropped = {r["image"]: r["reason"] for r in table if r["camera"] == camera and r["status"] != "used"}
    return Calibration(camera_id, result.rms, result.param_std, result.per_image_rms(), dropped)


def _camera_json(result: mono.MonoResult) -> dict:
    names = camera_models.MODELS[result.camera.model]
    return {"model": result.camera.model, "width": result.camera.width, "height": result.camera.height,
            "params": dict(zip(names, result.camera.params.tolist(), strict=True)),
            "std": dict(zip(names, result.param_std.tolist(), strict=True))}


def _depth(left_paths, right_paths, pair, left_cam, right_cam, result, cfg, ctx) -> dict:
    """Rectify one pair, SGBM disparity with a left-right check, depth map and coloured point cloud."""
    vl, vr = pair
    lp = next(p for p in left_paths if Path(p).name == vl.name)
    rp = next(p for p in right_paths if Path(p).name == vr.name)
    left_rgb, right_rgb = image_io.read_rgb(lp), image_io.read_rgb(rp)
    rect_l = stereo.rectify_image(left_cam, result.rect_left, result.proj_left, left_rgb)
    rect_r = stereo.rectify_image(right_cam, result.rect_right, result.proj_right, right_rgb)
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (rect_l, rect_r)]
    disparity = stereo.disparity_sgbm(*gray, cfg.num_disparities, cfg.block_size)
    depth = stereo.depth_from_disparity(disparity, result)
    np.save(ctx.workdir / "depth.npy", depth)
    plots.disparity_map(rect_l, disparity, ctx.workdir / "disparity.png")
    image_io.write_rgb(ctx.workdir / "rectified_left.png", rect_l)
    xyz, rgb = stereo.depth_points(depth, rect_l, result)
    ply.write_points(ctx.workdir / "depth_points.ply", xyz, rgb)
    valid = np.isfinite(depth)
    cam_from_left = np.eye(4)
    cam_from_left[:3, :3] = result.rect_left  # the rectified camera, in the frame of the left camera
    return {"pair": [vl.name, vr.name], "valid_fraction": float(valid.mean()),
            "median_depth": float(np.median(depth[valid])) if valid.any() else None,
            "files": ["depth.npy", "disparity.png", "depth_points.ply", "rectified_left.png"],
            "frame": {"depth": str(ctx.workdir / "depth.npy"), "rgb": str(ctx.workdir / "rectified_left.png"),
                      "K": result.proj_left[:, :3].tolist(), "cam_from_world": cam_from_left.tolist()}}


STAGE = Stage(
    name="calibrate",
    version=2,  # 2: the stereo depth map as a `depth_maps` metrics entry (the mesh stage fuses it)
    config=CalibrateConfig,
    run=run,
    reads=("images", "cameras"),
    writes=("cameras", "calibration", "stereo", "images", "metrics"),
    summary="intrinsics, distortion, uncertainty and stereo extrinsics from chessboard / ChArUco pictures",
)
