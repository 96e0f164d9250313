"""match: choose image pairs and match their descriptors (mutual nearest neighbour + Lowe's ratio test).

Pairs: `exhaustive` (every pair), `sequential` (each image with the next `window` in scene order, for
video-like captures), `spatial` (each posed image with its `spatial_k` nearest camera centres, from
`scene.poses`, e.g. GPS/prior poses or a known rig) or `retrieval` (each image with its `retrieval_k` most
alike by VLAD on a codebook learnt from the scene's own descriptors, with query expansion,
`recon3d.sfm.retrieval`, plus its `window` neighbours in capture order; then `retrieval_rounds` rounds of the
untried pairs of which one image sees the largest share of the other's area through the feature tracks
matched so far). `auto`: sequential for a video's keyframes, exhaustive up to `auto_retrieval_above` images,
retrieval beyond. Matching:
`brute_force`, the readable reference, a chunked float32 matrix product of L2-normalised descriptors;
`flann` (OpenCV's randomised k-d trees); or `pycolmap`, COLMAP's own CPU SIFT matcher (FAISS inside, all
cores) run on a block's pairs through a temporary COLMAP database: the fastest here (sceaux_castle: 55 pairs in
4.4 s against 20 s), and its matches agree with the reference's (tests/test_features_match.py states the
recall). A pair keeps its matches when there are at least `min_matches`; otherwise it is dropped with the reason
in the report.

Matches are `scene.matches[(name1, name2)]` (K, 2) int32 keypoint indices into image 1 and image 2, with
image 1 before image 2 in `scene.images`. Work goes to the executor in blocks of pairs; each task loads the
descriptors it needs from `.npy` files in the node's folder (removed afterwards), never from its arguments.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.geometry.rotation import camera_center
from recon3d.memory import release_free_memory
from recon3d.report.match_graph import write_match_graph
from recon3d.scene import Scene
from recon3d.sfm import retrieval
from recon3d.sfm.retrieval import unit_rows as unit_descriptors
from recon3d.stages.base import DIFFERENT_SCENES, Stage, StageConfig, StageContext, describe_pairs

PER_PAIR_REPORT_LIMIT = 2000  # the report lists per-pair counts up to this many pairs, summaries always
PYCOLMAP_BLOCK = 2000  # pairs per task with the pycolmap matcher: COLMAP indexes each image of a task once and
# uses every core itself, so small tasks only repeat the indexing (sceaux: 55 pairs 4.5 s in one, 9.9 s in eight)


class MatchConfig(StageConfig):
    pairs: Literal["auto", "exhaustive", "sequential", "spatial", "retrieval"] = Field(
        "auto", description="pair selection; auto = sequential for the keyframes of a video, else exhaustive up to "
        "auto_retrieval_above images and retrieval beyond")
    window: int = Field(5, ge=1, description="sequential: match each image with the next `window` images")
    quadratic_overlap: bool = Field(True, description="sequential: also match image i with i + 2^k beyond the "
                                    "window (COLMAP's quadratic overlap: long-range pairs, loops closed across "
                                    "powers of two, O(N log N) pairs)")
    spatial_k: int = Field(10, ge=1, description="spatial: match each posed image with its k nearest camera centres")
    retrieval_k: int = Field(25, ge=1, description="retrieval: match each image with its k most alike images "
                             "(all others when k >= images - 1)")
    retrieval_words: int = Field(256, ge=2, description="retrieval: k-means words of the VLAD codebook")
    retrieval_expand: int = Field(10, ge=0, description="retrieval: alpha query expansion over each image's n most "
                                  "alike before the k nearest are taken (0 = off)")
    retrieval_rounds: int = Field(9, ge=0, description="retrieval: once those are matched, this many rounds each "
                                  "matching as many more pairs as there are images, the pairs of which one image "
                                  "sees the largest share of the other's area through the feature tracks matched "
                                  "so far first (0 = off); k 25 "
                                  "with 9 rounds keeps a 1000-image capture under 5 % of the exhaustive pairs "
                                  "(benchmarks/retrieval.py)")
    retrieval_window: int = Field(5, ge=0, description="retrieval: also match each image with the next n in "
                                  "capture (file name) order")
    auto_retrieval_above: int = Field(100, ge=2, description="auto: exhaustive up to this many images, retrieval "
                                      "beyond")
    matcher: Literal["brute_force", "flann", "pycolmap"] = Field("brute_force", description="descriptor matcher")
    ratio: float = Field(0.8, gt=0, le=1, description="Lowe's ratio test: keep a match when its L2 distance is "
                         "below ratio x the second-nearest's (1 = off)")
    mutual: bool = Field(True, description="keep only mutual nearest neighbours (cross-check)")
    max_distance: float = Field(0.0, ge=0, le=2, description="reject matches whose L2 distance between unit "
                                "descriptors exceeds this; 0 = no limit")
    min_matches: int = Field(15, ge=1, description="drop pairs with fewer matches than this")
    pairs_per_task: int = Field(0, ge=0, description="pairs per executor task; 0 = about four tasks per "
                                "executor worker, at most 64 pairs each (pycolmap: 2000 pairs each); the output "
                                "does not depend on it")
    flann_trees: int = Field(4, ge=1, description="flann: number of randomised k-d trees")
    flann_checks: int = Field(128, ge=1, description="flann: leaves visited per query (more = closer to exact)")
    num_threads: int = Field(-1, ge=-1, description="pycolmap: the matcher's threads (-1 = every core); only 1 "
                             "repeats exactly on a busy machine (COLMAP's FAISS search is approximate, and a "
                             "few matches change with the threads' timing)")


@dataclass(frozen=True)
class MatchTask:
    """A block of pairs, with the descriptor files of the images they touch."""

    pairs: tuple[tuple[str, str], ...]
    descriptor_paths: tuple[tuple[str, str], ...]  # (image name, .npy path)
    cfg: MatchConfig


def run(scene: Scene, cfg: MatchConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("match")
    names = [im.name for im in scene.images if im.name in scene.features]
    for im in scene.images:
        if im.name not in scene.features:
            ctx.drop(im.name, "no features: the features stage left it out (an unreadable file, or features not run)")
    missing = [n for n in names if scene.features[n].descriptors is None]
    if missing:
        raise StageError(f"match: images {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} have keypoints "
                         "but no descriptors", "run the features stage before match")
    centers = {n: camera_center(scene.poses[n]) for n in names if n in scene.poses}
    if cfg.pairs == "spatial" and len(centers) < min(2, len(names)):
        raise StageError(f"match: pairs=spatial pairs images by their camera positions, and {len(names) - len(centers)}"
                         f" of the {len(names)} images have no pose (photos without poses)",
                         "pair them by their content instead: --set match.pairs=auto (exhaustive, or retrieval "
                         "for many photos) or --set match.pairs=sequential for a video's frames")
    if cfg.pairs == "spatial":
        for n in names:
            if n not in centers:
                ctx.drop(n, "no pose in the scene, so no spatial neighbours")
    mode = pairing(scene, cfg, len(names))
    start = time.perf_counter()
    folder = Path(ctx.workdir) / "descriptors"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = {}
        for i, name in enumerate(names):
            paths[name] = str(folder / f"{i:06d}.npy")
            np.save(paths[name], np.ascontiguousarray(scene.features[name].descriptors))
        n_features = [len(scene.features[name].keypoints) for name in names]
        vectors = global_descriptors(names, paths, n_features, cfg, ctx) if mode == "retrieval" else None
        pairs = select_pairs(names, cfg, centers, mode, vectors)
        if not pairs:
            raise StageError(f"match: no image pairs to match among {len(names)} images with features "
                             f"(pairs={cfg.pairs})", "give at least two images with features (and poses for "
                             "spatial pairing)")
        found = _match_pairs(pairs, paths, cfg, ctx)
        if mode == "retrieval":
            keypoints = [scene.features[name].keypoints for name in names]
            sizes = [(im.width, im.height) for im in scene.images if im.name in scene.features]
            found.update(_covisible_rounds(names, keypoints, sizes, paths, found, cfg, ctx))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    matches: dict[tuple[str, str], np.ndarray] = {}
    all_counts: dict[tuple[str, str], int] = {}
    for pair, m in found.items():
        all_counts[pair] = len(m)
        if len(m) >= cfg.min_matches:
            matches[pair] = m
        else:
            ctx.drop(f"{pair[0]} | {pair[1]}", f"{len(m)} matches < min_matches {cfg.min_matches}")
    if not matches:
        best = max(all_counts.items(), key=lambda kv: kv[1])
        raise StageError(f"match: no image pair has min_matches {cfg.min_matches} matches (best: {best[1]} for "
                         f"{best[0][0]} | {best[0][1]}, of {len(found)} pairs)",
                         "check that the images overlap, or match looser: "
                         f"--set match.min_matches={max(5, cfg.min_matches // 2)} "
                         f"--set match.ratio={min(0.95, cfg.ratio + 0.1):.2f}" + DIFFERENT_SCENES * bool(scene.labels))
    kept = np.array([len(m) for m in matches.values()])
    ctx.count("pairing", mode)
    ctx.count("matcher", cfg.matcher)
    ctx.count("images", len(names))
    ctx.count("pairs_candidate", len(found))
    ctx.count("pairs_kept", len(matches))
    ctx.count("pairs_dropped", len(found) - len(matches))
    ctx.count("matches_total", int(kept.sum()))
    ctx.count("matches_min_median_max", [int(kept.min()), float(np.median(kept)), int(kept.max())])
    if len(pairs) <= PER_PAIR_REPORT_LIMIT:
        ctx.count("matches_per_pair", {f"{a} | {b}": k for (a, b), k in all_counts.items()})
    ctx.count("seconds_match", round(time.perf_counter() - start, 3))
    svg = write_match_graph(Path(ctx.workdir) / "match_graph.svg", names, all_counts,
                            title=f"{cfg.pairs} pairs, {cfg.matcher}", upper_label="matches")
    ctx.count("match_graph_svg", str(svg))
    return scene.replace(matches=matches)


def _match_pairs(pairs: Sequence[tuple[str, str]], paths: dict[str, str], cfg: MatchConfig,
                 ctx: StageContext) -> dict[tuple[str, str], np.ndarray]:
    """Pair -> (K, 2) matches for each of `pairs` (in their order), matched by the executor in blocks; `paths`:
    image name -> its descriptors' .npy file."""
    tasks = []
    per_task = cfg.pairs_per_task or (PYCOLMAP_BLOCK if cfg.matcher == "pycolmap" else 0)
    for block in ctx.blocks(list(pairs), per_task):
        used = sorted({n for pair in block for n in pair})
        tasks.append(MatchTask(block, tuple((n, paths[n]) for n in used), cfg))
    blocks = ctx.map(match_block, tasks, describe=lambda t: describe_pairs(t.pairs))
    return {pair: m for task, found in zip(tasks, blocks, strict=True)
            for pair, m in zip(task.pairs, found, strict=True)}


