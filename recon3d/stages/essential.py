"""essential: verify each matched pair with two-view geometry and recover its relative pose.

Per pair (through the executor), with the OpenCV backend (the reference):
- keypoints are undistorted to normalised coordinates with the pair's own cameras (`camera_models.unproject`,
  COLMAP model, distortion included), then scaled by one virtual focal length `f` (the mean of the two
  cameras' focal lengths) so thresholds stay in pixels: OpenCV's MAGSAC misbehaves on raw normalised
  coordinates with thresholds of ~1e-3 (measured: 0.7 degrees median rotation error instead of 0.09);
- `E` by `cv2.findEssentialMat` (USAC MAGSAC++ by default), `F` by `cv2.findFundamentalMat` on the raw
  pixels, `H` by `cv2.findHomography`, each with `max_error_px`;
- COLMAP's decision rule (`EstimateCalibratedTwoViewGeometry`): calibrated when E explains nearly as
  many matches as F (`E >= min_e_f_inlier_ratio * F`, intrinsics `auto`; always with `known`); then
  planar or panoramic when H explains more than `max_h_inlier_ratio` of them; uncalibrated when only F
  holds; degenerate (dropped) when nothing reaches `min_inliers`. As in COLMAP, a planar pair keeps the
  larger inlier set (E's or F's when it is larger than H's) and takes its pose from H;
- the pose: `epipolar.pose_from_essential` (cheirality, vectorised; `cv2.recoverPose` agrees, tested) for
  E; `cv2.decomposeHomographyMat` with the same cheirality count for H. Inliers are the model's inliers
  that triangulate in front of both cameras. A planar pair whose median triangulation angle is below
  `panoramic_tri_angle_deg` is panoramic, with zero translation.

No OpenCV pixel convention enters: E is fitted to `f * normalised` coordinates with `K = diag(f, f, 1)`
(no principal point), F and H to COLMAP pixels (an F or H fitted to COLMAP pixels is in COLMAP's frame).
Stored: `E` (normalised coordinates), `F` (COLMAP pixels: the fitted one when estimated, else
`K2^-T E K1^-1`), `H` (COLMAP pixels; for calibrated pairs that of undistorted pixels, `K2 H_n K1^-1`),
`cam2_from_cam1` (4, 4) with unit translation (zero for panoramic), the median triangulation angle.

The pycolmap backend runs COLMAP's own verifier (its rule and LO-RANSAC, with the same thresholds) on a block of
pairs at once, on every core: `pycolmap.geometric_verification` on a temporary database (F and H only when
intrinsics are `unknown`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from recon3d.errors import StageError
from recon3d.geometry import camera_models, epipolar
from recon3d.report.match_graph import write_match_graph
from recon3d.scene import Camera, Scene, TwoViewGeometry
from recon3d.stages.base import DIFFERENT_SCENES, Stage, StageConfig, StageContext, describe_pairs

BACKENDS = ("opencv", "pycolmap")
METHODS = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC, "usac_accurate": cv2.USAC_ACCURATE}
PER_PAIR_REPORT_LIMIT = 2000
PYCOLMAP_BLOCK = 2000  # pairs per task with the pycolmap backend: COLMAP's verifier uses every core itself


class EssentialConfig(StageConfig):
    backend: Literal["opencv", "pycolmap"] = Field("opencv", description="estimator")
    intrinsics: Literal["auto", "known", "unknown"] = Field(
        "auto", description="known: E only; unknown: F only (raw pixels); auto: both, and COLMAP's E/F "
        "inlier-ratio rule decides")
    method: Literal["magsac", "ransac", "usac_accurate"] = Field("magsac", description="OpenCV robust estimator")
    max_error_px: float = Field(2.0, gt=0, description="inlier threshold: epipolar / transfer error in pixels")
    confidence: float = Field(0.999, gt=0, lt=1, description="robust estimation confidence (COLMAP: 0.999)")
    max_iterations: int = Field(10000, ge=1, description="most robust-estimation iterations per model")
    min_inliers: int = Field(15, ge=5, description="drop pairs whose best model has fewer inliers")
    min_e_f_inlier_ratio: float = Field(0.95, ge=0, le=1, description="auto: calibrated when E inliers >= this "
                                        "x F inliers (COLMAP min_E_F_inlier_ratio)")
    max_h_inlier_ratio: float = Field(0.8, ge=0, le=1, description="planar/panoramic when H inliers > this x "
                                      "E (or F) inliers (COLMAP max_H_inlier_ratio)")
    panoramic_tri_angle_deg: float = Field(1.0, ge=0, description="an H pair with median triangulation angle "
                                           "below this (degrees) is panoramic (pure rotation)")
    seed: int = Field(0, description="random seed (OpenCV RANSAC and pycolmap; OpenCV USAC seeds itself "
                      "with a fixed state)")
    pairs_per_task: int = Field(0, ge=0, description="pairs per executor task; 0 = about four tasks per "
                                "executor worker, at most 64 pairs each (pycolmap: 2000 pairs each); the output "
                                "does not depend on it")
    num_threads: int = Field(-1, ge=-1, description="pycolmap: the verifier's threads (-1 = every core)")


@dataclass(frozen=True)
class PairTask:
    """One matched pair: the matched keypoints and both cameras."""

    pair: tuple[str, str]
    x1: np.ndarray  # (K, 2) float64 COLMAP pixels in image 1, row k = match k
    x2: np.ndarray  # (K, 2) float64 in image 2
    camera1: Camera
    camera2: Camera
    cfg: EssentialConfig


@dataclass(frozen=True)
class PairResult:
    pair: tuple[str, str]
    geometry: TwoViewGeometry | None
    reason: str = ""  # why the pair was dropped (geometry is None)
    num_inliers: dict[str, int] = field(default_factory=dict)  # per model: "E", "F", "H"


def run(scene: Scene, cfg: EssentialConfig, ctx: StageContext | None = None) -> Scene:
    ctx = ctx or StageContext.standalone("essential")
    if not scene.matches:
        raise StageError("essential: the scene has no matches", "run the match stage first")
    info = {im.name: im for im in scene.images}
    valid = []
    for a, b in scene.matches:
        if a not in scene.features or b not in scene.features or a not in info or b not in info:
            ctx.drop(f"{a} | {b}", "an image of the pair has no features or is not in the scene")
            continue
        for name in (a, b):
            if info[name].camera_id not in scene.cameras:
                raise StageError(f"essential: image {name} has camera id {info[name].camera_id}, which the scene "
                                 "lacks", "re-run ingest")
        valid.append((a, b))
    start = time.perf_counter()
    folder = Path(ctx.workdir) / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        blocks = []
        per_task = cfg.pairs_per_task or (PYCOLMAP_BLOCK if cfg.backend == "pycolmap" else 0)
        for i, block in enumerate(ctx.blocks(valid, per_task)):
            path = folder / f"{i:06d}.npz"
            arrays = {}
            for k, (a, b) in enumerate(block):
                m = scene.matches[(a, b)]
                arrays[f"x1_{k}"] = scene.features[a].keypoints[m[:, 0]].astype(np.float64)
                arrays[f"x2_{k}"] = scene.features[b].keypoints[m[:, 1]].astype(np.float64)
            np.savez(path, **arrays)
            cams = tuple((scene.cameras[info[a].camera_id], scene.cameras[info[b].camera_id]) for a, b in block)
            blocks.append(VerifyBlock(block, str(path), cams, cfg))
        found = ctx.map(verify_block, blocks, describe=lambda t: describe_pairs(t.pairs))
        results = [r for block_results in found for r in block_results]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    two_view: dict[tuple[str, str], TwoViewGeometry] = {}
    per_pair: dict[str, dict] = {}
    kinds: dict[str, int] = {}
    for pair, res in zip(valid, results, strict=True):
        key = f"{pair[0]} | {pair[1]}"
        entry = {"matches": len(scene.matches[pair]), **{f"inliers_{k}": v for k, v in res.num_inliers.items()}}
        if res.geometry is None:
            ctx.drop(key, res.reason)
            entry["dropped"] = res.reason
        else:
            g = res.geometry
            two_view[res.pair] = g
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
            entry.update(kind=g.kind, inliers=int(g.inliers.sum()), tri_angle_deg=round(g.tri_angle_deg, 3))
        per_pair[key] = entry
    ratios = [g.inliers.mean() for g in two_view.values()]
    ctx.count("backend", cfg.backend)
    ctx.count("pairs_in", len(scene.matches))
    ctx.count("pairs_verified", len(two_view))
    ctx.count("pairs_dropped", len(scene.matches) - len(two_view))
    ctx.count("kinds", kinds)
    ctx.count("inliers_total", int(sum(int(g.inliers.sum()) for g in two_view.values())))
    ctx.count("inlier_ratio_median", float(np.median(ratios)) if ratios else None)
    angles = [g.tri_angle_deg for g in two_view.values() if g.kind in ("calibrated", "planar")]
    ctx.count("tri_angle_median_deg", float(np.median(angles)) if angles else None)
    if len(per_pair) <= PER_PAIR_REPORT_LIMIT:
        ctx.count("per_pair", per_pair)
    ctx.count("seconds_verify", round(time.perf_counter() - start, 3))
    names = [im.name for im in scene.images if im.name in scene.features]
    svg = write_match_graph(Path(ctx.workdir) / "match_graph.svg", names,
                            {p: int(g.inliers.sum()) for p, g in two_view.items()},
                            lower={p: len(m) for p, m in scene.matches.items()},
                            title=f"two-view geometry ({cfg.backend})", upper_label="inliers",
                            lower_label="matches")
    ctx.count("match_graph_svg", str(svg))
    if not two_view:
        reasons = sorted({r.reason for r in results})
        raise StageError(f"essential: none of the {len(scene.matches)} matched pairs has a two-view geometry "
                         f"({'; '.join(reasons[:3])})",
                         f"check the images overlap and the intrinsics, or verify looser: --set essential.max_error_px="
                         f"{2 * cfg.max_error_px:g} --set essential.min_inliers={max(5, cfg.min_inliers // 2)}"
                         + DIFFERENT_SCENES * bool(scene.labels))
    return scene.replace(two_view=two_view)


@dataclass(frozen=True)
class VerifyBlock:
    """A block of pairs for one executor task: their matched keypoints in an .npz file (`x1_k`, `x2_k` for
    pair k, (K, 2) float64 COLMAP pixels), so a worker reads them from disk, and both cameras of each pair."""

    pairs: tuple[tuple[str, str], ...]
    path: str
    cameras: tuple[tuple[Camera, Camera], ...]
    cfg: EssentialConfig


def verify_block(block: VerifyBlock) -> list[PairResult]:
    """`verify_pair` on every pair of the block, in order (pycolmap: the whole block in one COLMAP call)."""
    with np.load(block.path, allow_pickle=False) as arrays:
        tasks = [PairTask(pair, arrays[f"x1_{k}"], arrays[f"x2_{k}"], cam1, cam2, block.cfg)
                 for k, (pair, (cam1, cam2)) in enumerate(zip(block.pairs, block.cameras, strict=True))]
    return _verify_pycolmap(tasks) if block.cfg.backend == "pycolmap" else [verify_pair(t) for t in tasks]


def verify_pair(task: PairTask) -> PairResult:
    """Two-view geometry of one pair with the configured backend."""
    if task.cfg.backend == "pycolmap":
        return _verify_pycolmap([task])[0]
    return _too_few(task) or _verify_opencv(task)


def _too_few(task: PairTask) -> PairResult | None:
    """The dropped result of a pair with fewer matches than any model needs, else None."""
    needed = max(task.cfg.min_inliers, 8)
    if len(task.x1) < needed:
        return PairResult(task.pair, None, f"{len(task.x1)} matches, fewer than needed ({needed})")
    return None


def virtual_focal(camera1: Camera, camera2: Camera) -> float:
    """The mean focal length (px) of two cameras: the scale of the virtual pinhole E is fitted in."""
    f1 = camera_models.split_params(camera1.model, camera1.params)[0]
    f2 = camera_models.split_params(camera2.model, camera2.params)[0]
    return float(np.mean(np.concatenate([f1, f2])))


def _robust(cfg: EssentialConfig, estimator, *args, **kwargs) -> tuple[np.ndarray | None, np.ndarray]:
    """Run an OpenCV robust estimator seeded with `cfg.seed`: the (3, 3) model (the first of stacked
    candidates, OpenCV's best) or None, and the (N,) bool inlier mask. OpenCV's USAC asserts on some
    degenerate samples (`!model.empty()`): that counts as no model, never as a crash."""
    n = len(args[0])
    cv2.setRNGSeed(cfg.seed)
    try:
        model, mask = estimator(*args, **kwargs)
    except cv2.error:
        model, mask = None, None
    if model is None or model.shape[0] < 3 or mask is None:
        return None, np.zeros(n, dtype=bool)
    return model[:3], mask.ravel().astype(bool)


def _verify_opencv(task: PairTask) -> PairResult:
    cfg = task.cfg
    method = METHODS[cfg.method]
    nums: dict[str, int] = {}
    n1 = camera_models.unproject(task.camera1.model, task.camera1.params, task.x1)
    n2 = camera_models.unproject(task.camera2.model, task.camera2.params, task.x2)
    f = virtual_focal(task.camera1, task.camera2)
    k_virtual = np.diag([f, f, 1.0])
    E = mask_e = F = mask_f = None  # noqa: N806
    if cfg.intrinsics in ("auto", "known"):
        E, mask_e = _robust(cfg, cv2.findEssentialMat, n1 * f, n2 * f, k_virtual, method=method,  # noqa: N806
                            prob=cfg.confidence, threshold=cfg.max_error_px, maxIters=cfg.max_iterations)
        nums["E"] = int(mask_e.sum())
    if cfg.intrinsics in ("auto", "unknown"):
        F, mask_f = _robust(cfg, cv2.findFundamentalMat, task.x1, task.x2, method, cfg.max_error_px,  # noqa: N806
                            cfg.confidence, cfg.max_iterations)
        nums["F"] = int(mask_f.sum())
    calibrated = cfg.intrinsics != "unknown"
    h_src, h_dst = (n1 * f, n2 * f) if calibrated else (task.x1, task.x2)
    H, mask_h = _robust(cfg, cv2.findHomography, h_src, h_dst, method, cfg.max_error_px,  # noqa: N806
                        maxIters=cfg.max_iterations, confidence=cfg.confidence)
    nums["H"] = int(mask_h.sum())

    num_e, num_f, num_h = nums.get("E", 0), nums.get("F", 0), nums["H"]
    if cfg.intrinsics == "known":
        use_e = num_e >= cfg.min_inliers
    elif cfg.intrinsics == "auto":
        use_e = num_e >= cfg.min_inliers and num_e >= cfg.min_e_f_inlier_ratio * num_f
    else:
        use_e = False
    if use_e and num_h > cfg.max_h_inlier_ratio * num_e:  # as COLMAP: the larger inlier set, H's pose
        inliers = mask_e if num_e >= num_h else mask_h
        return _from_homography(task, H, inliers, n1, n2, k_virtual, E, F, nums)
    if use_e:
        return _from_essential(task, E, mask_e, n1, n2, f, F, H, nums)
    if num_f >= cfg.min_inliers:
        if num_h > cfg.max_h_inlier_ratio * num_f:
            inliers = mask_f if num_f >= num_h else mask_h
            return _from_homography(task, H, inliers, n1, n2, k_virtual if calibrated else None, None, F, nums)
        inliers = mask_f
        geometry = TwoViewGeometry("uncalibrated", inliers, F=F / np.linalg.norm(F),
                                   H=None if H is None else _pixel_h(H, task, k_virtual if calibrated else None))
        return PairResult(task.pair, geometry, num_inliers=nums)
    detail = ", ".join(f"{k} {v}" for k, v in nums.items())
    return PairResult(task.pair, None, f"degenerate: inliers {detail}, below min_inliers {cfg.min_inliers}"
                      + (" or E/F ratio" if cfg.intrinsics == "auto" and num_e >= cfg.min_inliers else ""),
                      num_inliers=nums)


def _pixel_h(H: np.ndarray, task: PairTask, k_virtual: np.ndarray | None) -> np.ndarray:  # noqa: N803
    """H in COLMAP pixels: as fitted on raw pixels (`k_virtual` None), or `K2 H_n K1^-1` when it was fitted
    to the virtual pinhole `k_virtual` (3, 3)."""
    if k_virtual is not None:
        h_n = np.linalg.inv(k_virtual) @ H @ k_virtual
        H = task.camera2.K @ h_n @ np.linalg.inv(task.camera1.K)  # noqa: N806
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H / np.linalg.norm(H)


def _from_essential(task: PairTask, E: np.ndarray, inliers: np.ndarray, n1: np.ndarray, n2: np.ndarray,  # noqa: N803
                    f: float, F: np.ndarray | None, H: np.ndarray | None, nums: dict[str, int]) -> PairResult:  # noqa: N803
    k_virtual = np.diag([f, f, 1.0])
    # the vectorised cheirality test (cv2.recoverPose gives the same pose, but triangulates point by point
    # and was 70 % of this stage's time on real photos)
    pose, front = epipolar.pose_from_essential(E, n1[inliers], n2[inliers])
    inliers = inliers.copy()
    inliers[inliers] = front
    if inliers.sum() < task.cfg.min_inliers:
        return PairResult(task.pair, None, f"only {int(inliers.sum())} E inliers in front of both cameras",
                          num_inliers=nums)
    points = epipolar.triangulate_linear(pose, n1[inliers], n2[inliers])
    tri = float(np.median(epipolar.triangulation_angle(pose, points)))
    if F is None:
        F = epipolar.fundamental_from_essential(E, task.camera1.K, task.camera2.K)  # noqa: N806
    geometry = TwoViewGeometry("calibrated", inliers, E=E / np.linalg.norm(E), F=F / np.linalg.norm(F),
                               H=None if H is None else _pixel_h(H, task, k_virtual),
                               cam2_from_cam1=pose, tri_angle_deg=tri)
    return PairResult(task.pair, geometry, num_inliers=nums)


def _from_homography(task: PairTask, H: np.ndarray, inliers: np.ndarray, n1: np.ndarray, n2: np.ndarray,  # noqa: N803
                     k_virtual: np.ndarray | None, E: np.ndarray | None, F: np.ndarray | None,  # noqa: N803
                     nums: dict[str, int]) -> PairResult:
    """Planar or panoramic: the pose from decomposing H in normalised coordinates, by cheirality."""
    if k_virtual is not None:  # fitted to f * normalised coordinates
        h_n = np.linalg.inv(k_virtual) @ H @ k_virtual
    else:  # fitted to raw pixels: normalise with the cameras' (prior) K, as COLMAP does
        h_n = np.linalg.inv(task.camera2.K) @ H @ task.camera1.K
    _, rotations, translations, _ = cv2.decomposeHomographyMat(h_n, np.eye(3))
    best = None
    for rotation, t in zip(rotations, translations, strict=True):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, t.ravel()  # t / d: plane at unit distance
        z1, z2 = epipolar.depths(pose, epipolar.triangulate_linear(pose, n1[inliers], n2[inliers]))
        front = (z1 > 0) & (z2 > 0)
        if best is None or front.sum() > best[0].sum():
            best = (front, pose)
    front, pose = best
    baseline = np.linalg.norm(pose[:3, 3])
    tri = 0.0
    if baseline > 1e-12:
        points = epipolar.triangulate_linear(pose, n1[inliers], n2[inliers])
        tri = float(np.median(epipolar.triangulation_angle(pose, points)))
    panoramic = tri < task.cfg.panoramic_tri_angle_deg
    pose = pose.copy()
    pose[:3, 3] = 0.0 if panoramic else pose[:3, 3] / baseline
    if not panoramic:  # with a baseline, cheirality applies as for E
        inliers = inliers.copy()
        inliers[inliers] = front
        if inliers.sum() < task.cfg.min_inliers:
            return PairResult(task.pair, None, f"only {int(inliers.sum())} H inliers in front of both cameras",
                              num_inliers=nums)
    geometry = TwoViewGeometry("panoramic" if panoramic else "planar", inliers,
                               E=None if E is None else E / np.linalg.norm(E),
                               F=None if F is None else F / np.linalg.norm(F),
                               H=_pixel_h(H, task, k_virtual), cam2_from_cam1=pose,
                               tri_angle_deg=0.0 if panoramic else tri)
    return PairResult(task.pair, geometry, num_inliers=nums)


# -- pycolmap backend ------------------------------------------------------------------------------------

_PYCOLMAP_KINDS = {"CALIBRATED": "calibrated", "UNCALIBRATED": "uncalibrated", "PLANAR": "planar",
                   "PANORAMIC": "panoramic", "PLANAR_OR_PANORAMIC": "planar"}


def _pycolmap_camera(camera: Camera, camera_id: int, prior_focal: bool):
    from recon3d.colmap_module import pycolmap

    out = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height,
                          params=np.asarray(camera.params, dtype=np.float64), camera_id=camera_id)
    out.has_prior_focal_length = prior_focal  # COLMAP's verifier estimates E only between two such cameras
    return out


def pycolmap_options(cfg: EssentialConfig):
    """`pycolmap.TwoViewGeometryOptions` with recon3d's thresholds."""
    from recon3d.colmap_module import pycolmap

    options = pycolmap.TwoViewGeometryOptions()
    options.compute_relative_pose = True
    options.min_num_inliers = cfg.min_inliers
    options.min_E_F_inlier_ratio = 0.0 if cfg.intrinsics == "known" else cfg.min_e_f_inlier_ratio
    options.max_H_inlier_ratio = cfg.max_h_inlier_ratio
    options.ransac.max_error = cfg.max_error_px
    options.ransac.confidence = cfg.confidence
    options.ransac.max_num_trials = cfg.max_iterations
    options.ransac.random_seed = cfg.seed
    return options


def _verify_pycolmap(tasks: list[PairTask]) -> list[PairResult]:
    """COLMAP's geometric verification of the pairs, all at once on every core (`pycolmap.geometric_verification`
    on a temporary database: pair k is images 2k+1 and 2k+2 holding its matched keypoints, match i <-> i).

    One camera id per distinct camera: without intrinsics (F and H only) COLMAP then fits a focal length both
    images of one camera share (its shared-focal solver), and leaves two cameras' focal lengths free. With
    intrinsics (`auto`, `known`) every camera has a prior focal length, so COLMAP estimates E beside F and H. The
    median triangulation angle of the inliers, which the database does not keep, is computed here from their
    viewing rays."""
    from recon3d.colmap_module import pycolmap

    results: list[PairResult | None] = [_too_few(t) for t in tasks]
    todo = [k for k, r in enumerate(results) if r is None]
    if not todo:
        return results
    cfg = tasks[0].cfg
    with tempfile.TemporaryDirectory(prefix="recon3d-verify-") as tmp:
        database = Path(tmp) / "database.db"
        with pycolmap.Database.open(database) as db, pycolmap.DatabaseTransaction(db):
            camera_ids: dict[tuple, int] = {}
            for k in todo:
                task = tasks[k]
                for side, (x, camera) in enumerate(((task.x1, task.camera1), (task.x2, task.camera2))):
                    key = (camera.model, camera.width, camera.height, tuple(np.asarray(camera.params, float)))
                    if key not in camera_ids:
                        camera_ids[key] = len(camera_ids) + 1
                        db.write_camera(_pycolmap_camera(camera, camera_ids[key], cfg.intrinsics != "unknown"),
                                        use_camera_id=True)
                    image_id = 2 * k + 1 + side
                    db.write_image(pycolmap.Image(name=str(image_id), camera_id=camera_ids[key], image_id=image_id),
                                   use_image_id=True)
                    db.write_keypoints(image_id, np.asarray(x, dtype=np.float32))
                index = np.repeat(np.arange(len(task.x1), dtype=np.uint32)[:, None], 2, axis=1)
                db.write_matches(2 * k + 1, 2 * k + 2, index)
        verifier = pycolmap.GeometricVerifierOptions()
        verifier.num_threads = cfg.num_threads
        quiet, pycolmap.logging.minloglevel = pycolmap.logging.minloglevel, int(pycolmap.logging.WARNING)
        try:  # COLMAP logs every block at INFO
            pycolmap.geometric_verification(database, verifier_options=verifier,
                                            two_view_geometry_options=pycolmap_options(cfg))
        finally:
            pycolmap.logging.minloglevel = quiet
        with pycolmap.Database.open(database) as db:
            for k in todo:
                results[k] = _pycolmap_result(tasks[k], db.read_two_view_geometry(2 * k + 1, 2 * k + 2))
    return results


def _pycolmap_result(task: PairTask, g) -> PairResult:
    """A PairResult from the `pycolmap.TwoViewGeometry` COLMAP stored for `task`'s pair."""
    from recon3d.colmap_module import pycolmap

    cfg = task.cfg
    n = len(task.x1)
    config = pycolmap.TwoViewGeometryConfiguration(int(g.config)).name
    inliers = np.zeros(n, dtype=bool)
    if len(g.inlier_matches):
        inliers[np.asarray(g.inlier_matches)[:, 0]] = True
    nums = {"best": int(inliers.sum())}
    if config not in _PYCOLMAP_KINDS or inliers.sum() < cfg.min_inliers:
        return PairResult(task.pair, None, f"pycolmap: {config} with {int(inliers.sum())} inliers", num_inliers=nums)
    kind = _PYCOLMAP_KINDS[config]
    pose, tri = None, 0.0
    if kind != "uncalibrated" and g.cam2_from_cam1 is not None:  # none without intrinsics (F and H only)
        pose = np.eye(4)
        pose[:3, :] = g.cam2_from_cam1.matrix()
        norm = np.linalg.norm(pose[:3, 3])
        pose[:3, 3] = pose[:3, 3] / norm if norm > 1e-12 and kind != "panoramic" else 0.0
        if kind != "panoramic":
            n1 = camera_models.unproject(task.camera1.model, task.camera1.params, task.x1[inliers])
            n2 = camera_models.unproject(task.camera2.model, task.camera2.params, task.x2[inliers])
            tri = float(np.median(epipolar.ray_angle_deg(pose, n1, n2)))
    geometry = TwoViewGeometry(kind, inliers, E=_matrix(g.E) if kind != "uncalibrated" else None, F=_matrix(g.F),
                               H=_matrix(g.H), cam2_from_cam1=pose, tri_angle_deg=tri)
    return PairResult(task.pair, geometry, num_inliers=nums)


def _matrix(m) -> np.ndarray | None:
    """A (3, 3) float64 copy of a model pycolmap estimated; None for one it did not (E without intrinsics)."""
    return None if m is None else np.array(m, dtype=np.float64)


STAGE = Stage(
    name="essential",
    version=4,  # 3: pycolmap backend, intrinsics unknown: two cameras are two camera ids (no shared focal length);
    # 4: pycolmap backend through COLMAP's verifier (float32 keypoints), triangulation angle from the rays
    config=EssentialConfig,
    run=run,
    reads=("images", "cameras", "features", "matches"),
    writes=("two_view",),
    summary="verify matched pairs with E / F / H (OpenCV USAC or pycolmap) and recover relative poses",
)
