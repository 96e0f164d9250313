"""COLMAP's mappers (incremental, or global = GLOMAP in pycolmap >= 4.2) on recon3d's features and matches.

`map_scene` writes the scene's keypoints, matches and verified two-view geometries into a fresh COLMAP
database, runs `pycolmap.incremental_mapping` or `pycolmap.global_mapping`, and reads the largest model
back in recon3d terms. COLMAP's conventions are recon3d's (cam_from_world, OpenCV axes, pixel centres at
+0.5, COLMAP camera models), so nothing converts; ids map as image_id = index in `scene.images` + 1.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon3d.colmap_module import pycolmap
from recon3d.errors import StageError
from recon3d.geometry.rotation import rigid
from recon3d.io.colmap import _read_points
from recon3d.scene import Camera, Points, Scene

CONFIGS = {"calibrated": pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
           "uncalibrated": pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED,
           "planar": pycolmap.TwoViewGeometryConfiguration.PLANAR,
           "panoramic": pycolmap.TwoViewGeometryConfiguration.PANORAMIC}
KINDS = ("incremental", "global")


@dataclass(frozen=True)
class MapperSettings:
    """What recon3d exposes of COLMAP's mapper options."""

    share_intrinsics: bool = True  # images with one recon3d camera id share one COLMAP camera; else one each
    refine_focal: bool = True  # refine focal lengths in bundle adjustment (and in PnP, incremental)
    refine_extra: bool = True  # refine distortion parameters
    refine_principal: bool = False  # refine the principal point (rarely well constrained)
    min_model_size: int = 3  # registered images a model needs to be kept
    num_threads: int = -1  # -1: all cores; only 1 repeats exactly (COLMAP's threads race)
    seed: int = 0  # COLMAP's random_seed, set in every option group that has one
    multiple_models: bool = True  # COLMAP's default: after a model, start another from the images left
    tracks_per_view: int = 0  # global: position cameras and points from the longest tracks until each image
    # has this many (GLOMAP's required_tracks_per_view; 0 = every track); all tracks come back afterwards
    ba_rounds: int = 3  # global: GLOMAP's rounds of bundle adjustment, each dropping the observations that
    # reproject worst, before it retriangulates every track and refines once more (its ba_num_iterations)


@dataclass(frozen=True)
class MapOutput:
    """The largest model COLMAP found, in recon3d terms."""

    poses: dict[str, np.ndarray]  # registered image name -> cam_from_world (4, 4) float64
    cameras: dict[int, Camera]  # refined cameras; recon3d ids when sharing, else see image_camera
    image_camera: dict[str, int]  # registered image name -> its key in `cameras`
    points: Points  # tracks index scene.images and that image's keypoints
    registered: list[str]  # in scene order
    unregistered: list[str]  # images with features that the largest model lacks, in scene order
    models: list[int]  # registered images per model COLMAP found, largest first
    seconds: float


def map_scene(scene: Scene, workdir: Path, kind: str = "incremental",
              options: MapperSettings | None = None) -> MapOutput:
    """Run COLMAP's `kind` mapper on the scene's features, matches and two-view geometries.

    Writes `workdir/database.db` and `workdir/sparse/` afresh. Raises StageError when fewer than two images
    have features, no matched pair is verified, or COLMAP registers no model.
    """
    if kind not in KINDS:
        raise StageError(f"unknown mapper kind {kind!r}", f"use one of {', '.join(KINDS)}")
    options = options or MapperSettings()
    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    database, output = workdir / "database.db", workdir / "sparse"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    camera_of, n_pairs, n_inliers = write_database(scene, database, options.share_intrinsics)
    image_dir = str(_image_root(scene) or workdir)
    quiet, pycolmap.logging.minloglevel = pycolmap.logging.minloglevel, int(pycolmap.logging.FATAL)
    try:  # COLMAP's warnings advise its own command line ("consider running 'colmap ...'") and its errors
        # ("Failed to create sparse model") say less than the StageError below: neither is for our users
        if kind == "incremental":
            models = pycolmap.incremental_mapping(database, image_dir, output,
                                                  options=_incremental_options(options))
        else:
            models = pycolmap.global_mapping(database, image_dir, output, options=_global_options(options))
    finally:
        pycolmap.logging.minloglevel = quiet
    models = sorted(models.values(), key=lambda rec: rec.num_reg_images(), reverse=True)
    if not models or models[0].num_reg_images() == 0:
        raise StageError(f"COLMAP's {kind} mapper found no model in {len(camera_of)} images, {n_pairs} verified "
                         f"pairs, {n_inliers} inlier matches",
                         "try --set triangulate.mapper=reference, or looser matching and verification: "
                         "--set match.ratio=0.9 --set essential.max_error_px=4")
    rec = models[0]
    poses, image_camera = {}, {}
    for image in rec.images.values():
        if image.has_pose:
            name = scene.images[image.image_id - 1].name
            cam_from_world = image.cam_from_world()
            poses[name] = rigid(cam_from_world.rotation.matrix(), cam_from_world.translation)
            image_camera[name] = image.camera_id
    cameras = {cid: Camera(cam.model.name, cam.width, cam.height, np.array(cam.params, dtype=np.float64))
               for cid, cam in rec.cameras.items() if cid in image_camera.values()}
    points = _read_points(rec, {image_id: image_id - 1 for image_id in rec.images}) or _no_points()
    return MapOutput(poses=poses, cameras=cameras, image_camera=image_camera, points=points,
                     registered=[im.name for im in scene.images if im.name in poses],
                     unregistered=[im.name for im in scene.images if im.name in camera_of and im.name not in poses],
                     models=[rec.num_reg_images() for rec in models], seconds=time.perf_counter() - start)


