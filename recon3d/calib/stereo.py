"""Stereo: extrinsics between two calibrated cameras, rectification, and depth by semi-global matching."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon3d.calib.mono import View, opencv_distortion
from recon3d.errors import StageError
from recon3d.geometry.rotation import rigid
from recon3d.scene import Camera


@dataclass(frozen=True)
class StereoResult:
    right_from_left: np.ndarray  # (4, 4): x_right = R x_left + t, board units
    rms_px: float
    rect_left: np.ndarray  # (3, 3) rotation of the left camera into the rectified frame
    rect_right: np.ndarray
    proj_left: np.ndarray  # (3, 4) rectified projection, COLMAP pixel convention
    proj_right: np.ndarray

    @property
    def baseline(self) -> float:
        return float(np.linalg.norm(self.right_from_left[:3, 3]))


def _opencv_k(camera: Camera) -> np.ndarray:
    """K in OpenCV's pixel convention ((0, 0) at the centre of the top-left pixel)."""
    k = camera.K.copy()
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    return k


def calibrate(left: Camera, right: Camera, pairs: list[tuple[View, View]]) -> StereoResult:
    """Extrinsics with both cameras' intrinsics held fixed, then rectification (cv2.stereoRectify)."""
    if left.model == "OPENCV_FISHEYE" or right.model == "OPENCV_FISHEYE":
        raise StageError("stereo calibration of OPENCV_FISHEYE cameras is not supported",
                         "calibrate the pair with a perspective model (OPENCV, FULL_OPENCV)")
    if len(pairs) < 1:
        raise StageError("no image pair has the target detected in both images",
                         "check that left and right images are paired by sorted name")
    obj, img_l, img_r = [], [], []
    for vl, vr in pairs:
        common, il, ir = np.intersect1d(vl.ids, vr.ids, return_indices=True)
        obj.append(vl.object_points[il].astype(np.float32))
        img_l.append((vl.image_points[il] - 0.5).astype(np.float32))  # to OpenCV pixels
        img_r.append((vr.image_points[ir] - 0.5).astype(np.float32))
    kl, kr = _opencv_k(left), _opencv_k(right)
    dl, dr = opencv_distortion(left.model, left.params), opencv_distortion(right.model, right.params)
    size = (left.width, left.height)
    rms, _, _, _, _, rot, t, _, _ = cv2.stereoCalibrate(
        obj, img_l, img_r, kl, dl, kr, dr, size, flags=cv2.CALIB_FIX_INTRINSIC,
        criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12))
    r1, r2, p1, p2, _, _, _ = cv2.stereoRectify(kl, dl, kr, dr, size, rot, t, alpha=0)
    p1, p2 = p1.copy(), p2.copy()
    p1[:2, 2] += 0.5  # back to COLMAP pixels; the baseline term p2[0, 3] = fx * tx is unaffected
    p2[:2, 2] += 0.5
    return StereoResult(rigid(rot, np.ravel(t)), float(rms), r1, r2, p1, p2)


def rectify_points(camera: Camera, rect: np.ndarray, proj: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of the original image -> pixels (N, 2) of the rectified image, COLMAP convention."""
    dist = opencv_distortion(camera.model, camera.params)
    out = cv2.undistortPoints((pixels - 0.5).reshape(-1, 1, 2), _opencv_k(camera), dist, R=rect,
                              P=_opencv_proj(proj))
    return out.reshape(-1, 2) + 0.5


def epipolar_error(left: Camera, right: Camera, stereo: StereoResult, pairs: list[tuple[View, View]]) -> float:
    """Mean |y_left - y_right| of matched corners after rectification, px."""
    diffs = []
    for vl, vr in pairs:
        _, il, ir = np.intersect1d(vl.ids, vr.ids, return_indices=True)
        yl = rectify_points(left, stereo.rect_left, stereo.proj_left, vl.image_points[il])[:, 1]
        yr = rectify_points(right, stereo.rect_right, stereo.proj_right, vr.image_points[ir])[:, 1]
        diffs.append(np.abs(yl - yr))
    return float(np.mean(np.concatenate(diffs)))


def _opencv_proj(proj: np.ndarray) -> np.ndarray:
    p = proj.copy()
    p[:2, 2] -= 0.5
    return p


def rectify_image(camera: Camera, rect: np.ndarray, proj: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Resample an image (H, W, ...) into the rectified frame, same size."""
    dist = opencv_distortion(camera.model, camera.params)
    map_x, map_y = cv2.initUndistortRectifyMap(_opencv_k(camera), dist, rect, _opencv_proj(proj)[:, :3],
                                               (camera.width, camera.height), cv2.CV_32FC1)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR)


def disparity_sgbm(left_gray: np.ndarray, right_gray: np.ndarray, num_disparities: int = 128,
                   block_size: int = 5, lr_tolerance: float = 1.0) -> np.ndarray:
    """Disparity (H, W) float32 in px of a rectified pair by SGBM, NaN where the left-right check fails."""
    channels = 1
    left_matcher = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
        P1=8 * channels * block_size**2, P2=32 * channels * block_size**2, uniquenessRatio=10,
        speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    right_matcher = cv2.ximgproc.createRightMatcher(left_matcher)
    disp_l = left_matcher.compute(left_gray, right_gray).astype(np.float32) / 16.0
    disp_r = right_matcher.compute(right_gray, left_gray).astype(np.float32) / 16.0  # negative values
    h, w = disp_l.shape
    cols = np.arange(w)[None, :] - np.round(disp_l).astype(int)
    inside = (cols >= 0) & (disp_l > 0)
    back = np.where(inside, -disp_r[np.arange(h)[:, None], np.clip(cols, 0, w - 1)], np.inf)
    ok = inside & (np.abs(back - disp_l) <= lr_tolerance)
    return np.where(ok, disp_l, np.nan).astype(np.float32)


def depth_from_disparity(disparity: np.ndarray, stereo: StereoResult) -> np.ndarray:
    """Z = f * B / d (H, W) float32 in board units, NaN where the disparity is invalid."""
    focal = stereo.proj_left[0, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (focal * stereo.baseline / disparity).astype(np.float32)


def depth_points(depth: np.ndarray, rgb: np.ndarray, stereo: StereoResult) -> tuple[np.ndarray, np.ndarray]:
    """Back-project valid depths of the rectified left image: (N, 3) float64 in the rectified left camera
    frame and their colours (N, 3) uint8."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    ok = np.isfinite(depth)
    p = stereo.proj_left
    x = (u[ok] + 0.5 - p[0, 2]) / p[0, 0] * depth[ok]
    y = (v[ok] + 0.5 - p[1, 2]) / p[1, 1] * depth[ok]
    return np.column_stack([x, y, depth[ok]]).astype(np.float64), rgb[ok]
