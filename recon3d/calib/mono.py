"""Single-camera calibration: an OpenCV fit per COLMAP model, outlier images, parameter uncertainty.

Per-image errors and uncertainties are computed with recon3d's own COLMAP camera models
(`geometry.camera_models`), so every model, fisheye included, is judged by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon3d.errors import StageError
from recon3d.geometry import camera_models
from recon3d.geometry.rotation import rigid
from recon3d.scene import Camera

# extra OpenCV flags that restrict the pinhole+distortion fit to each COLMAP model
_MODEL_FLAGS = {
    "SIMPLE_PINHOLE": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3
    | cv2.CALIB_ZERO_TANGENT_DIST,
    "PINHOLE": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "SIMPLE_RADIAL": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "RADIAL": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "OPENCV": cv2.CALIB_FIX_K3,
    "FULL_OPENCV": cv2.CALIB_RATIONAL_MODEL,
}
_FIX_FLAGS = {
    "principal_point": cv2.CALIB_FIX_PRINCIPAL_POINT, "aspect_ratio": cv2.CALIB_FIX_ASPECT_RATIO,
    "tangential": cv2.CALIB_ZERO_TANGENT_DIST, "k1": cv2.CALIB_FIX_K1, "k2": cv2.CALIB_FIX_K2, "k3": cv2.CALIB_FIX_K3,
}
_FISHEYE_FIX = {"principal_point": cv2.fisheye.CALIB_FIX_PRINCIPAL_POINT, "k1": cv2.fisheye.CALIB_FIX_K1,
                "k2": cv2.fisheye.CALIB_FIX_K2, "k3": cv2.fisheye.CALIB_FIX_K3, "k4": cv2.fisheye.CALIB_FIX_K4}
FIXABLE = sorted(set(_FIX_FLAGS) | set(_FISHEYE_FIX))


@dataclass(frozen=True)
class View:
    """One image's correspondences: board points (K, 3), their pixels (K, 2) in COLMAP convention, and
    the corner ids (K,) that pair them across the two images of a stereo rig."""

    name: str
    object_points: np.ndarray
    image_points: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class MonoResult:
    camera: Camera
    cam_from_board: dict[str, np.ndarray]  # name -> (4, 4)
    residuals: dict[str, np.ndarray]  # name -> (K, 2) observed - projected, px
    param_std: np.ndarray  # (P,) in COLMAP order; 0 for parameters held fixed

    @property
    def rms(self) -> float:
        """OpenCV's RMS: sqrt(mean over corners of dx^2 + dy^2)."""
        r = np.concatenate(list(self.residuals.values()))
        return float(np.sqrt(np.mean(np.sum(r**2, axis=1))))

    def per_image_rms(self) -> dict[str, float]:
        return {n: float(np.sqrt(np.mean(np.sum(r**2, axis=1)))) for n, r in self.residuals.items()}


def opencv_distortion(model: str, params: np.ndarray) -> np.ndarray:
    """OpenCV's distortion vector of a COLMAP camera: (k1 k2 p1 p2 k3 k4 k5 k6), or fisheye (k1..k4)."""
    _, _, d = camera_models.split_params(model, params)
    if model == "OPENCV_FISHEYE":
        return d.copy()
    out = np.zeros(8)
    n = {"SIMPLE_RADIAL": 1, "RADIAL": 2}.get(model, len(d))
    out[:n] = d[:n]
    return out


def _colmap_params(model: str, k: np.ndarray, dist: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    dist = np.ravel(dist)
    n_dist = len(camera_models.MODELS[model]) - (3 if camera_models.MODELS[model][0] == "f" else 4)
    focal = ((fx + fy) / 2, (fx + fy) / 2) if camera_models.MODELS[model][0] == "f" else (fx, fy)
    return camera_models.make_params(model, focal, (cx, cy), tuple(dist[:n_dist]))


MIN_VIEWS = 3  # board views a calibration needs


def fit(views: list[View], size: tuple[int, int], model: str, fix: tuple[str, ...] = ()) -> MonoResult:
    """Calibrate one camera from board views. size: (width, height)."""
    if len(views) < MIN_VIEWS:
        raise StageError(f"calibration needs at least {MIN_VIEWS} images with a detected target, got {len(views)}",
                         "take more pictures of the board from different angles")
    obj = [v.object_points.astype(np.float32) for v in views]
    img = [v.image_points.astype(np.float32) for v in views]
    k0 = np.array([[1.0, 0, size[0] / 2], [0, 1.0, size[1] / 2], [0, 0, 1]])
    if model == "OPENCV_FISHEYE":
        flags = cv2.fisheye.CALIB_RECOMPUTE_EXTRINSIC | cv2.fisheye.CALIB_FIX_SKEW
        for name in fix:
            flags |= _FISHEYE_FIX[name]
        if "principal_point" in fix:
            flags |= cv2.fisheye.CALIB_USE_INTRINSIC_GUESS
            k0[0, 0] = k0[1, 1] = max(size) / 2
        _, k, dist, rvecs, tvecs = cv2.fisheye.calibrate(
            [o[None] for o in obj], [i[None] for i in img], size, k0, np.zeros(4), flags=flags,
            criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12))
    else:
        flags = _MODEL_FLAGS[model]
        for name in fix:
            flags |= _FIX_FLAGS[name]
        if "principal_point" in fix:  # else OpenCV pins its own centre, (w - 1) / 2, not COLMAP's w / 2
            flags |= cv2.CALIB_USE_INTRINSIC_GUESS
            k0[0, 0] = k0[1, 1] = max(size)
        _, k, dist, rvecs, tvecs = cv2.calibrateCamera(
            obj, img, size, k0, np.zeros(8 if model == "FULL_OPENCV" else 5), flags=flags,
            criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12))
    camera = Camera(model, size[0], size[1], _colmap_params(model, k, dist))
    poses = {v.name: rigid(cv2.Rodrigues(r)[0], np.ravel(t)) for v, r, t in zip(views, rvecs, tvecs, strict=True)}
    residuals = {v.name: v.image_points - _project(camera.params, model, poses[v.name], v.object_points)
                 for v in views}
    free = free_parameters(model, fix)
    std = parameter_std(model, camera.params, free, views, poses)
    return MonoResult(camera, poses, residuals, std)


