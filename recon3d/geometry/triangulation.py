"""Multi-view triangulation (linear DLT in float64) and the checks a new 3D point must pass."""

from __future__ import annotations

import numpy as np


def triangulate_dlt(cam_from_world: np.ndarray, uv: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Linear triangulation of N points from up to K views each (Hartley & Zisserman, sec. 12.2).

    cam_from_world: (N, K, 4, 4) poses of the views that see each point (padding rows are ignored);
    uv: (N, K, 2) undistorted normalised image coordinates `(x / z, y / z)`; valid: (N, K) bool, which
    views count (all by default). Each equation is normalised so every view weighs the same.
    Returns (N, 3) float64 world points (NaN where fewer than 2 views are valid).
    """
    poses = np.asarray(cam_from_world, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64)
    if poses.ndim != 4 or poses.shape[-2:] != (4, 4) or uv.shape != poses.shape[:2] + (2,):
        raise ValueError(f"expected poses (N, K, 4, 4) and uv (N, K, 2), got {poses.shape} and {uv.shape}")
    valid = np.ones(uv.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    p = poses[..., :3, :]  # (N, K, 3, 4)
    rows = np.concatenate([uv[..., 0:1] * p[..., 2, :] - p[..., 0, :],
                           uv[..., 1:2] * p[..., 2, :] - p[..., 1, :]], axis=-1).reshape(*uv.shape[:2], 2, 4)
    rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True).clip(1e-12)
    rows = np.where(valid[..., None, None], rows, 0.0).reshape(len(uv), -1, 4)
    _, _, vt = np.linalg.svd(rows)
    homog = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        points = homog[:, :3] / homog[:, 3:]
    points[valid.sum(1) < 2] = np.nan
    return points


def max_triangulation_angle_deg(centers: np.ndarray, points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Largest angle between the rays from the valid views' centres to each point.

    centers: (N, K, 3) camera centres; points: (N, 3); valid: (N, K). Returns (N,) degrees.
    """
    rays = points[:, None, :] - centers
    rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True).clip(1e-12)
    cos = np.einsum("nid,njd->nij", rays, rays)
    both = valid[:, :, None] & valid[:, None, :]
    cos = np.where(both, cos, 1.0)
    return np.degrees(np.arccos(np.clip(cos.min(axis=(1, 2)), -1.0, 1.0)))
