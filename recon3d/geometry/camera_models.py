"""COLMAP camera models: parameter tables, projection (with distortion) and its iterative inverse.

Formulas and parameter orders follow COLMAP's `src/colmap/sensor/models.h`, so parameters round-trip
through `pycolmap.Camera` unchanged. Pixels use COLMAP's continuous convention (the centre of the top-left
pixel is (0.5, 0.5)); a module that calls OpenCV shifts by 0.5 at its boundary.
"""

from __future__ import annotations

import numpy as np

# name -> parameter names, in COLMAP order
MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")  # the models without distortion


def check_model(model: str, params: np.ndarray | None = None) -> None:
    """Raise ValueError naming the model (and the expected parameters) if they do not fit."""
    if model not in MODELS:
        raise ValueError(f"unknown camera model {model!r}; recon3d knows {', '.join(MODELS)}")
    if params is not None and np.shape(params) != (len(MODELS[model]),):
        raise ValueError(
            f"camera model {model} takes {len(MODELS[model])} parameters {MODELS[model]}, "
            f"got shape {np.shape(params)}"
        )


def split_params(model: str, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split COLMAP parameters into focal (2,), principal point (2,) and distortion (D,)."""
    check_model(model, params)
    p = np.asarray(params, dtype=np.float64)
    if MODELS[model][0] == "f":
        return np.array([p[0], p[0]]), p[1:3].copy(), p[3:].copy()
    return p[0:2].copy(), p[2:4].copy(), p[4:].copy()


def make_params(model: str, focal: tuple[float, float], principal: tuple[float, float],
                distortion: tuple[float, ...] = ()) -> np.ndarray:
    """COLMAP parameter vector of `model` from focal (fx, fy), principal point and distortion.

    Distortion coefficients are in the model's order (k, k1 k2, k1 k2 p1 p2, ...); missing ones are 0.
    For single-focal models fx is used. Returns (P,) float64.
    """
    check_model(model)
    n_dist = len(MODELS[model]) - (3 if MODELS[model][0] == "f" else 4)
    if len(distortion) > n_dist:
        raise ValueError(f"camera model {model} has {n_dist} distortion parameters, got {len(distortion)}")
    dist = list(distortion) + [0.0] * (n_dist - len(distortion))
    head = [focal[0]] if MODELS[model][0] == "f" else [focal[0], focal[1]]
    return np.array(head + [principal[0], principal[1]] + dist, dtype=np.float64)


def calibration_matrix(model: str, params: np.ndarray) -> np.ndarray:
    """The pinhole part K (3, 3) float64 of a camera (distortion not included)."""
    (fx, fy), (cx, cy), _ = split_params(model, params)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def distort(model: str, params: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Apply the model's distortion to normalised image coordinates.

    uv: (..., 2) float64, `(x / z, y / z)` in the camera frame. Returns (..., 2) distorted coordinates.
    """
    _, _, d = split_params(model, params)
    uv = np.asarray(uv, dtype=np.float64)
    u, v = uv[..., 0], uv[..., 1]
    u2, v2, uv_ = u * u, v * v, u * v
    r2 = u2 + v2
    if model in PINHOLE_MODELS:
        return uv.copy()
    if model == "SIMPLE_RADIAL":
        radial = 1.0 + d[0] * r2
        return np.stack([u * radial, v * radial], axis=-1)
    if model == "RADIAL":
        radial = 1.0 + d[0] * r2 + d[1] * r2 * r2
        return np.stack([u * radial, v * radial], axis=-1)
    if model == "OPENCV":
        k1, k2, p1, p2 = d
        radial = 1.0 + k1 * r2 + k2 * r2 * r2
        return np.stack(
            [u * radial + 2 * p1 * uv_ + p2 * (r2 + 2 * u2), v * radial + 2 * p2 * uv_ + p1 * (r2 + 2 * v2)],
            axis=-1,
        )
    if model == "FULL_OPENCV":
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        r4, r6 = r2 * r2, r2 * r2 * r2
        radial = (1.0 + k1 * r2 + k2 * r4 + k3 * r6) / (1.0 + k4 * r2 + k5 * r4 + k6 * r6)
        return np.stack(
            [u * radial + 2 * p1 * uv_ + p2 * (r2 + 2 * u2), v * radial + 2 * p2 * uv_ + p1 * (r2 + 2 * v2)],
            axis=-1,
        )
    if model == "OPENCV_FISHEYE":
        k1, k2, k3, k4 = d
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        thetad = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        scale = np.where(r > np.finfo(np.float64).eps, thetad / np.where(r > 0, r, 1.0), 1.0)
        return uv * scale[..., None]
    raise AssertionError(model)  # unreachable: check_model ran in split_params


def project(model: str, params: np.ndarray, points_cam: np.ndarray) -> np.ndarray:
    """Project camera-frame points to pixels (COLMAP convention), distortion included.

    points_cam: (..., 3) float64, camera frame (OpenCV axes, z forward). Points with z <= 0 give NaN.
    Returns (..., 2) float64 pixels.
    """
    p = np.asarray(points_cam, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"points_cam must have shape (..., 3), got {p.shape}")
    z = np.where(p[..., 2] > 0, p[..., 2], np.nan)
    uv = distort(model, params, p[..., :2] / z[..., None])
    focal, principal, _ = split_params(model, params)
    return uv * focal + principal


def unproject(model: str, params: np.ndarray, pixels: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Invert `project`: pixels to undistorted normalised coordinates `(x / z, y / z)`.

    pixels: (..., 2) float64, COLMAP convention. Returns (..., 2) float64. The distortion is inverted by
    Newton's method with a central-difference Jacobian, as COLMAP's `IterativeUndistortion` does.
    """
    focal, principal, _ = split_params(model, params)
    target = (np.asarray(pixels, dtype=np.float64) - principal) / focal
    if model in PINHOLE_MODELS:
        return target
    x = target.copy()
    eps = 1e-7
    ex, ey = np.array([eps, 0.0]), np.array([0.0, eps])
    for _ in range(iterations):
        residual = distort(model, params, x) - target
        jx = (distort(model, params, x + ex) - distort(model, params, x - ex)) / (2 * eps)
        jy = (distort(model, params, x + ey) - distort(model, params, x - ey)) / (2 * eps)
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        step = np.stack(
            [jy[..., 1] * residual[..., 0] - jy[..., 0] * residual[..., 1],
             -jx[..., 1] * residual[..., 0] + jx[..., 0] * residual[..., 1]],
            axis=-1,
        ) / det[..., None]
        x = x - step
        if np.nanmax(np.abs(step), initial=0.0) < 1e-14:
            break
    return x
