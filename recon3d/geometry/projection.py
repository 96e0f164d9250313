"""Moving points between the world, a camera and its image."""

from __future__ import annotations

import numpy as np

from recon3d.geometry import camera_models


def transform_points(b_from_a: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Apply a rigid transform to points.

    b_from_a: (4, 4) float64; points_a: (N, 3) float64 in frame a. Returns (N, 3) float64 in frame b.
    """
    t = np.asarray(b_from_a, dtype=np.float64)
    p = np.asarray(points_a, dtype=np.float64)
    if t.shape != (4, 4) or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"expected (4, 4) and (N, 3), got {t.shape} and {p.shape}")
    return p @ t[:3, :3].T + t[:3, 3]


def world_to_pixels(model: str, params: np.ndarray, cam_from_world: np.ndarray,
                    points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into one camera.

    points_world: (N, 3) float64, world frame; cam_from_world: (4, 4).
    Returns pixels (N, 2) float64 (COLMAP convention; NaN behind the camera) and depth z (N,) float64.
    """
    points_cam = transform_points(cam_from_world, points_world)
    return camera_models.project(model, params, points_cam), points_cam[:, 2]


def pixels_to_rays(model: str, params: np.ndarray, cam_from_world: np.ndarray,
                   pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixels, in the world frame.

    pixels: (N, 2) float64, COLMAP convention. Returns origins (N, 3) and unit directions (N, 3), world frame.
    """
    uv = camera_models.unproject(model, params, pixels)
    dirs_cam = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], axis=-1)
    rotation = np.asarray(cam_from_world, dtype=np.float64)[:3, :3]
    dirs = dirs_cam @ rotation  # R.T @ d for each row
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    center = -rotation.T @ np.asarray(cam_from_world)[:3, 3]
    return np.broadcast_to(center, dirs.shape).copy(), dirs


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rays of a pinhole camera K (3, 3), COLMAP pixel convention: (H, W, 3) float64, camera frame, through the
    pixel centres (j + 0.5, i + 0.5), scaled to z = 1, so that a depth (camera z) times its ray is the point."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([(cols + 0.5 - K[0, 2]) / K[0, 0], (rows + 0.5 - K[1, 2]) / K[1, 1],
                     np.ones((height, width))], -1)
