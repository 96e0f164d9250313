"""triangulate: the three mappers recover a synthetic orbit; a broken sequence keeps its larger part; bad input."""

import dataclasses

import numpy as np
import pytest

from recon3d.errors import StageError
from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.scene import Scene, Source
from recon3d.stages import bundle_adjust, essential, triangulate
from recon3d.stages.base import StageContext
from recon3d.synthetic.correspondences import noisy_matches
from recon3d.synthetic.generate import make_scene
from tests.test_colmap_mapper import _check_tracks, _extent, synthetic  # noqa: F401 - the fixture


@pytest.mark.parametrize("mapper", ["reference", "pycolmap", "pycolmap_global"])
def test_every_mapper_recovers_the_orbit(synthetic, mapper):  # noqa: F811
    truth, scene, _ = synthetic
    ctx = StageContext.standalone()
    out = triangulate.run(scene, triangulate.TriangulateConfig(mapper=mapper), ctx)
    names = [im.name for im in truth.images]
    assert sorted(out.poses) == names and ctx.dropped == []
    errs = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    assert errs["rotation_error_max_deg"] < (0.1 if mapper == "reference" else 0.3)  # pycolmap refines the focal
    assert errs["ate_rmse"] < 0.005 * _extent(truth)
    assert 0.3 < ctx.counts["mean_reprojection_px"] < 0.7 and ctx.counts["points"] > 500
    assert ctx.counts["mean_track_length"] > 3
    _check_tracks(scene, out.points)
    assert scene.poses == {} and scene.points is None  # the input is not edited


@pytest.mark.parametrize("mapper", ["reference", "pycolmap_global"])
def test_a_broken_sequence_keeps_the_larger_part(synthetic, mapper):  # noqa: F811
    _, scene, _ = synthetic
    names = [im.name for im in scene.images]
    first, second = set(names[:8]), set(names[8:])
    cut = {p: m for p, m in scene.matches.items() if {*p} <= first or {*p} <= second}
    scene = scene.replace(matches=cut, two_view={p: scene.two_view[p] for p in cut})
    ctx = StageContext.standalone()
    out = triangulate.run(scene, triangulate.TriangulateConfig(mapper=mapper), ctx)
    assert sorted(out.poses) == names[:8] and ctx.counts["images_per_component"] == [8, 4]
    assert {d["item"] for d in ctx.dropped} == second
    assert all("smaller connected component (4 images)" in d["reason"] for d in ctx.dropped)
    assert not any("video_every" in d["reason"] for d in ctx.dropped)
    if mapper == "reference":  # a video's keyframes that fall apart: the reason says how to take more
        ctx = StageContext.standalone()
        triangulate.run(scene.replace(source=Source("clip.mp4", "video")), triangulate.TriangulateConfig(mapper=mapper),
                        ctx)
        assert all(d["reason"].endswith("take more: --set ingest.video_every=2") for d in ctx.dropped)


@pytest.mark.parametrize("mapper", ["pycolmap", "pycolmap_global"])
def test_two_photos_are_mapped_by_the_reference_mapper(synthetic, mapper):  # noqa: F811
    """COLMAP's mappers keep no model of two images (GLOMAP's tracks need three views): a pair of photos is mapped
    by recon3d's own mapper, and the report says so."""
    _, scene, _ = synthetic
    pair = next(p for p in scene.two_view if scene.two_view[p].inliers.sum() > 100)
    two = scene.replace(images=tuple(im for im in scene.images if im.name in pair),
                        matches={pair: scene.matches[pair]}, two_view={pair: scene.two_view[pair]})
    ctx = StageContext.standalone()
    out = triangulate.run(two, triangulate.TriangulateConfig(mapper=mapper), ctx)
    assert sorted(out.poses) == sorted(pair) and ctx.counts["mapper"] == "reference"
    assert "two images" in ctx.counts["mapper_note"] and len(out.points) > 100


def test_the_reference_mapper_starts_from_f_only_pairs(synthetic):  # noqa: F811
    """Photos without a focal prior are verified with F and H only (COLMAP's dispatch): the reference mapper
    estimates its initial pair's E itself from the pair's tracks and the cameras' intrinsics."""
    truth, scene, _ = synthetic
    f_only = {p: dataclasses.replace(g, kind="uncalibrated", E=None, cam2_from_cam1=None)
              for p, g in scene.two_view.items()}
    ctx = StageContext.standalone()
    out = triangulate.run(scene.replace(two_view=f_only), triangulate.TriangulateConfig(mapper="reference"), ctx)
    names = [im.name for im in truth.images]
    assert sorted(out.poses) == names and ctx.dropped == []
    errs = pose_errors(np.stack([out.poses[n] for n in names]), np.stack([truth.poses[n] for n in names])).summary()
    assert errs["rotation_error_max_deg"] < 0.1 and errs["ate_rmse"] < 0.005 * _extent(truth)