def _covisible_rounds(names: Sequence[str], keypoints: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                      paths: dict[str, str], found: dict[tuple[str, str], np.ndarray], cfg: MatchConfig,
                      ctx: StageContext) -> dict[tuple[str, str], np.ndarray]:
    """Pair -> matches for the pairs `cfg.retrieval_rounds` rounds add to the retrieval pairs `found`: each round
    matches as many untried pairs as there are images, those of which one image sees the largest share of the
    other's area through feature tracks over the whole capture (`retrieval.covisible_pairs` on every kept pair so
    far), and the rounds stop early when no untried pair shares any track. keypoints and sizes (width, height)
    follow `names`."""
    index = {name: i for i, name in enumerate(names)}
    found = dict(found)
    added: dict[tuple[str, str], np.ndarray] = {}
    rounds = 0
    for _ in range(cfg.retrieval_rounds):
        kept = {(index[a], index[b]): m for (a, b), m in found.items() if len(m) >= cfg.min_matches}
        tried = [(index[a], index[b]) for a, b in found]
        extra = retrieval.covisible_pairs(keypoints, sizes, kept, tried, len(names))
        if not extra:
            break
        rounds += 1
        new = _match_pairs([(names[i], names[j]) for i, j in extra], paths, cfg, ctx)
        found.update(new)
        added.update(new)
    ctx.count("pairs_covisible", len(added))
    ctx.count("covisible_rounds", rounds)
    return added


