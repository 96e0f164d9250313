"""The sparse points' depths as a training signal (DS-NeRF's "free" depth supervision; gsplat's `depth_loss`).

Each training photo observes some of the SfM points (their tracks name it), and each such point's depth in
that photo is a measurement the colours alone pin down poorly when the photos are few: a Gaussian floating in
front of a wall to explain one photo moves that photo's rendered depth off the points behind it. The loss is
gsplat's: the L1 difference between rendered and point disparity (1 / depth) at the points' pixels, times the
scene scale; the trainer weighs it by `depth_lambda`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recon3d.scene import Scene


def observed_points(scene: Scene, names: list[str]) -> list[np.ndarray]:
    """For each image name, the world xyz (M, 3) float64 of the sparse points whose track holds that image
    ((0, 3) for an image no point names, or a scene without points)."""
    if scene.points is None:
        return [np.zeros((0, 3)) for _ in names]
    pts = scene.points
    index = {im.name: i for i, im in enumerate(scene.images)}
    point_of = np.repeat(np.arange(len(pts)), np.diff(pts.track_offsets))
    order = np.argsort(pts.track_image, kind="stable")  # the observations grouped by image, found by bisection
    bounds = np.searchsorted(pts.track_image[order], np.arange(len(scene.images) + 1))
    out = []
    for name in names:
        i = index.get(name)
        rows = np.zeros(0, int) if i is None else np.unique(point_of[order[bounds[i]:bounds[i + 1]]])
        out.append(pts.xyz[rows])
    return out


def disparity_loss(depth: Tensor, points: Tensor, cam_from_world: Tensor, K: Tensor, scale: float) -> Tensor:
    """Mean |1 / rendered depth - 1 / point depth| x `scale` over the points (M, 3) that fall inside the render,
    in front of the camera, where it has depth (gsplat's depth loss, sampled bilinearly at each point's pixel).

    depth: (H, W, 1) rendered expected camera z (0 where nothing is rendered); points: (M, 3) in the render's
    world frame; cam_from_world: (4, 4); K: (3, 3), COLMAP's pixel convention (pixel (0, 0) spans [0, 1)^2).
    Returns a scalar (0, with a gradient path, when no point qualifies)."""
    height, width = depth.shape[:2]
    cam = points @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = cam[:, 2]
    uv = cam @ K.T
    u, v = uv[:, 0] / z.clamp_min(1e-9), uv[:, 1] / z.clamp_min(1e-9)
    inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    # align_corners=False: -1 and 1 are the image's outer edges, so pixel i's centre i + 0.5 maps to (2i + 1) / W - 1
    grid = torch.stack([2 * u[inside] / width - 1, 2 * v[inside] / height - 1], -1)[None, :, None, :]
    rendered = torch.nn.functional.grid_sample(depth.permute(2, 0, 1)[None], grid, align_corners=False,
                                               padding_mode="border").reshape(-1)
    seen = rendered > 1e-6
    if not bool(seen.any()):
        return depth.sum() * 0.0
    return (1.0 / rendered[seen] - 1.0 / z[inside][seen]).abs().mean() * scale