def write_database(scene: Scene, path: Path, share_intrinsics: bool = True,
                   descriptors: bool = False) -> tuple[dict[str, int], int, int]:
    """Write a fresh COLMAP database at `path` (replacing one there): cameras, a trivial rig per camera and
    frame per image, keypoints (N, 2) float32, with `descriptors` the (N, 128) uint8 SIFT descriptors, matches
    and two-view geometries.

    Image ids are scene index + 1. Camera ids are recon3d's when sharing intrinsics; otherwise image i gets
    its own copy of its camera, id max(recon3d ids) + i + 1. Matches (K, 2) keypoint indices of the pair
    (a, b); COLMAP stores a pair with the smaller image id first and swaps matches and geometry itself.
    Returns (image name -> COLMAP camera id for images with features, verified pairs, inlier matches).
    """
    index = {im.name: i for i, im in enumerate(scene.images)}
    featured = [(i, im) for i, im in enumerate(scene.images) if im.name in scene.features]
    pairs = [p for p in _verified_pairs(scene) if p[0][0] in index and p[0][1] in index]
    if len(featured) < 2 or not pairs:
        raise StageError(f"the COLMAP mapper needs two images with features and a verified pair; the scene has "
                         f"{len(featured)} image(s) with features and {len(pairs)} verified pair(s) with inliers",
                         "run the features, match and essential (two-view verification) stages first")
    unknown = [im.name for _, im in featured if im.camera_id not in scene.cameras]
    if unknown:
        raise StageError(f"image {unknown[0]} has camera id {scene.image(unknown[0]).camera_id}, which is not in "
                         f"the scene's cameras {sorted(scene.cameras)}", "re-run ingest (or calibrate)")
    offset = max(scene.cameras, default=0)
    camera_of = {}
    Path(path).unlink(missing_ok=True)
    with pycolmap.Database.open(path) as db, pycolmap.DatabaseTransaction(db):
        for i, im in featured:
            cid = im.camera_id if share_intrinsics else offset + i + 1
            camera_of[im.name] = cid
            sensor = pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=cid)
            if not db.exists_camera(cid):
                cam = scene.cameras[im.camera_id]
                db.write_camera(pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height,
                                                params=cam.params, camera_id=cid,
                                                has_prior_focal_length=_focal_is_known(scene, im.camera_id)),
                                use_camera_id=True)
                rig = pycolmap.Rig(rig_id=cid)
                rig.add_ref_sensor(sensor)
                db.write_rig(rig, use_rig_id=True)
            db.write_image(pycolmap.Image(name=im.name, camera_id=cid, image_id=i + 1), use_image_id=True)
            frame = pycolmap.Frame(frame_id=i + 1, rig_id=cid)
            frame.add_data_id(pycolmap.data_t(sensor_id=sensor, id=i + 1))
            db.write_frame(frame, use_frame_id=True)
            db.write_keypoints(i + 1, np.asarray(scene.features[im.name].keypoints, dtype=np.float32).reshape(-1, 2))
            desc = scene.features[im.name].descriptors
            if descriptors and desc is not None:
                db.write_descriptors(i + 1, pycolmap.FeatureDescriptors(
                    pycolmap.FeatureExtractorType.SIFT, np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, 128)))
        n_inliers = 0
        for (a, b), matches, geometry in pairs:
            db.write_matches(index[a] + 1, index[b] + 1, matches.astype(np.uint32))
            db.write_two_view_geometry(index[a] + 1, index[b] + 1, geometry)
            n_inliers += len(geometry.inlier_matches)
    return camera_of, len(pairs), n_inliers


