"""Synthetic feature matches with a known share of wrong ones, for testing SfM without running SIFT.

Keypoints are the noisy observations of a `make_scene` rig; a pair's matches are its shared points, of
which a chosen share get a wrong partner (the partners of those matches are shuffled with no one left in
place, as a matcher confuses repeated texture). Every keypoint takes part in at most one match per pair,
as with a mutual nearest-neighbour matcher.
"""

from __future__ import annotations

import numpy as np

from recon3d.scene import Features, Scene
from recon3d.synthetic.observe import Observations


def noisy_matches(truth: Scene, observations: dict[str, Observations], outlier_rate: float = 0.2,
                  min_shared: int = 15, seed: int = 0) -> tuple[Scene, dict[tuple[str, str], np.ndarray]]:
    """A scene to reconstruct from: the truth's images and cameras, noisy keypoints and noisy matches.

    truth, observations: as returned by `make_scene` (with `noise_px` > 0 for realistic keypoints).
    outlier_rate: the share of each pair's matches that are wrong; pairs sharing fewer than `min_shared`
    points get no matches.
    Returns (scene with features and matches only: no two-view geometry, poses or points;
    per pair, a (M,) bool array saying which of its matches are true).
    """
    if not 0 <= outlier_rate < 1:
        raise ValueError(f"outlier_rate must be in [0, 1), got {outlier_rate}")
    rng = np.random.default_rng(seed)
    names = [im.name for im in truth.images]
    matches, is_true = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            _, ka, kb = np.intersect1d(observations[a].point_ids, observations[b].point_ids, return_indices=True)
            if len(ka) < min_shared:
                continue
            wrong = rng.choice(len(ka), int(round(outlier_rate * len(ka))), replace=False)
            kb[wrong] = kb[wrong][_derangement(len(wrong), rng)]
            matches[(a, b)] = np.column_stack([ka, kb]).astype(np.int32)
            is_true[(a, b)] = np.ones(len(ka), bool)
            is_true[(a, b)][wrong] = False
    features = {n: Features(observations[n].xy.astype(np.float32)) for n in names}
    scene = truth.replace(features=features, matches=matches, two_view={}, poses={}, points=None)
    return scene, is_true


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) that moves every element (n >= 2; identity for n < 2)."""
    if n < 2:
        return np.arange(n)
    while True:  # about e tries on average
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm
