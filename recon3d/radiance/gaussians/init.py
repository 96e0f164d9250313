"""Initial Gaussian centres: the scene's sparse points, a visual hull carved from alpha masks, or random
in the cube every training camera sees (`views.view_bounds`)."""

from __future__ import annotations

import numpy as np
import torch

from recon3d.radiance.views import View, carve, view_bounds
from recon3d.scene import Scene


def random_points(views: list[View], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` uniform points in the seen cube with random colours: xyz (n, 3), rgb (n, 3) in [0, 1]."""
    center, radius = view_bounds(views)
    return center + radius * rng.uniform(-1, 1, (n, 3)), rng.uniform(0, 1, (n, 3))


def visual_hull_points(views: list[View], n: int, rng: np.random.Generator,
                       keep_fraction: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Uniform samples of the seen cube kept where they project inside the alpha mask (alpha > 0.5) of at
    least `keep_fraction` of the views that see them; coloured by the mean of those pixels. Falls back to
    all samples when the masks keep fewer than 100."""
    center, radius = view_bounds(views)
    xyz = center + radius * rng.uniform(-1, 1, (n, 3))
    keep, color = carve(views, torch.as_tensor(xyz, dtype=torch.float32), keep_fraction)
    if int(keep.sum()) < 100:
        return random_points(views, n, rng)
    return xyz[keep.numpy()], color[keep].numpy()


def scene_points(scene: Scene) -> tuple[np.ndarray, np.ndarray] | None:
    """The scene's sparse points (xyz (N, 3), rgb (N, 3) in [0, 1]) or None without enough of them."""
    if scene.points is None or len(scene.points) < 4:
        return None
    return scene.points.xyz, scene.points.rgb.astype(np.float64) / 255.0
