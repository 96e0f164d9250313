"""Lifting 2D labels onto 3D: a class per sparse point and per Gaussian, by weighted votes over views.

Class maps: a view's labels painted into an (H, W) map of "channels": 0 = background, c + 1 = class c,
with a weight per pixel (the instance's score, 1 for truth labels; background pixels weigh 1). Instances
paint their masks, or their boxes without masks (`Labels.region`).

* Sparse points vote through their tracks: each observation (image, keypoint) adds the weight of the
  class map at the keypoint's pixel to that channel. The observation is the point's proven visibility.
* Gaussians vote by their blending weights: in a view, Gaussian i adds `sum_p w_i(p) * weight(p)` to the
  channel of every pixel p it contributes to, `w_i(p) = alpha_i(p) T_i(p)` as the renderer composites it, so
  occluded Gaussians (T ~ 0) do not vote. The sums come from one backward pass through the compositing
  kernel: with per-Gaussian features x (N, C) = 1, d/dx_ic of sum_p onehot_c(p) weight(p) out_c(p) is
  exactly that vote.
* Classes of objects that move (`silent`) do not vote: where a moving object covers a view says nothing
  about what is there in 3D (and the reconstruction has left it out).
* A decision: the channel with the most votes, if it holds at least `min_agreement` of the element's votes
  and their total is at least `min_votes`; else UNDECIDED. Channel 0 decides BACKGROUND.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recon3d.radiance.gaussians.composite import composite_cpu
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.project import project
from recon3d.scene import Features, ImageInfo, Labels, Points

BACKGROUND, UNDECIDED = -1, -2
MAX_CHANNELS = 8  # the compositing kernel's feature limit


def class_map(labels: Labels, height: int, width: int, silent: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(channels (H, W) int64, weights (H, W) float64) of one view's labels; instances are painted in
    increasing score (truth: in order), so where they overlap the surer (later) one wins. Pixels of the
    classes in `silent` weigh 0: they vote for nothing."""
    channels = np.zeros((height, width), dtype=np.int64)
    weights = np.ones((height, width))
    scores = np.ones(len(labels)) if labels.scores is None else np.asarray(labels.scores, np.float64)
    for i in np.argsort(scores, kind="stable"):
        region = labels.region(i, height, width)
        channels[region] = labels.classes[i] + 1
        weights[region] = 0.0 if labels.classes[i] in silent else scores[i]
    return channels, weights


def decide(votes: np.ndarray, min_votes: float, min_agreement: float) -> np.ndarray:
    """votes (N, C + 1) -> classes (N,) int32: c for an object class, BACKGROUND or UNDECIDED."""
    total = votes.sum(1)
    best = votes.argmax(1)
    share = np.divide(votes.max(1), total, out=np.zeros(len(votes)), where=total > 0)
    classes = (best - 1).astype(np.int32)
    classes[(total < min_votes) | (share < min_agreement)] = UNDECIDED
    return classes


def vote_points(points: Points, images: tuple[ImageInfo, ...], features: dict[str, Features],
                labels: dict[str, Labels], n_classes: int, silent: Sequence[int] = ()) -> np.ndarray:
    """Votes (N, n_classes + 1) of the sparse points from the labeled images that observe them (pixels of
    `silent` classes excepted)."""
    votes = np.zeros((len(points), n_classes + 1))
    point_of = np.repeat(np.arange(len(points)), np.diff(points.track_offsets))
    for j, im in enumerate(images):
        if im.name not in labels or im.name not in features:
            continue
        sel = np.flatnonzero(points.track_image == j)
        if len(sel) == 0:
            continue
        channels, weights = class_map(labels[im.name], im.height, im.width, silent)
        xy = features[im.name].keypoints[points.track_keypoint[sel]]
        col = np.clip(np.floor(xy[:, 0]).astype(int), 0, im.width - 1)  # COLMAP pixel (r, c) covers [c, c + 1)
        row = np.clip(np.floor(xy[:, 1]).astype(int), 0, im.height - 1)
        np.add.at(votes, (point_of[sel], channels[row, col]), weights[row, col])
    return votes


def _projected(model: GaussianModel, cam_from_world: np.ndarray, K: np.ndarray, width: int, height: int):
    with torch.no_grad():
        return project(model.means, model.quats, model.scales, model.opacities,
                       torch.tensor(cam_from_world, dtype=torch.float32),
                       torch.as_tensor(K, dtype=torch.float32), width, height)


def _channel_blocks(n_channels: int) -> list[slice]:
    return [slice(lo, min(lo + MAX_CHANNELS, n_channels)) for lo in range(0, n_channels, MAX_CHANNELS)]


def vote_gaussians(model: GaussianModel, views: list[tuple[np.ndarray, np.ndarray, Labels, int, int]],
                   n_classes: int, silent: Sequence[int] = ()) -> np.ndarray:
    """Votes (N, n_classes + 1) of the model's Gaussians from views (cam_from_world (4, 4), K (3, 3),
    labels, width, height), each weighted by its blending weight (see the module docstring); pixels of
    `silent` classes do not vote."""
    votes = torch.zeros(len(model), n_classes + 1)
    for cam_from_world, K, labels, width, height in views:
        p = _projected(model, cam_from_world, K, width, height)
        if len(p.ids) == 0:
            continue
        channels, weights = class_map(labels, height, width, silent)
        target = torch.zeros(height, width, n_classes + 1)
        target.scatter_(2, torch.from_numpy(channels)[..., None], torch.from_numpy(weights).float()[..., None])
        for block in _channel_blocks(n_classes + 1):
            feats = torch.ones(len(p.ids), block.stop - block.start, requires_grad=True)
            out, _ = composite_cpu(p.means2d, p.conics, p.opacities, feats, p.depths, p.extents,
                                   torch.zeros(feats.shape[1]), width, height)
            (out * target[..., block]).sum().backward()
            votes[p.ids, block] += feats.grad
    return votes.double().numpy()


def render_class_map(model: GaussianModel, classes: np.ndarray, cam_from_world: np.ndarray, K: np.ndarray,
                     width: int, height: int, n_classes: int, min_alpha: float = 0.5) -> np.ndarray:
    """(H, W) int64 channel map (0 background, c + 1 class c) of the labeled Gaussians seen from a view:
    each Gaussian carries the one-hot of its class (BACKGROUND and UNDECIDED ones the background channel),
    composited like colour; a pixel takes the strongest channel, background where alpha < min_alpha."""
    p = _projected(model, cam_from_world, K, width, height)
    if len(p.ids) == 0:
        return np.zeros((height, width), dtype=np.int64)
    onehot = torch.zeros(len(model), n_classes + 1)
    onehot[torch.arange(len(model)), torch.from_numpy(np.maximum(classes, -1) + 1).long()] = 1.0
    with torch.no_grad():
        parts = [composite_cpu(p.means2d, p.conics, p.opacities, onehot[p.ids, block].contiguous(), p.depths,
                               p.extents, torch.zeros(block.stop - block.start), width, height)
                 for block in _channel_blocks(n_classes + 1)]
    out = torch.cat([image for image, _ in parts], -1)
    channels = out.argmax(-1).numpy()
    channels[parts[0][1].numpy() < min_alpha] = 0
    return channels
