"""A training frame for radiance fields: the world moved and scaled so the cameras sit around the origin.

SfM output has an arbitrary scale and origin; learning rates, densification thresholds and the near plane
are in scene units. As gsplat's `normalize_world_space` (`similarity_from_cameras`), training runs in the
frame `x_norm = scale * (x_world - center)`, with `center` the mean camera centre and `scale` one over the
largest distance of a camera centre from it. gsplat also rotates the frame (PCA of the points); recon3d does
not, so that a model is brought back by a translation and one scale, which leave SH colours unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from recon3d.radiance.views import View


@dataclass(frozen=True)
class WorldFrame:
    """norm_from_world: `x_norm = scale * (x_world - center)`."""

    center: np.ndarray  # (3,) float64, world frame
    scale: float

    @classmethod
    def from_views(cls, views: list[View]) -> WorldFrame:
        """Centre and scale from the camera centres of `views` (gsplat's `similarity_from_cameras`, no rotation)."""
        cfw = np.stack([v.cam_from_world.double().numpy() for v in views])
        centers = np.einsum("nji,nj->ni", cfw[:, :3, :3], -cfw[:, :3, 3])  # C = -R^T t
        center = centers.mean(0)
        spread = float(np.linalg.norm(centers - center, axis=1).max())
        return cls(center, 1.0 / spread if spread > 1e-9 else 1.0)

    def points(self, xyz_world: np.ndarray) -> np.ndarray:
        """(N, 3) world -> (N, 3) normalised."""
        return self.scale * (np.asarray(xyz_world, np.float64) - self.center)

    def view(self, view: View) -> View:
        """The view with its pose in the normalised frame: cam_from_norm = [R | scale (R c + t)] (the camera
        frame scaled with the world, which leaves every pixel where it was)."""
        cfw = view.cam_from_world.double()
        rot, t = cfw[:3, :3], cfw[:3, 3]
        out = cfw.clone()
        out[:3, 3] = self.scale * (rot @ torch.as_tensor(self.center) + t)
        return dataclasses.replace(view, cam_from_world=out.float())

    def pose_to_world(self, cam_from_norm: torch.Tensor) -> torch.Tensor:
        """(4, 4) cam_from_norm -> cam_from_world, the inverse of `view`'s pose change: t = t_norm / scale - R c."""
        out = cam_from_norm.detach().double().clone()
        out[:3, 3] = out[:3, 3] / self.scale - out[:3, :3] @ torch.as_tensor(self.center)
        return out

    def gaussians_to_world(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gaussian parameters (means (N, 3), log-scales (N, 3), ...) from the normalised frame to the world."""
        out = dict(params)
        center = torch.as_tensor(self.center, dtype=params["means"].dtype, device=params["means"].device)
        out["means"] = params["means"] / self.scale + center
        out["scales"] = params["scales"] - float(np.log(self.scale))
        return out
