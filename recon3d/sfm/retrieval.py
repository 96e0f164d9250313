"""Image retrieval for pair selection: VLAD global descriptors on a codebook learnt from the scene's own SIFT.

VLAD (Jegou et al. 2010, with the intra-normalisation of Arandjelovic & Zisserman 2013): descriptors are
assigned to their nearest of `k` centroids (k-means on a sample of the scene's descriptors: nothing
downloaded, nothing trained elsewhere); per centroid the residuals are summed, each block L2-normalised
(intra-normalisation: bursty textures do not dominate), signed-square-rooted, and the whole (k * 128,) vector
L2-normalised, so the cosine of two images' vectors scores how much they look alike. Before the search each
vector may be replaced by a weighted average of itself and its most similar images' (alpha query expansion,
Radenovic et al. 2018: `expand_queries`), which reaches views that share content with an image's neighbours
more than with the image itself (a place seen from farther away). Each image keeps its most similar images as
candidate pairs (`nearest_pairs`). Once those are matched, `covisible_pairs` joins the matches into feature
tracks and ranks the pairs not yet tried by how much of one image's area holds tracks the other image sees,
and the best are matched in turn, round after round: where retrieval found one pair across two passes by the
same place, the rounds spread along it to the pairs around it (COLMAP's transitive matching, ranked by the
area shared instead of taken whole).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from recon3d.sfm.tracks import build_tracks


def unit_rows(desc: np.ndarray) -> np.ndarray:
    """(N, D) uint8 or float -> (N, D) float32 with unit L2 rows (zero rows stay zero); the matchers' too."""
    d = np.asarray(desc, dtype=np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def train_codebook(descriptors: Iterable[np.ndarray], n_images: int, k: int = 64, sample: int = 50_000,
                   seed: int = 0) -> np.ndarray:
    """k-means centroids (k, D) float32 of unit descriptors drawn evenly from the `n_images` images'
    descriptors (an iterable, read one image at a time; at most `sample` in all), by OpenCV's k-means++ with
    a fixed seed (the same scene gives the same codebook)."""
    rng = np.random.default_rng(seed)
    per_image = max(1, sample // max(1, n_images))
    picked = [d[rng.choice(len(d), min(len(d), per_image), replace=False)] for d in descriptors if len(d)]
    data = unit_rows(np.concatenate(picked)) if picked else np.zeros((0, 128), np.float32)
    if len(data) < k:
        raise ValueError(f"{len(data)} descriptors cannot make a codebook of {k} words")
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 25, 1e-4)
    _, _, centres = cv2.kmeans(data, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres.astype(np.float32)


def vlad(descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The VLAD vector (k * D,) float32 of one image's descriptors (N, D), unit length (zero for N = 0)."""
    k, dim = codebook.shape
    out = np.zeros((k, dim), dtype=np.float32)
    if len(descriptors):
        d = unit_rows(descriptors)
        # nearest centroid: argmax of 2 d.c - |c|^2 (|d| = 1)
        word = np.argmax(d @ codebook.T * 2.0 - (codebook**2).sum(axis=1), axis=1)
        np.add.at(out, word, d - codebook[word])
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # intra-normalisation
    out = np.sign(out) * np.sqrt(np.abs(out))
    return (out / max(float(np.linalg.norm(out)), 1e-12)).ravel()


def expand_queries(vectors: np.ndarray, n: int, alpha: float = 3.0) -> np.ndarray:
    """alpha-QE: each unit row of `vectors` (N, K) replaced by the normalised sum of itself and its `n` most
    similar rows, each weighted by its cosine to the row (clipped at 0) to the power `alpha`."""
    if n <= 0 or len(vectors) < 2:
        return vectors
    out = np.zeros_like(vectors)
    for lo, near, sim in _most_similar(vectors, min(n, len(vectors) - 1) + 1, skip_self=False):  # itself first
        weights = sim.clip(min=0) ** alpha
        for j in range(near.shape[1]):  # (B, K) at a time; gathering every neighbour at once took N * n * K
            out[lo:lo + len(near)] += weights[:, j:j + 1] * vectors[near[:, j]]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def nearest_pairs(vectors: np.ndarray, k: int) -> set[tuple[int, int]]:
    """Index pairs (i, j), i < j, linking each image to its `k` most similar others (cosine of the (N, K)
    unit vectors; ties broken by index)."""
    k = min(k, len(vectors) - 1)
    if k <= 0:
        return set()
    return {(min(lo + r, int(j)), max(lo + r, int(j)))
            for lo, near, _ in _most_similar(vectors, k, skip_self=True) for r, row in enumerate(near) for j in row}


BLOCK = 256  # rows of the similarity matrix held at once: memory (BLOCK, N), not (N, N) (400 MB at 10,000 images)


def _most_similar(vectors: np.ndarray, n: int, skip_self: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per block of rows of the unit `vectors` (N, K): (first row, (B, n) indices of each row's `n` most similar
    rows by cosine, most similar first, ties by index, (B, n) those cosines). With `skip_self` a row is not
    among its own."""
    for lo in range(0, len(vectors), BLOCK):
        sim = vectors[lo:lo + BLOCK] @ vectors.T
        if skip_self:
            rows = np.arange(len(sim))
            sim[rows, lo + rows] = -np.inf
        near = np.argsort(-sim, axis=1, kind="stable")[:, :n]
        yield lo, near, np.take_along_axis(sim, near, axis=1)


def covisible_pairs(keypoints: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                    matches: Mapping[tuple[int, int], np.ndarray], tried: Iterable[tuple[int, int]], count: int,
                    cells: int = 8) -> list[tuple[int, int]]:
    """Up to `count` index pairs (i, j), i < j, not in `tried`, most likely to overlap first. The matches so far
    are joined into feature tracks (`sfm.tracks.build_tracks`: features linked by matches, COLMAP's tracks; one
    that holds two features of an image is left out, a chain of wrong matches), and a pair is ranked by how much
    of one image the other sees: each image is cut into square cells, `cells` along its longer side; of the cells
    of image i that hold a track, the share holding a track that j sees too estimates the part of i's view that
    j sees, and the pair takes the larger of its two shares (a close-up sees all of itself in a wider view that
    sees a corner of it in return). Most first, ties by index; pairs that share no track are left out. Only
    tracks of three or more views count: a track an untried pair shares reaches it through a third image, while
    a two-view track is one tried pair's match and can be shared by no other pair. Areas rank better than track
    counts, which follow how textured the shared part is: on three 1000-image walks the rounds' pairs missed
    a third fewer of the pairs overlapping by a third (benchmarks/retrieval.py).

    keypoints: per image (N_i, 2) COLMAP pixels. sizes: per image (width, height) px. matches: (i, j) -> (M, 2)
    indices of i's and j's matched keypoints.
    """
    from scipy.sparse import csr_matrix, diags  # here: 0.25 s to import, and only large captures use it

    n = len(keypoints)
    if count <= 0:
        return []
    tracks, _ = build_tracks([len(k) for k in keypoints], dict(matches))  # consistent tracks only, as the mapper's
    if not len(tracks):
        return []
    lengths = tracks.lengths()
    multi = np.repeat(lengths >= 3, lengths)  # the track elements that can link an untried pair
    track = np.repeat(np.arange(len(tracks)), lengths)[multi]
    image = tracks.image[multi].astype(np.int64)
    cell = _cells(image, tracks.keypoint[multi], keypoints, sizes, cells)  # (E,) in [0, cells^2)
    per_image = cells * cells
    # seen[i, t] = 1: image i has a feature in track t; where[i * cells^2 + c, t] = 1: in cell c of image i
    seen = csr_matrix((np.ones(len(track), np.int32), (image, track)), shape=(n, len(tracks)))
    where = csr_matrix((np.ones(len(track), np.int32), (image * per_image + cell, track)),
                       shape=(n * per_image, len(tracks)))
    covered = (where @ seen.T).tocsr()  # [(i, c), j]: tracks in cell c of image i that image j sees
    covered.data[:] = 1
    to_image = csr_matrix((np.ones(n * per_image), (np.repeat(np.arange(n), per_image), np.arange(n * per_image))),
                          shape=(n, n * per_image))
    area = (to_image @ covered).tocsr().astype(np.float64)  # [i, j]: cells of i holding a track j sees
    share = diags(1.0 / np.maximum(area.diagonal(), 1.0)) @ area  # the diagonal: i's cells holding a track
    share = share.maximum(share.T).tocoo()
    i, j, score = share.row.astype(np.int64), share.col.astype(np.int64), share.data
    done = np.array(sorted({a * n + b for a, b in tried}), dtype=np.int64)
    keep = (i < j) & ~np.isin(i * n + j, done)
    i, j, score = i[keep], j[keep], score[keep]
    best = np.lexsort((j, i, -score))[:count]
    return list(zip(i[best].tolist(), j[best].tolist(), strict=True))


def _cells(image: np.ndarray, keypoint: np.ndarray, keypoints: Sequence[np.ndarray],
           sizes: Sequence[tuple[int, int]], cells: int) -> np.ndarray:
    """(E,) int64: the cell (row * cells + column) of each track element (image (E,), keypoint (E,)) in its
    image's grid of square cells, `cells` along the longer side (fewer along the shorter)."""
    out = np.zeros(len(image), dtype=np.int64)
    order = np.argsort(image, kind="stable")
    bounds = np.searchsorted(image[order], np.arange(len(keypoints) + 1))
    for k in range(len(keypoints)):
        elements = order[bounds[k]:bounds[k + 1]]
        if not len(elements):
            continue
        side = max(sizes[k]) / cells
        xy = np.asarray(keypoints[k], dtype=np.float64)[keypoint[elements]]
        col = np.clip((xy[:, 0] // side).astype(np.int64), 0, cells - 1)
        row = np.clip((xy[:, 1] // side).astype(np.int64), 0, cells - 1)
        out[elements] = row * cells + col
    return out