def _verified_pairs(scene: Scene) -> list[tuple[tuple[str, str], np.ndarray, pycolmap.TwoViewGeometry]]:
    """(pair, matches (K, 2) int64, COLMAP geometry) for each matched pair with a two-view entry and inliers.

    Raises StageError for matches outside the keypoints (COLMAP would crash on them) or an inlier mask of
    the wrong length.
    """
    out = []
    for (a, b), matches in scene.matches.items():
        two_view = scene.two_view.get((a, b))
        if two_view is None or a not in scene.features or b not in scene.features:
            continue
        matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
        n_a, n_b = len(scene.features[a].keypoints), len(scene.features[b].keypoints)
        if len(matches) and (matches.min() < 0 or matches[:, 0].max() >= n_a or matches[:, 1].max() >= n_b):
            raise StageError(f"matches of ({a}, {b}) index keypoints outside [0, {n_a}) x [0, {n_b})",
                             "re-run the match stage on the current features")
        if two_view.kind not in CONFIGS or len(two_view.inliers) != len(matches):
            raise StageError(f"two-view geometry of ({a}, {b}) has kind {two_view.kind!r} and "
                             f"{len(two_view.inliers)} inlier flags for {len(matches)} matches",
                             f"re-run the essential stage (kinds: {', '.join(CONFIGS)})")
        inliers = matches[np.asarray(two_view.inliers, dtype=bool)]
        if len(inliers) == 0:
            continue
        geometry = pycolmap.TwoViewGeometry(config=CONFIGS[two_view.kind], inlier_matches=inliers.astype(np.uint32))
        for name in ("E", "F", "H"):
            if getattr(two_view, name) is not None:
                setattr(geometry, name, np.asarray(getattr(two_view, name), dtype=np.float64))
        if two_view.cam2_from_cam1 is not None:
            geometry.cam2_from_cam1 = pycolmap.Rigid3d(matrix=np.asarray(two_view.cam2_from_cam1, np.float64)[:3])
        if two_view.tri_angle_deg > 0:
            geometry.tri_angle = float(np.radians(two_view.tri_angle_deg))
        out.append(((a, b), matches, geometry))
    return out


def _focal_is_known(scene: Scene, camera_id: int) -> bool:
    """A calibrated camera, or one read from a format that stores intrinsics, has a prior focal length."""
    return camera_id in scene.calibration or (scene.source is not None and scene.source.format != "images")


def _image_root(scene: Scene) -> Path | None:
    """The folder most images lie in as `folder / name` (COLMAP reads them for point colours), or None."""
    roots = Counter(im.path[: -len(im.name)] for im in scene.images
                    if im.path.replace("\\", "/").endswith("/" + im.name))
    root = Path(roots.most_common(1)[0][0]) if roots else None
    return root if root is not None and root.is_dir() else None


def _set_everywhere(options, settings: MapperSettings) -> None:
    """Set random_seed and num_threads in `options` and every nested option group that has them."""
    for name in dir(options):
        if name.startswith("_"):
            continue
        value = getattr(options, name)
        if name == "random_seed":
            setattr(options, name, settings.seed)
        elif name == "num_threads":
            setattr(options, name, settings.num_threads)
        elif type(value).__module__.startswith("pycolmap") and type(value).__name__.endswith("Options"):
            _set_everywhere(value, settings)


def _incremental_options(settings: MapperSettings) -> pycolmap.IncrementalPipelineOptions:
    opts = pycolmap.IncrementalPipelineOptions()
    opts.multiple_models = settings.multiple_models
    opts.min_model_size = settings.min_model_size
    opts.ba_refine_focal_length = opts.mapper.abs_pose_refine_focal_length = settings.refine_focal
    opts.ba_refine_extra_params = opts.mapper.abs_pose_refine_extra_params = settings.refine_extra
    opts.ba_refine_principal_point = settings.refine_principal
    _set_everywhere(opts, settings)
    return opts


def _global_options(settings: MapperSettings) -> pycolmap.GlobalPipelineOptions:
    opts = pycolmap.GlobalPipelineOptions()
    opts.multiple_models = settings.multiple_models
    opts.min_model_size = settings.min_model_size
    ba = opts.mapper.bundle_adjustment
    ba.refine_focal_length, ba.refine_extra_params = settings.refine_focal, settings.refine_extra
    ba.refine_principal_point = settings.refine_principal
    # the CPU solvers: the caller, not this module, decides to use a GPU (CONVENTIONS.md)
    opts.mapper.global_positioning.use_gpu = ba.ceres.use_gpu = False
    if settings.tracks_per_view > 0:
        opts.mapper.track_required_tracks_per_view = settings.tracks_per_view
    opts.mapper.ba_num_iterations = settings.ba_rounds
    _set_everywhere(opts, settings)
    return opts


def _no_points() -> Points:
    return Points(xyz=np.zeros((0, 3)), rgb=np.zeros((0, 3), dtype=np.uint8), error=np.zeros(0),
                  track_offsets=np.zeros(1, dtype=np.int64), track_image=np.zeros(0, dtype=np.int32),
                  track_keypoint=np.zeros(0, dtype=np.int32))
