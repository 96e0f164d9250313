"""Which 3D points a camera sees, where, with optional pixel noise and outliers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.geometry import camera_models
from recon3d.geometry.projection import transform_points
from recon3d.geometry.rotation import camera_center
from recon3d.scene import Camera
from recon3d.synthetic.surfaces import TexturedQuad, ray_cast

OCCLUSION_RTOL = 1e-6  # a point is visible when the first surface hit lies no nearer than this, relatively


@dataclass(frozen=True)
class Observations:
    """The points one image sees. Pixels are COLMAP convention; `xy` may fall outside the image (noise)."""

    point_ids: np.ndarray  # (K,) int64, index into the points observed
    xy_true: np.ndarray  # (K, 2) float64, exact projection
    xy: np.ndarray  # (K, 2) float64, with noise; a uniformly random pixel where is_outlier
    is_outlier: np.ndarray  # (K,) bool

    def __len__(self) -> int:
        return len(self.point_ids)

    def subset(self, keep: np.ndarray) -> Observations:
        """The observations selected by `keep`, a (K,) bool mask or an index array."""
        return Observations(self.point_ids[keep], self.xy_true[keep], self.xy[keep], self.is_outlier[keep])


def observe(points_xyz: np.ndarray, camera: Camera, cam_from_world: np.ndarray,
            quads: list[TexturedQuad] | None = None, noise_px: float = 0.0, outlier_rate: float = 0.0,
            seed: int = 0) -> Observations:
    """Project world points into one camera and keep those it sees.

    points_xyz: (N, 3) float64 world frame; cam_from_world: (4, 4). A point is seen when it is in front of
    the camera, projects inside the image ([0, W] x [0, H]) on the model's valid branch (unprojecting its
    pixel gives its own ray back, so points beyond a distortion fold-over are dropped), and, when `quads`
    are given, is not occluded (the first surface on the ray from the camera centre is at least
    (1 - OCCLUSION_RTOL) times the point's distance away). Then Gaussian noise of std `noise_px` is added
    to each coordinate, and exactly round(outlier_rate * K) observations, chosen at random, are replaced
    by uniformly random pixels in the image and flagged.
    """
    points_xyz = np.asarray(points_xyz, dtype=np.float64)
    if points_xyz.ndim != 2 or points_xyz.shape[1] != 3:
        raise ValueError(f"observe: points_xyz must have shape (N, 3), got {points_xyz.shape}")
    if not 0.0 <= outlier_rate <= 1.0 or noise_px < 0:
        raise ValueError(f"observe: need 0 <= outlier_rate <= 1 and noise_px >= 0, got {outlier_rate}, {noise_px}")
    rng = np.random.default_rng(seed)
    points_cam = transform_points(cam_from_world, points_xyz)
    front = points_cam[:, 2] > 1e-9
    ids = np.flatnonzero(front)
    xy = camera.project(points_cam[ids])
    inside = np.all((xy >= 0) & (xy <= (camera.width, camera.height)), axis=1)
    ids, xy = ids[inside], xy[inside]
    uv = points_cam[ids, :2] / points_cam[ids, 2:]
    on_branch = np.all(np.abs(camera_models.unproject(camera.model, camera.params, xy) - uv)
                       <= 1e-6 * (1.0 + np.abs(uv)), axis=1)
    ids, xy = ids[on_branch], xy[on_branch]
    if quads:
        center = camera_center(np.asarray(cam_from_world, dtype=np.float64))
        offsets = points_xyz[ids] - center
        distance = np.linalg.norm(offsets, axis=1)
        t, _, _ = ray_cast(quads, np.broadcast_to(center, offsets.shape), offsets / distance[:, None])
        seen = t >= distance * (1.0 - OCCLUSION_RTOL)
        ids, xy = ids[seen], xy[seen]
    noisy = xy + rng.normal(0.0, noise_px, xy.shape) if noise_px > 0 else xy.copy()
    is_outlier = np.zeros(len(ids), dtype=bool)
    is_outlier[rng.choice(len(ids), size=round(outlier_rate * len(ids)), replace=False)] = True
    noisy[is_outlier] = rng.uniform((0.0, 0.0), (camera.width, camera.height), (int(is_outlier.sum()), 2))
    return Observations(ids.astype(np.int64), xy, noisy, is_outlier)
