"""Similarity alignment (Umeyama) and pose errors after it.

SfM output is defined up to a similarity, so comparisons with ground truth align first and say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.geometry.rotation import camera_center, rotation_angle_deg


@dataclass(frozen=True)
class Sim3:
    """`dst = scale * rotation @ src + translation`."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) in the source frame -> (N, 3) in the destination frame."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Sim3:
    """Least-squares similarity mapping `src` onto `dst` (Umeyama 1991, eqs. 34-43).

    src, dst: (N, 3) float64 corresponding points, N >= 3 not collinear.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"umeyama needs two (N>=3, 3) arrays of equal shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1.0
    rotation = u @ s @ vt
    var_s = (xs**2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ s) / var_s) if with_scale else 1.0
    return Sim3(scale, rotation, mu_d - scale * rotation @ mu_s)


@dataclass(frozen=True)
class PoseErrors:
    """Per-camera errors of estimated poses against ground truth, after a Sim(3) alignment of centres."""

    alignment: Sim3
    position_error: np.ndarray  # (N,) in ground-truth units
    rotation_error_deg: np.ndarray  # (N,)

    def summary(self) -> dict[str, float]:
        return {
            "aligned_position_rmse": float(np.sqrt(np.mean(self.position_error**2))),
            "aligned_position_max": float(self.position_error.max()),
            "rotation_error_mean_deg": float(self.rotation_error_deg.mean()),
            "rotation_error_max_deg": float(self.rotation_error_deg.max()),
            "sim3_scale": float(self.alignment.scale),
        }


def pose_errors(cam_from_world_est: np.ndarray, cam_from_world_gt: np.ndarray) -> PoseErrors:
    """Align estimated camera centres to the truth with Umeyama, then compare positions and rotations.

    cam_from_world_est, cam_from_world_gt: (N, 4, 4), same cameras in the same order, N >= 3.
    """
    c_est, c_gt = camera_center(cam_from_world_est), camera_center(cam_from_world_gt)
    sim = umeyama(c_est, c_gt)
    # world_gt_from_world_est rotation is sim.rotation, so R_est_aligned = R_est @ sim.rotation.T
    r_est = np.asarray(cam_from_world_est)[:, :3, :3] @ sim.rotation.T
    return PoseErrors(
        alignment=sim,
        position_error=np.linalg.norm(sim.apply(c_est) - c_gt, axis=1),
        rotation_error_deg=rotation_angle_deg(r_est, np.asarray(cam_from_world_gt)[:, :3, :3]),
    )
