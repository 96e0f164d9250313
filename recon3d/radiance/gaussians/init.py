"""Initial Gaussian centres: the scene's sparse points, a visual hull carved from alpha masks, or random.

The bounds of `random` and `visual_hull` are the cube that every training camera sees whole: centred on
the point nearest to all optical axes (least squares), with half-size the radius of the largest sphere
there that fits in the narrowest camera's field of view.
"""

from __future__ import annotations

import numpy as np
import torch

from recon3d.radiance.views import View
from recon3d.scene import Scene


def view_bounds(views: list[View]) -> tuple[np.ndarray, float]:
    """(centre (3,), half-size) of the region every view sees, world frame."""
    A, b, centers, dirs, half_fov = np.zeros((3, 3)), np.zeros(3), [], [], []
    for v in views:
        cfw = v.cam_from_world.double().numpy()
        c, d = -cfw[:3, :3].T @ cfw[:3, 3], cfw[2, :3]  # centre and optical axis (camera z in the world)
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
        centers.append(c)
        dirs.append(d)
        k = v.K.double().numpy()
        half_fov.append(min(np.arctan(0.5 * v.width / k[0, 0]), np.arctan(0.5 * v.height / k[1, 1])))
    center = np.linalg.lstsq(A, b, rcond=None)[0]
    dist = np.array([np.dot(center - c, d) for c, d in zip(centers, dirs, strict=True)])
    radius = float(np.min(np.maximum(dist, 1e-6) * np.sin(half_fov)))
    return center, radius


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
    pts = torch.as_tensor(xyz, dtype=torch.float32)
    inside = torch.zeros(n)
    seen = torch.zeros(n)
    color = torch.zeros(n, 3)
    for v in views:
        if v.alpha is None:
            continue
        cam = pts @ v.cam_from_world[:3, :3].T + v.cam_from_world[:3, 3]
        uv = cam @ v.K.T
        z = cam[:, 2]
        u, w = uv[:, 0] / z, uv[:, 1] / z
        ok = (z > 0) & (u >= 0) & (u < v.width) & (w >= 0) & (w < v.height)
        col, row = u.clamp(0, v.width - 1).long(), w.clamp(0, v.height - 1).long()
        hit = ok & (v.alpha[row, col] > 0.5)
        seen += ok.float()
        inside += hit.float()
        color += v.image[row, col] * hit[:, None].float()
    keep = (seen > 0) & (inside >= keep_fraction * seen)
    if int(keep.sum()) < 100:
        return random_points(views, n, rng)
    rgb = (color[keep] / inside[keep, None]).numpy()
    return xyz[keep.numpy()], rgb


def scene_points(scene: Scene) -> tuple[np.ndarray, np.ndarray] | None:
    """The scene's sparse points (xyz (N, 3), rgb (N, 3) in [0, 1]) or None without enough of them."""
    if scene.points is None or len(scene.points) < 4:
        return None
    return scene.points.xyz, scene.points.rgb.astype(np.float64) / 255.0
