"""colmap_mapper: COLMAP's incremental and global mappers recover a synthetic orbit from recon3d's matches."""

import dataclasses

import numpy as np
import pycolmap
import pytest

from recon3d.errors import StageError
from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.geometry.rotation import invert_rigid
from recon3d.scene import Features, TwoViewGeometry
from recon3d.sfm.colmap_mapper import MapperSettings, _global_options, map_scene, write_database
from recon3d.synthetic.generate import make_scene

FIXED_FOCAL = MapperSettings(refine_focal=False)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 12-view 640x480 orbit: 0.5 px noisy keypoints, matches and calibrated two-view geometry from the truth.

    Returns (truth scene, scene with features / matches / two_view and no poses or points, per-image
    truth point id of every keypoint).
    """
    truth, obs = make_scene(tmp_path_factory.mktemp("orbit"), n_images=12, n_points=1000, width=640, height=480,
                            noise_px=0.5, seed=1)
    names = [im.name for im in truth.images]
    matches, two_view = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            _, ka, kb = np.intersect1d(obs[a].point_ids, obs[b].point_ids, return_indices=True)
            if len(ka) < 15:
                continue
            cam2_from_cam1 = truth.poses[b] @ invert_rigid(truth.poses[a])
            cam2_from_cam1[:3, 3] /= np.linalg.norm(cam2_from_cam1[:3, 3])
            matches[(a, b)] = np.column_stack([ka, kb]).astype(np.int32)
            two_view[(a, b)] = TwoViewGeometry("calibrated", np.ones(len(ka), bool), cam2_from_cam1=cam2_from_cam1)
    scene = truth.replace(features={n: Features(obs[n].xy.astype(np.float32)) for n in names}, matches=matches,
                          two_view=two_view, poses={}, points=None)
    return truth, scene, {n: obs[n].point_ids for n in names}


def _extent(truth) -> float:
    return camera_extent(np.stack(list(truth.poses.values())))


def _check_tracks(scene, points):
    assert np.isfinite(points.xyz).all() and points.xyz.dtype == np.float64
    assert np.all(np.diff(points.track_offsets) >= 2) and points.track_offsets[-1] == len(points.track_image)
    assert np.all(points.track_image < len(scene.images))
    n_keypoints = np.array([len(scene.features[im.name].keypoints) for im in scene.images])
    assert np.all(points.track_keypoint < n_keypoints[points.track_image])


@pytest.mark.parametrize("kind", ["incremental", "global"])
def test_recovers_the_orbit(synthetic, kind, tmp_path):
    truth, scene, point_ids = synthetic
    out = map_scene(scene, tmp_path, kind, FIXED_FOCAL)
    names = [im.name for im in truth.images]
    assert out.registered == names and out.unregistered == [] and out.models == [12]
    assert set(out.cameras) == {1} and set(out.image_camera.values()) == {1}
    errs = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    assert errs["rotation_error_max_deg"] < 0.1  # 0.02 deg seen
    assert errs["ate_rmse"] < 0.002 * _extent(truth)
    assert 0.3 < np.mean(out.points.error) < 1.0  # 0.5 px per axis noise: ~0.5 px after BA
    assert len(out.points) > 500 and out.points.rgb.any()  # colours read from the rendered images
    _check_tracks(scene, out.points)
    # every track is one true point, and the aligned model lies on the truth
    pts = out.points
    truth_id = [point_ids[scene.images[j].name][k] for j, k in zip(pts.track_image, pts.track_keypoint, strict=True)]
    first = np.repeat(np.asarray(truth_id)[out.points.track_offsets[:-1]], np.diff(out.points.track_offsets))
    assert np.array_equal(truth_id, first)
    sim = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).alignment
    xyz_err = np.linalg.norm(sim.apply(out.points.xyz) - truth.points.xyz[first[out.points.track_offsets[:-1]]], axis=1)
    assert np.median(xyz_err) < 0.005 * _extent(truth)


def test_global_from_the_longest_tracks_keeps_every_point(synthetic, tmp_path):
    """GLOMAP positioned from a few tracks per image (`tracks_per_view`) recovers the orbit within the same
    bands, and every track is triangulated afterwards."""
    truth, scene, _ = synthetic
    full = map_scene(scene, tmp_path / "all", "global", FIXED_FOCAL)
    few = map_scene(scene, tmp_path / "few", "global", MapperSettings(refine_focal=False, tracks_per_view=20))
    names = [im.name for im in truth.images]
    assert few.registered == names
    errs = pose_errors(np.stack([few.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    assert errs["rotation_error_max_deg"] < 0.1 and errs["ate_rmse"] < 0.002 * _extent(truth)
    assert len(few.points) >= 0.95 * len(full.points)
    _check_tracks(scene, few.points)


def test_one_round_of_glomap_bundle_adjustment_keeps_the_bands(synthetic, tmp_path):
    """GLOMAP with one bundle-adjustment round before it retriangulates (`ba_rounds`, the triangulate stage's
    option) recovers the orbit within the bands of its own three rounds, and the option reaches GLOMAP."""
    truth, scene, _ = synthetic
    assert _global_options(MapperSettings(ba_rounds=1)).mapper.ba_num_iterations == 1
    out = map_scene(scene, tmp_path, "global", dataclasses.replace(FIXED_FOCAL, ba_rounds=1))
    names = [im.name for im in truth.images]
    assert out.registered == names
    errs = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    assert errs["rotation_error_max_deg"] < 0.1 and errs["ate_rmse"] < 0.002 * _extent(truth)
    assert 0.3 < np.mean(out.points.error) < 1.0 and len(out.points) > 500


def test_default_settings_refine_the_focal(synthetic, tmp_path):
    truth, scene, _ = synthetic
    out = map_scene(scene, tmp_path)
    names = [im.name for im in truth.images]
    assert out.registered == names
    errs = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    # fy trades against the orbit's vertical scale, which tilts the cameras a little: a looser band
    assert errs["rotation_error_max_deg"] < 0.5
    assert out.cameras[1].params[0] == pytest.approx(truth.cameras[1].params[0], rel=0.01)
    assert out.seconds > 0


def test_one_thread_repeats_exactly(synthetic, tmp_path):
    _, scene, _ = synthetic
    runs = [map_scene(scene, tmp_path / str(i), options=MapperSettings(num_threads=1, seed=3)) for i in range(2)]
    assert all(np.array_equal(runs[0].poses[n], runs[1].poses[n]) for n in runs[0].poses)
    assert np.array_equal(runs[0].points.xyz, runs[1].points.xyz)


def test_pairs_in_either_order(synthetic, tmp_path):
    """A pair keyed (later, earlier) reaches COLMAP swapped: same matches and geometry as the other order."""
    _, scene, _ = synthetic
    matches = {(b, a): m[:, ::-1].copy() for (a, b), m in scene.matches.items()}
    two_view = {(b, a): dataclasses.replace(g, cam2_from_cam1=invert_rigid(g.cam2_from_cam1))
                for (a, b), g in scene.two_view.items()}
    flipped = scene.replace(matches=matches, two_view=two_view)
    write_database(flipped, tmp_path / "flipped.db")
    with pycolmap.Database.open(tmp_path / "flipped.db") as db:
        (a, b), m = next(iter(scene.matches.items()))
        ia, ib = scene.images.index(scene.image(a)) + 1, scene.images.index(scene.image(b)) + 1
        assert np.array_equal(db.read_matches(ia, ib), m)
        geometry = db.read_two_view_geometry(ia, ib)
        assert np.array_equal(geometry.inlier_matches, m)
        assert np.allclose(geometry.cam2_from_cam1.matrix(), scene.two_view[(a, b)].cam2_from_cam1[:3])
    assert len(map_scene(flipped, tmp_path / "map", options=FIXED_FOCAL).registered) == 12


def test_separate_intrinsics_and_missing_image_files(synthetic, tmp_path):
    _, scene, _ = synthetic
    gone = scene.replace(images=tuple(dataclasses.replace(im, path=f"/nonexistent/{im.name}") for im in scene.images))
    out = map_scene(gone, tmp_path, options=MapperSettings(share_intrinsics=False))
    assert len(out.registered) == 12 and len(out.cameras) == 12
    assert sorted(out.image_camera.values()) == sorted(out.cameras) and min(out.cameras) > 1
    assert not out.points.rgb.any()  # no files, no colours, no crash


def test_bad_inputs_are_named(synthetic, tmp_path):
    _, scene, _ = synthetic
    one = scene.replace(images=scene.images[:1])
    with pytest.raises(StageError, match="1 image"):
        map_scene(one, tmp_path)
    with pytest.raises(StageError, match="0 verified pair"):
        map_scene(scene.replace(two_view={}), tmp_path)
    with pytest.raises(StageError, match="unknown mapper kind"):
        map_scene(scene, tmp_path, "hierarchical")
    (a, b), m = next(iter(scene.matches.items()))
    with pytest.raises(StageError, match=f"matches of \\({a}, {b}\\) index keypoints outside"):
        map_scene(scene.replace(matches={**scene.matches, (a, b): m + 10_000}), tmp_path)


def test_no_model_is_an_error(synthetic, tmp_path):
    _, scene, _ = synthetic
    names = {im.name for im in scene.images[:3]}
    few = scene.replace(images=scene.images[:3],
                        matches={k: m[:10] for k, m in scene.matches.items() if set(k) <= names},
                        two_view={k: dataclasses.replace(g, inliers=g.inliers[:10])
                                  for k, g in scene.two_view.items() if set(k) <= names})
    with pytest.raises(StageError, match="found no model in 3 images, 3 verified pairs, 30 inlier matches"):
        map_scene(few, tmp_path)