def pairing(scene: Scene, cfg: MatchConfig, n_images: int) -> str:
    """The pair selection `cfg.pairs` means for `scene` with `n_images` images to match: auto is sequential
    for a video's keyframes (in time order), exhaustive up to `auto_retrieval_above` images, else retrieval."""
    if cfg.pairs != "auto":
        return cfg.pairs
    if scene.source is not None and scene.source.format == "video":
        return "sequential"
    return "exhaustive" if n_images <= cfg.auto_retrieval_above else "retrieval"


def select_pairs(names: Sequence[str], cfg: MatchConfig, centers: dict[str, np.ndarray] | None = None,
                 mode: str | None = None, vectors: np.ndarray | None = None) -> list[tuple[str, str]]:
    """Image pairs `(a, b)` with a before b in `names`, in a stable order, chosen by `mode` (default
    `cfg.pairs`, auto read as exhaustive).

    centers: image name -> camera centre (3,) world frame, used by `spatial` (images without one are left out).
    vectors: (len(names), K) unit global descriptors, used by `retrieval`.
    """
    n = len(names)
    mode = mode or ("exhaustive" if cfg.pairs == "auto" else cfg.pairs)
    if mode == "retrieval":
        if vectors is None or len(vectors) != n:
            raise ValueError("retrieval pairs need one global descriptor per image")
        chosen = retrieval.nearest_pairs(retrieval.expand_queries(vectors, cfg.retrieval_expand), cfg.retrieval_k)
        chosen |= {(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + cfg.retrieval_window))}
        index_pairs = sorted(chosen)
    elif mode == "exhaustive":
        index_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    elif mode == "sequential":
        chosen = {(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + cfg.window))}
        if cfg.quadratic_overlap:
            chosen |= {(i, i + 2**k) for i in range(n) for k in range(64) if cfg.window < 2**k < n - i}
        index_pairs = sorted(chosen)
    else:
        posed = [i for i, name in enumerate(names) if centers and name in centers]
        if len(posed) < 2:
            return []
        xyz = np.stack([centers[names[i]] for i in posed])
        dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        k = min(cfg.spatial_k, len(posed) - 1)
        near = np.argsort(dist, axis=1, kind="stable")[:, :k]
        chosen = {tuple(sorted((posed[a], posed[b]))) for a in range(len(posed)) for b in near[a]}
        index_pairs = sorted(chosen)
    return [(names[i], names[j]) for i, j in index_pairs]


