"""Similarity alignment (Umeyama) and the pose-error metrics of SfM benchmarks.

SfM output is defined up to a similarity, so comparisons with ground truth align first and say so:
- ATE (absolute trajectory error): camera centres after a Sim(3) Umeyama alignment onto the truth, RMSE and
  max, in the truth's units (divide by `camera_extent` for a scale-free figure);
- absolute rotation error: each camera's rotation after the alignment's rotation, degrees;
- relative rotation error (RRE): for every pair of cameras, the angle between the estimated and the true
  relative rotation, degrees. It needs no alignment at all.
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

    def inverse(self) -> Sim3:
        return Sim3(1.0 / self.scale, self.rotation.T, -self.rotation.T @ self.translation / self.scale)


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

    alignment: Sim3  # maps the estimate's frame onto the truth's
    position_error: np.ndarray  # (N,) aligned centre distance, truth units (ATE per camera)
    rotation_error_deg: np.ndarray  # (N,) after the alignment's rotation
    relative_rotation_error_deg: np.ndarray  # (N * (N - 1) / 2,) over all pairs, alignment-free

    def summary(self) -> dict[str, float]:
        rre = self.relative_rotation_error_deg
        return {
            "ate_rmse": float(np.sqrt(np.mean(self.position_error**2))),
            "ate_max": float(self.position_error.max()),
            "rotation_error_mean_deg": float(self.rotation_error_deg.mean()),
            "rotation_error_max_deg": float(self.rotation_error_deg.max()),
            "relative_rotation_error_median_deg": float(np.median(rre)) if rre.size else 0.0,
            "relative_rotation_error_max_deg": float(rre.max()) if rre.size else 0.0,
            "sim3_scale": float(self.alignment.scale),
        }


def relative_rotation_errors(cam_from_world_est: np.ndarray, cam_from_world_gt: np.ndarray) -> np.ndarray:
    """Angle between estimated and true `R_j @ R_i.T` for every pair i < j.

    cam_from_world_est, cam_from_world_gt: (N, 4, 4) or (N, 3, 3), same cameras in the same order.
    Returns (N * (N - 1) / 2,) degrees.
    """
    r_est = np.asarray(cam_from_world_est, dtype=np.float64)[:, :3, :3]
    r_gt = np.asarray(cam_from_world_gt, dtype=np.float64)[:, :3, :3]
    i, j = np.triu_indices(len(r_est), k=1)
    # est_j_from_i @ (gt_j_from_i).T = R_j^e R_i^e.T R_i^g R_j^g.T; its angle equals that of
    # (R_j^g.T R_j^e) (R_i^e.T R_i^g), i.e. of the per-camera offsets D_k = R_k^g.T R_k^e compared pairwise
    offset = np.swapaxes(r_gt, -1, -2) @ r_est
    return rotation_angle_deg(offset[j], offset[i])


def camera_extent(cam_from_world: np.ndarray) -> float:
    """Diagonal of the bounding box of the camera centres (the scale ATE is quoted against).

    cam_from_world: (N, 4, 4). Returns 1.0 for a single camera or coincident centres.
    """
    centers = camera_center(np.asarray(cam_from_world, dtype=np.float64))
    return float(np.linalg.norm(centers.max(0) - centers.min(0))) or 1.0


def pose_errors(cam_from_world_est: np.ndarray, cam_from_world_gt: np.ndarray) -> PoseErrors:
    """Align estimated camera centres to the truth with Umeyama, then compare positions and rotations.

    cam_from_world_est, cam_from_world_gt: (N, 4, 4), same cameras in the same order, N >= 3.
    """
    est = np.asarray(cam_from_world_est, dtype=np.float64)
    gt = np.asarray(cam_from_world_gt, dtype=np.float64)
    if not (np.isfinite(est).all() and np.isfinite(gt).all()):
        raise ValueError("pose_errors: a pose is not finite (NaN or inf); drop it before comparing")
    c_est, c_gt = camera_center(est), camera_center(gt)
    sim = umeyama(c_est, c_gt)
    # world_gt_from_world_est rotation is sim.rotation, so R_est_aligned = R_est @ sim.rotation.T
    r_est = est[:, :3, :3] @ sim.rotation.T
    return PoseErrors(
        alignment=sim,
        position_error=np.linalg.norm(sim.apply(c_est) - c_gt, axis=1),
        rotation_error_deg=rotation_angle_deg(r_est, gt[:, :3, :3]),
        relative_rotation_error_deg=relative_rotation_errors(est, gt),
    )
