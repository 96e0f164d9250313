"""Tracks: chains of matched keypoints across images, by union-find over the verified pair matches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.scene import Scene


@dataclass(frozen=True)
class Tracks:
    """Track t is `image[offsets[t]:offsets[t+1]]`, `keypoint[...]`: image indices into Scene.images and
    keypoint indices into that image's features. No track has two keypoints of one image."""

    offsets: np.ndarray  # (T + 1,) int64
    image: np.ndarray  # (E,) int32
    keypoint: np.ndarray  # (E,) int32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def verified_matches(scene: Scene) -> dict[tuple[int, int], np.ndarray]:
    """Pair (image index a, image index b) -> (K, 2) keypoint indices, keeping two-view inliers only."""
    index = {im.name: i for i, im in enumerate(scene.images)}
    out = {}
    for pair, matches in scene.matches.items():
        geometry = scene.two_view.get(pair)
        if geometry is not None:
            matches = matches[geometry.inliers]
        if len(matches) and pair[0] in index and pair[1] in index:
            out[(index[pair[0]], index[pair[1]])] = np.asarray(matches)
    return out


def build_tracks(n_keypoints: list[int], matches: dict[tuple[int, int], np.ndarray]) -> tuple[Tracks, int]:
    """Connected components of the graph whose nodes are (image, keypoint) and whose edges are matches.

    A component that holds two keypoints of one image is inconsistent and is dropped whole. Returns the
    tracks (length >= 2, ordered by their smallest node) and how many components were dropped.
    """
    # here: 0.25 s to import, and only the reference mapper and retrieval build tracks
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    base = np.concatenate([[0], np.cumsum(n_keypoints)]).astype(np.int64)
    if not matches:
        return Tracks(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32)), 0
    index = np.int32 if base[-1] < 2**31 else np.int64  # at 1000 images 24 M matches: 0.2 GB a side in int32
    u = np.concatenate([(base[a] + m[:, 0]).astype(index) for (a, _), m in matches.items()])
    v = np.concatenate([(base[b] + m[:, 1]).astype(index) for (_, b), m in matches.items()])
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(base[-1], base[-1]))
    _, label = connected_components(graph, directed=False)
    matched = np.zeros(base[-1], dtype=bool)
    matched[u], matched[v] = True, True
    nodes = np.flatnonzero(matched)  # sorted, each once: np.unique of u and v sorted all 2 x 24 M at 1000 images
    image = np.searchsorted(base, nodes, side="right") - 1
    order = np.lexsort((image, label[nodes]))
    nodes, image, comp = nodes[order], image[order], label[nodes][order]
    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    ends = np.r_[starts[1:], len(comp)]
    # inconsistent: the same image twice in a component (images are sorted within each component)
    repeated = np.zeros(len(comp), bool)
    repeated[1:] = (comp[1:] == comp[:-1]) & (image[1:] == image[:-1])
    bad = np.add.reduceat(repeated, starts) > 0
    keep = ~bad & (ends - starts >= 2)
    sel = np.flatnonzero(np.repeat(keep, ends - starts))  # the nodes of the kept components, in order
    lengths = (ends - starts)[keep]
    return (Tracks(np.r_[0, np.cumsum(lengths)].astype(np.int64), image[sel].astype(np.int32),
                   (nodes[sel] - base[image[sel]]).astype(np.int32)), int(bad.sum()))