@dataclass(frozen=True)
class VladTask:
    """A block of images to describe by VLAD on the codebook saved at `codebook_path`."""

    descriptor_paths: tuple[tuple[str, str], ...]  # (image name, .npy path)
    codebook_path: str


def global_descriptors(names: Sequence[str], paths: dict[str, str], n_features: Sequence[int], cfg: MatchConfig,
                       ctx: StageContext) -> np.ndarray:
    """(len(names), words * 128) float32 VLAD vectors: the codebook learnt here from a sample of every image's
    descriptors (`n_features`: how many each image has, which sizes the codebook), the vectors computed by the
    executor in blocks of images."""
    start = time.perf_counter()
    words = min(cfg.retrieval_words, max(2, sum(n_features) // 20))
    codebook = retrieval.train_codebook((np.load(paths[n]) for n in names), len(names), words)
    codebook_path = str(Path(paths[names[0]]).parent / "codebook.npy")
    np.save(codebook_path, codebook)
    tasks = [VladTask(tuple((n, paths[n]) for n in block), codebook_path) for block in ctx.blocks(list(names))]
    vectors = np.concatenate(ctx.map(vlad_block, tasks, describe=lambda t: f"images {t.descriptor_paths[0][0]} ..."))
    ctx.count("retrieval_words", words)
    ctx.count("retrieval_k", min(cfg.retrieval_k, len(names) - 1))
    if cfg.retrieval_k >= len(names) - 1:
        ctx.record("retrieval_note", f"retrieval_k {cfg.retrieval_k} >= images - 1 = {len(names) - 1}: every "
                   "pair is a candidate (as exhaustive)")
    ctx.count("seconds_retrieval", round(time.perf_counter() - start, 3))
    return vectors


def vlad_block(task: VladTask) -> np.ndarray:
    """(len(block), words * 128) VLAD vectors of the block's images."""
    codebook = np.load(task.codebook_path, allow_pickle=False)
    return np.stack([retrieval.vlad(np.load(path, allow_pickle=False), codebook)
                     for _, path in task.descriptor_paths])


def match_block(task: MatchTask) -> list[np.ndarray]:
    """Match every pair of the block; returns one (K, 2) int32 array per pair, in order."""
    paths = dict(task.descriptor_paths)
    cache: dict[str, np.ndarray] = {}

    def unit(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = unit_descriptors(np.load(paths[name], allow_pickle=False))
        return cache[name]

    cfg = task.cfg
    if cfg.matcher == "pycolmap":
        descriptors = {name: np.load(path, allow_pickle=False) for name, path in task.descriptor_paths}
        return match_pycolmap(task.pairs, descriptors, cfg.ratio, cfg.mutual, cfg.max_distance, cfg.num_threads)
    out = []
    for a, b in task.pairs:
        if cfg.matcher == "flann":
            out.append(match_flann(unit(a), unit(b), cfg.ratio, cfg.mutual, cfg.max_distance,
                                   cfg.flann_trees, cfg.flann_checks))
        else:
            out.append(match_descriptors(unit(a), unit(b), cfg.ratio, cfg.mutual, cfg.max_distance))
    return out


def _empty() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int32)


def match_descriptors(desc1: np.ndarray, desc2: np.ndarray, ratio: float = 0.8, mutual: bool = True,
                      max_distance: float = 0.0, chunk: int = 1024) -> np.ndarray:
    """Nearest-neighbour matching of unit descriptors by brute force (the reference).

    desc1: (N1, D), desc2: (N2, D) float32 with unit rows. For each row of desc1 its nearest (L2) row of
    desc2 is kept when `d1 < ratio * d2` (Lowe's test against the second nearest; passes when N2 = 1),
    when `d1 <= max_distance` (if > 0) and, with `mutual`, when it is also the nearest of that row's
    nearest: its similarity is the column's maximum (the first such row on exact ties), which needs no
    column argmax. The similarity matrix is computed `chunk` rows at a time with torch (multithreaded
    GEMM and top-2), so memory is O(chunk * N2).
    Returns (K, 2) int32 `[index in desc1, index in desc2]`, sorted by the first column.
    """
    import torch

    n1, n2 = len(desc1), len(desc2)
    if n1 == 0 or n2 == 0:
        return _empty()
    a = torch.from_numpy(np.ascontiguousarray(desc1, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(desc2, dtype=np.float32))
    k = min(2, n2)
    top_sim = torch.empty((n1, k))
    top_idx = torch.empty((n1, k), dtype=torch.int64)
    col_max = torch.full((n2,), -torch.inf)
    with torch.no_grad():
        for lo in range(0, n1, chunk):
            sim = a[lo:lo + chunk] @ b.T  # (c, N2) cosine similarity; L2^2 = 2 - 2 sim
            top_sim[lo:lo + len(sim)], top_idx[lo:lo + len(sim)] = sim.topk(k, dim=1)
            torch.maximum(col_max, sim.amax(dim=0), out=col_max)
    best, sims = top_idx[:, 0].numpy(), top_sim.numpy().astype(np.float64)
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * sims[:, 0], 0.0))
    d2 = np.full(n1, np.inf) if k == 1 else np.sqrt(np.maximum(2.0 - 2.0 * sims[:, 1], 0.0))
    reverse = None
    if mutual:
        rows = np.flatnonzero(top_sim[:, 0].numpy() >= col_max.numpy()[best])  # rows that are their column's best
        cols, first = np.unique(best[rows], return_index=True)
        reverse = np.full(n2, -1, dtype=np.int64)
        reverse[cols] = rows[first]  # on exact ties, the first such row
    return _filter(best, d1, d2, reverse, ratio, mutual, max_distance)


def _filter(best: np.ndarray, d1: np.ndarray, d2: np.ndarray, reverse: np.ndarray | None, ratio: float,
            mutual: bool, max_distance: float) -> np.ndarray:
    keep = d1 < ratio * d2 if ratio < 1.0 else np.ones(len(best), dtype=bool)
    if max_distance > 0:
        keep &= d1 <= max_distance
    if mutual and reverse is not None:
        keep &= reverse[best] == np.arange(len(best))
    i = np.flatnonzero(keep)
    return np.column_stack([i, best[i]]).astype(np.int32)


def match_flann(desc1: np.ndarray, desc2: np.ndarray, ratio: float = 0.8, mutual: bool = True,
                max_distance: float = 0.0, trees: int = 4, checks: int = 128) -> np.ndarray:
    """Approximate `match_descriptors` with OpenCV's FLANN (randomised k-d trees). Same inputs and output."""
    n1, n2 = len(desc1), len(desc2)
    if n1 == 0 or n2 == 0:
        return _empty()
    cv2.setRNGSeed(0)  # FLANN's trees are random; fixing the seed makes the result repeatable
    matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": trees}, {"checks": checks})
    k = 2 if n2 >= 2 else 1
    knn = matcher.knnMatch(np.ascontiguousarray(desc1, np.float32), np.ascontiguousarray(desc2, np.float32), k=k)
    best = np.array([m[0].trainIdx for m in knn], dtype=np.int64)
    d1 = np.array([m[0].distance for m in knn], dtype=np.float64)
    d2 = np.array([m[1].distance if len(m) > 1 else np.inf for m in knn], dtype=np.float64)
    reverse = None
    if mutual:
        back = cv2.FlannBasedMatcher({"algorithm": 1, "trees": trees}, {"checks": checks}).knnMatch(
            np.ascontiguousarray(desc2, np.float32), np.ascontiguousarray(desc1, np.float32), k=1)
        reverse = np.array([m[0].trainIdx for m in back], dtype=np.int64)
    return _filter(best, d1, d2, reverse, ratio, mutual, max_distance)


def match_pycolmap(pairs: Sequence[tuple[str, str]], descriptors: dict[str, np.ndarray], ratio: float = 0.8,
                   mutual: bool = True, max_distance: float = 0.0, num_threads: int = -1) -> list[np.ndarray]:
    """Match `pairs` with COLMAP's CPU SIFT matcher (`pycolmap.match_image_pairs` on a temporary database).

    descriptors: image name -> (N, 128) uint8 SIFT descriptors (COLMAP's RootSIFT bytes or OpenCV's). COLMAP
    reads its ratio / cross-check / max-distance tests on unit descriptors as `match_descriptors` does, finds
    neighbours with FAISS and runs on `num_threads` (-1: every core). No geometric verification (the essential
    stage does it).
    Returns one (K, 2) int32 array per pair `(a, b)`: `[index in a, index in b]`, sorted by the first column.
    """
    from recon3d.colmap_module import pycolmap

    names = sorted({n for pair in pairs for n in pair})
    ids = {name: i + 1 for i, name in enumerate(names)}
    options = pycolmap.FeatureMatchingOptions()
    options.skip_geometric_verification = True
    options.num_threads = num_threads
    options.sift.max_ratio = ratio
    options.sift.cross_check = mutual
    options.sift.max_distance = max_distance if max_distance > 0 else 2.0  # unit vectors are never 2 apart
    with tempfile.TemporaryDirectory(prefix="recon3d-match-") as tmp:
        database, pair_list = Path(tmp) / "database.db", Path(tmp) / "pairs.txt"
        with pycolmap.Database.open(database) as db, pycolmap.DatabaseTransaction(db):
            camera = db.write_camera(pycolmap.Camera(model="SIMPLE_PINHOLE", width=1, height=1, params=[1, .5, .5]))
            for name in names:  # the matcher reads descriptors only; keypoints are placeholders of the right count
                desc = np.ascontiguousarray(descriptors[name], dtype=np.uint8)
                db.write_image(pycolmap.Image(name=str(ids[name]), camera_id=camera, image_id=ids[name]),
                               use_image_id=True)
                db.write_keypoints(ids[name], np.zeros((len(desc), 2), dtype=np.float32))
                db.write_descriptors(ids[name], pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, desc))
        pair_list.write_text("".join(f"{ids[a]} {ids[b]}\n" for a, b in pairs))
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = str(pair_list)
        quiet, pycolmap.logging.minloglevel = pycolmap.logging.minloglevel, int(pycolmap.logging.WARNING)
        try:  # COLMAP logs every block at INFO
            pycolmap.match_image_pairs(database, matching_options=options, pairing_options=pairing,
                                       device=pycolmap.Device.cpu)
        finally:
            pycolmap.logging.minloglevel = quiet
        out = []
        with pycolmap.Database.open(database) as db:
            for a, b in pairs:
                m = (np.asarray(db.read_matches(ids[a], ids[b]), dtype=np.int64).reshape(-1, 2)
                     if db.exists_matches(ids[a], ids[b]) else _empty())
                out.append(m[np.argsort(m[:, 0], kind="stable")].astype(np.int32))
    release_free_memory()  # COLMAP's matcher frees its float copies of the block's descriptors (~0.5 GB for a
    # 1000-pair block of 1000 images); without this the allocator keeps them resident under the next round
    return out


STAGE = Stage(
    name="match",
    version=7,  # 4: retrieval rounds ranked by shared feature tracks; 5: inconsistent tracks left out; 6: shares
    # over tracks of three or more views; 7: ranked by the area shared (cells holding shared tracks)
    config=MatchConfig,
    run=run,
    reads=("images", "features", "poses"),
    writes=("matches",),
    summary="pair selection (exhaustive, sequential, spatial) and mutual-NN + ratio descriptor matching",
)
