"""Initial Gaussian centres: the scene's sparse points, a visual hull carved from alpha masks, or random
in the cube every training camera sees (`views.view_bounds`); and points on a far sphere for the sky."""

from __future__ import annotations

import numpy as np
import torch

from recon3d.radiance.views import View, carve, pixels_of, view_bounds
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


def sky_points(views: list[View], n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """About `n` points on a sphere of `radius` around the origin (the normalised frame's camera centre) for
    what SfM leaves empty: sky and far background, as the 3DGS authors advise for unbounded scenes. The points
    lie on a Fibonacci lattice over the part of the sphere the views see (a first, coarse lattice measures
    that part), each coloured by the mean of the pixels it falls on. Returns xyz (M, 3), rgb (M, 3) in [0, 1]."""
    fraction = max(float((_on_sphere(views, 10_000, radius)[2] > 0).mean()), 1e-3)
    xyz, color, seen = _on_sphere(views, int(n / fraction), radius)
    keep = seen > 0
    return xyz[keep], color[keep] / seen[keep, None]


def _on_sphere(views: list[View], n: int, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Fibonacci lattice of `n` points (n, 3) on the sphere, the sum of the pixel colours (n, 3) they fall on
    over `views`, and how many views see each (n,)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    xyz = radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    pts = torch.as_tensor(xyz, dtype=torch.float32)
    seen, color = torch.zeros(n), torch.zeros(n, 3)
    for v in views:
        col, row, ok = pixels_of(v, pts)
        seen[ok] += 1
        color[ok] += v.image[row[ok], col[ok]]
    return xyz, color.numpy(), seen.numpy()