def test_image_components_follow_pairs_with_inliers(synthetic):  # noqa: F811
    """Components of the verified-pair graph, largest first (ties: the one with the lowest image first); a
    pair without inliers joins nothing and an image in no pair is in no component."""
    _, scene, _ = synthetic
    names = [im.name for im in scene.images]
    geometry = next(iter(scene.two_view.values()))
    none = dataclasses.replace(geometry, inliers=np.zeros_like(geometry.inliers))
    links = {(names[5], names[9]): geometry, (names[2], names[7]): geometry, (names[7], names[11]): geometry,
             (names[0], names[3]): geometry, (names[3], names[4]): none}
    comps = triangulate.image_components(scene.replace(two_view=links))
    assert [c.tolist() for c in comps] == [[2, 7, 11], [0, 3], [5, 9]]


def test_bad_input_is_named(synthetic):  # noqa: F811
    _, scene, _ = synthetic
    with pytest.raises(StageError, match="no verified pairs"):
        triangulate.run(Scene(), triangulate.TriangulateConfig())
    with pytest.raises(StageError, match="no initial pair") as error:
        triangulate.run(scene, triangulate.TriangulateConfig(mapper="reference", min_init_points=5000))
    assert error.value.fix.startswith("map with --set triangulate.mapper=pycolmap_global; or --set ")
    pair = dict([next(iter(scene.two_view.items()))])  # two photos: the reference mapper whichever is chosen
    with pytest.raises(StageError, match="no initial pair") as error:
        triangulate.run(scene.replace(two_view=pair), triangulate.TriangulateConfig(min_init_points=5000))
    assert error.value.fix.startswith("only two photos joined: add photos that overlap them")
    video = scene.replace(two_view=pair, source=dataclasses.replace(scene.source, format="video"))
    with pytest.raises(StageError, match="no initial pair") as error:
        triangulate.run(video, triangulate.TriangulateConfig(min_init_points=5000))
    assert "--set ingest.video_every=N (lower; 1 takes every frame)" in error.value.fix
    panoramic = {p: dataclasses.replace(g, kind="panoramic") for p, g in scene.two_view.items()}
    with pytest.raises(StageError, match="pairs are panoramic only") as error:
        triangulate.run(scene.replace(two_view=panoramic), triangulate.TriangulateConfig(mapper="reference"))
    assert "triangulate.mapper=pycolmap_global" in error.value.fix
    no_pose = {p: dataclasses.replace(g, inliers=np.zeros_like(g.inliers)) for p, g in scene.two_view.items()}
    with pytest.raises(StageError, match="no two images share a verified pair"):
        triangulate.run(scene.replace(two_view=no_pose), triangulate.TriangulateConfig())


@pytest.mark.parametrize("mapper", ["reference", "pycolmap"])
def test_essential_triangulate_bundle_adjust_through_20_percent_wrong_matches(tmp_path, mapper):
    truth, obs = make_scene(tmp_path, rig="forward_facing", n_images=8, n_points=800, width=480, height=360,
                            noise_px=0.5, seed=3)
    scene, is_true = noisy_matches(truth, obs, outlier_rate=0.2, seed=3)
    assert 1 - np.mean(np.concatenate(list(is_true.values()))) == pytest.approx(0.2, abs=0.005)
    scene = essential.run(scene, essential.EssentialConfig())
    scene = triangulate.run(scene, triangulate.TriangulateConfig(mapper=mapper))
    ctx = StageContext.standalone()
    out = bundle_adjust.run(scene, bundle_adjust.BundleAdjustConfig(), ctx)
    names = [im.name for im in truth.images]
    assert sorted(out.poses) == names
    gt = np.stack([truth.poses[n] for n in names])
    errs = pose_errors(np.stack([out.poses[n] for n in names]), gt).summary()
    assert errs["ate_rmse"] < 0.005 * camera_extent(gt)
    assert ctx.counts["mean_reprojection_px"] < 0.7
