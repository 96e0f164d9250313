"""Seeded two-view correspondences with exact truth: noisy inliers, uniformly random outliers, the true pose.

The figure of merit for two-view geometry (issue 5): 300 correspondences, 0.5 px noise, 30 % outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.geometry.rotation import invert_rigid
from recon3d.scene import Camera
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.observe import observe
from recon3d.synthetic.rigs import orbit
from recon3d.synthetic.surfaces import make_world, sample_points


@dataclass(frozen=True)
class TwoViewCase:
    """Correspondences between two synthetic views. Pixels are COLMAP convention."""

    camera: Camera  # shared by both views
    cam_from_world: np.ndarray  # (2, 4, 4)
    x1: np.ndarray  # (N, 2) float64, view 1, with noise
    x2: np.ndarray  # (N, 2) float64, view 2, with noise; a random pixel where is_outlier
    x1_true: np.ndarray  # (N, 2) exact projections
    x2_true: np.ndarray  # (N, 2) exact projections (of the true 3D point, also for outliers)
    is_outlier: np.ndarray  # (N,) bool

    @property
    def cam2_from_cam1(self) -> np.ndarray:
        """(4, 4) true relative pose, translation scaled to unit norm."""
        pose = self.cam_from_world[1] @ invert_rigid(self.cam_from_world[0])
        pose[:3, 3] /= np.linalg.norm(pose[:3, 3])
        return pose


def two_view_case(seed: int = 0, n_points: int = 300, noise_px: float = 0.5, outlier_rate: float = 0.3,
                  model: str = "OPENCV", width: int = 640, height: int = 480, views_per_orbit: int = 12,
                  ) -> TwoViewCase:
    """Two neighbouring views of an orbit (`views_per_orbit` around, i.e. 30 degrees apart by default)
    of the seeded textured world, and `n_points` surface points both see (occlusion included).

    Both views get Gaussian noise of std `noise_px` per coordinate; exactly round(outlier_rate * n_points)
    correspondences, chosen at random, have their view-2 point replaced by a uniformly random pixel.
    Raises ValueError if the views share fewer than `n_points` visible points.
    """
    rng = np.random.default_rng(seed)
    quads = make_world(seed)
    camera = make_camera(model, width, height)
    poses = orbit(views_per_orbit, seed=seed)[:2]
    xyz, _ = sample_points(quads, 20 * n_points, seed=seed + 1)
    obs = [observe(xyz, camera, pose, quads=quads, noise_px=noise_px, seed=seed * 31 + k)
           for k, pose in enumerate(poses)]
    common, i1, i2 = np.intersect1d(obs[0].point_ids, obs[1].point_ids, return_indices=True)
    if len(common) < n_points:
        raise ValueError(f"two_view_case: the views share only {len(common)} points, fewer than {n_points}")
    pick = np.sort(rng.choice(len(common), n_points, replace=False))
    i1, i2 = i1[pick], i2[pick]
    x1, x2 = obs[0].xy[i1].copy(), obs[1].xy[i2].copy()
    is_outlier = np.zeros(n_points, dtype=bool)
    is_outlier[rng.choice(n_points, round(outlier_rate * n_points), replace=False)] = True
    x2[is_outlier] = rng.uniform((0.0, 0.0), (width, height), (int(is_outlier.sum()), 2))
    return TwoViewCase(camera, poses, x1, x2, obs[0].xy_true[i1], obs[1].xy_true[i2], is_outlier)
