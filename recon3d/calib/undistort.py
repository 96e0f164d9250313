"""Undistort a scene's images to a PINHOLE camera with the same focal lengths and principal point."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from recon3d.calib.mono import opencv_distortion
from recon3d.geometry import camera_models
from recon3d.io import images as image_io
from recon3d.scene import Camera, Scene
from recon3d.stages.base import StageContext


def undistort_images(scene: Scene, ctx: StageContext) -> Scene:
    """Write undistorted copies of the images whose camera has distortion into `ctx.workdir/undistorted/`.

    Each distorted camera gets a PINHOLE twin (new camera id) with its K; those images point to the copies
    (lossless PNGs, `<image name>.png`).
    """
    cameras = dict(scene.cameras)
    twin: dict[int, int] = {}
    images = []
    for im in scene.images:
        cam = scene.cameras[im.camera_id]
        if cam.model in camera_models.PINHOLE_MODELS:
            images.append(im)
            continue
        if im.camera_id not in twin:
            (fx, fy), (cx, cy), _ = camera_models.split_params(cam.model, cam.params)
            twin[im.camera_id] = max(cameras) + 1
            cameras[twin[im.camera_id]] = Camera("PINHOLE", cam.width, cam.height,
                                                 camera_models.make_params("PINHOLE", (fx, fy), (cx, cy)))
        path = ctx.workdir / "undistorted" / f"{im.name}.png"  # lossless: these are training and test targets
        image_io.write_rgb(path, undistort_pixels(image_io.read_rgb(im.path), cam))
        images.append(dataclasses.replace(im, path=str(path), camera_id=twin[im.camera_id]))
    ctx.count("images_undistorted", sum(im.camera_id in twin.values() for im in images))
    return scene.replace(cameras=cameras, images=tuple(images))


def undistort_pixels(pixels: np.ndarray, cam: Camera) -> np.ndarray:
    """pixels (H, W, C) seen by `cam` -> the same size seen by its PINHOLE twin (the same focal lengths and
    principal point, no distortion), bilinear; what no source pixel reaches is 0."""
    k_cv = cam.K.copy()
    k_cv[:2, 2] -= 0.5  # OpenCV pixel convention for remap
    dist = opencv_distortion(cam.model, cam.params)
    if cam.model == "OPENCV_FISHEYE":
        return cv2.fisheye.undistortImage(pixels, k_cv, dist, Knew=k_cv)
    return cv2.undistort(pixels, k_cv, dist, newCameraMatrix=k_cv)