def free_parameters(model: str, fix: tuple[str, ...]) -> np.ndarray:
    """Indices of the COLMAP parameters the fit estimated (bool mask (P,))."""
    names = camera_models.MODELS[model]
    held = set()
    if "principal_point" in fix:
        held |= {"cx", "cy"}
    if "tangential" in fix:
        held |= {"p1", "p2"}
    held |= {n for n in fix if n.startswith("k")}
    if model == "OPENCV_FISHEYE":
        return np.array([n not in held for n in names])
    return np.array([n not in held and not (n == "k" and "k1" in fix) for n in names])


def _project(params: np.ndarray, model: str, cam_from_board: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts_cam = points @ cam_from_board[:3, :3].T + cam_from_board[:3, 3]
    return camera_models.project(model, params, pts_cam)


def parameter_std(model: str, params: np.ndarray, free: np.ndarray, views: list[View],
                  poses: dict[str, np.ndarray], step: float = 1e-6) -> np.ndarray:
    """Standard deviations of the free intrinsics: sigma^2 (J^T J)^-1 at the optimum.

    J is the Jacobian of all corner residuals with respect to the free intrinsics and every view's pose
    (rotation vector, translation), by central differences; sigma^2 = SSR / (2K - unknowns).
    Returns (P,) with 0 for held parameters.
    """
    n_free, n_views = int(free.sum()), len(views)
    rows = [2 * len(v.object_points) for v in views]
    jac = np.zeros((sum(rows), n_free + 6 * n_views))
    resid = []
    start = 0
    for j, v in enumerate(views):
        pose = poses[v.name]
        base = np.concatenate([cv2.Rodrigues(pose[:3, :3])[0].ravel(), pose[:3, 3]])

        def project(p, x, obj=v.object_points):
            return _project(p, model, rigid(cv2.Rodrigues(x[:3])[0], x[3:]), obj).ravel()

        resid.append(v.image_points.ravel() - project(params, base))
        sl = slice(start, start + rows[j])
        for col, i in enumerate(np.flatnonzero(free)):
            h = step * max(1.0, abs(params[i]))
            dp = np.zeros_like(params)
            dp[i] = h
            jac[sl, col] = (project(params + dp, base) - project(params - dp, base)) / (2 * h)
        for c in range(6):
            dx = np.zeros(6)
            dx[c] = step
            jac[sl, n_free + 6 * j + c] = (project(params, base + dx) - project(params, base - dx)) / (2 * step)
        start += rows[j]
    r = np.concatenate(resid)
    dof = max(len(r) - jac.shape[1], 1)
    cov = np.linalg.pinv(jac.T @ jac) * (r @ r / dof)
    std = np.zeros(len(params))
    std[free] = np.sqrt(np.clip(np.diag(cov)[:n_free], 0, None))
    return std


def fit_rejecting_outliers(views: list[View], size: tuple[int, int], model: str, fix: tuple[str, ...],
                           factor: float, floor_px: float, min_images: int
                           ) -> tuple[MonoResult, dict[str, tuple[float, str]]]:
    """Fit, drop the worst image while its RMS exceeds max(factor x median, floor_px), refit.

    Returns the final fit and {image name: (its RMS when rejected, why)}.
    """
    rejected: dict[str, tuple[float, str]] = {}
    while True:
        result = fit(views, size, model, fix)
        per_image = result.per_image_rms()
        median = float(np.median(list(per_image.values())))
        worst = max(per_image, key=per_image.get)
        limit = max(factor * median, floor_px)
        if per_image[worst] <= limit or len(views) <= min_images:
            return result, rejected
        rejected[worst] = (per_image[worst],
                           f"RMS {per_image[worst]:.3f} px > {limit:.3f} px ({factor:g} x median {median:.3f} px)")
        views = [v for v in views if v.name != worst]
