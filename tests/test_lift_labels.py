"""Labeled synthetic scenes and label lifting onto points and Gaussians, against the exact truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recon3d.errors import StageError
from recon3d.geometry import camera_models
from recon3d.io import ply
from recon3d.io.files import write_json
from recon3d.io.splat_ply import read_splats
from recon3d.labels import lift
from recon3d.labels.masks import undistort_labels
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.project import project
from recon3d.scene import Camera, Labels, RadianceModel
from recon3d.stages import lift_labels
from recon3d.stages.base import StageContext
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.labeled import (
    CLASS_NAMES,
    MOVING_OBJECT,
    instance_map,
    make_labeled_scene,
    surface_objects,
)
from recon3d.synthetic.surfaces import sample_points


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    return make_labeled_scene(tmp_path_factory.mktemp("labeled"), n_images=12, width=160, height=120,
                              n_points=2500)


@pytest.fixture(scope="module")
def splats(labeled):
    """Opaque little Gaussians on the world's surfaces: a model whose true class per Gaussian is known."""
    _, world = labeled
    xyz, rgb = sample_points(world.quads, 40000, seed=3)
    model = GaussianModel.from_points(xyz, rgb / 255, sh_degree=0, init_opacity=0.95, init_scale=0.7)
    return model, surface_objects(world.quads, world.quad_object, xyz)[0] - 1


def test_labels_are_the_objects_seen(labeled):
    truth, world = labeled
    assert truth.class_names == CLASS_NAMES[:3]
    im = truth.images[0]
    labels = truth.labels[im.name]
    inst = instance_map(world.quads, world.quad_object, truth.cameras[1], truth.poses[im.name])
    assert sorted(labels.classes + 1) == sorted(k for k in np.unique(inst) if k)
    for box, mask in zip(labels.boxes, labels.masks, strict=True):
        rows, cols = np.nonzero(mask)
        np.testing.assert_array_equal(box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    # a truth point of box k projects into box k's mask wherever the image sees it unoccluded
    objects, dist = surface_objects(world.quads, world.quad_object, truth.points.xyz)
    assert dist.max() < 1e-9
    kp = truth.features[im.name].keypoints
    point_of = np.repeat(np.arange(len(truth.points)), np.diff(truth.points.track_offsets))
    sel = truth.points.track_image == 0
    xy = kp[truth.points.track_keypoint[sel]]
    seen = inst[np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)]
    assert sel.sum() > 100 and (seen == objects[point_of[sel]]).mean() > 0.97  # pixel-edge rounding only


def test_moving_object_in_every_other_view(tmp_path):
    truth, world = make_labeled_scene(tmp_path, n_images=4, width=160, height=120, n_points=500, moving=True)
    assert truth.class_names == CLASS_NAMES and world.car_views == {1, 3}
    car = CLASS_NAMES.index("car")
    has_car = [car in truth.labels[im.name].classes for im in truth.images]
    assert has_car == [False, True, False, True]
    assert MOVING_OBJECT == car + 1
    # no truth point lies on the car: points are sampled on the static world only
    assert set(surface_objects(world.quads, world.quad_object, truth.points.xyz)[0]) <= {0, 1, 2, 3}


def test_points_get_their_objects_class(labeled):
    truth, world = labeled
    votes = lift.vote_points(truth.points, truth.images, truth.features, truth.labels, 3)
    classes = lift.decide(votes, 2, 0.5)
    objects, _ = surface_objects(world.quads, world.quad_object, truth.points.xyz)
    assert (classes == objects - 1).mean() > 0.99
    assert set(np.unique(classes)) <= {-2, -1, 0, 1, 2}


def test_decide_needs_votes_and_a_majority():
    votes = np.array([[0, 3, 0], [1, 1, 1], [0.5, 0, 0], [4, 1, 0]])
    np.testing.assert_array_equal(lift.decide(votes, 1.0, 0.5), [0, lift.UNDECIDED, lift.UNDECIDED,
                                                                 lift.BACKGROUND])


def test_predicted_labels_vote_with_their_scores():
    box = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    labels = Labels(boxes=box, classes=np.array([0, 1], np.int32), scores=np.array([0.9, 0.4], np.float32))
    channels, weights = lift.class_map(labels, 4, 4)
    assert channels[1, 1] == 1 and weights[1, 1] == pytest.approx(0.9)  # the surer one wins the overlap
    assert channels[2, 2] == 2 and weights[2, 2] == pytest.approx(0.4)
    assert channels[3, 0] == 0 and weights[3, 0] == 1.0


def test_gaussian_votes_are_blending_weights(labeled, splats):
    """Summed over Gaussians, the votes of a view are sum_p alpha(p) [channel(p) = c] weight(p)."""
    truth, _ = labeled
    model, _ = splats
    im, cam = truth.images[2], truth.cameras[1]
    labels = truth.labels[im.name]
    votes = lift.vote_gaussians(model, [(truth.poses[im.name], cam.K, labels, im.width, im.height)], 3)
    from recon3d.radiance.gaussians.composite import composite_cpu

    with torch.no_grad():
        p = project(model.means, model.quats, model.scales, model.opacities,
                    torch.tensor(truth.poses[im.name], dtype=torch.float32), torch.tensor(cam.K, dtype=torch.float32),
                    im.width, im.height)
        _, alpha = composite_cpu(p.means2d, p.conics, p.opacities, torch.ones(len(p.ids), 1), p.depths, p.extents,
                                 torch.zeros(1), im.width, im.height)
    channels, weights = lift.class_map(labels, im.height, im.width)
    expected = [(alpha.numpy() * weights * (channels == c)).sum() for c in range(4)]
    np.testing.assert_allclose(votes.sum(0), expected, rtol=1e-4)
    hidden = np.setdiff1d(np.arange(len(model)), p.ids.numpy())
    assert np.all(votes[hidden] == 0)


def test_gaussians_get_their_objects_class_and_render_it(labeled, splats):
    truth, world = labeled
    model, true_classes = splats
    cam = truth.cameras[1]
    views = [(truth.poses[im.name], cam.K, truth.labels[im.name], im.width, im.height) for im in truth.images[1:]]
    classes = lift.decide(lift.vote_gaussians(model, views, 3), 1e-3, 0.5)
    decided = classes != lift.UNDECIDED
    assert decided.mean() > 0.9
    assert (classes[decided] == true_classes[decided]).mean() > 0.93
    im = truth.images[0]  # held out of the votes
    rendered = lift.render_class_map(model, classes, truth.poses[im.name], cam.K, im.width, im.height, 3)
    inst = instance_map(world.quads, world.quad_object, cam, truth.poses[im.name])
    assert (rendered == inst).mean() > 0.95


def _with_model(truth, model, tmp_path):
    path = model.save(tmp_path / "model.safetensors")
    names = [im.name for im in truth.images]
    write_json(tmp_path / "model.json", {"kind": "gaussians", "train": names[1:], "test": names[:1],
                                         "background": "black", "sh_degree": 0, "rasterizer": "cpu"})
    return truth.replace(radiance={"gaussians": RadianceModel("gaussians", str(path))})


def test_stage_labels_points_and_gaussians(labeled, splats, tmp_path):
    truth, _ = labeled
    scene = _with_model(truth, splats[0], tmp_path)
    ctx = StageContext.standalone("lift_labels")
    out = lift_labels.run(scene, lift_labels.LiftLabelsConfig(), ctx)
    assert out.points.classes is not None and len(out.points.classes) == len(truth.points)
    entry = out.metrics["lift_labels"]
    assert entry["kind"] == "label_lifting" and entry["points"]["labeled"] > 0
    assert entry["gaussians"]["heldout"]["mIoU"] > 0.8
    folder = ctx.published / "labels"
    xyz, _, rest = ply.read_points(folder / "points_labeled.ply")
    assert rest["class"].dtype == np.int32 and len(xyz) == len(truth.points)
    np.testing.assert_array_equal(rest["class"], out.points.classes)
    assert (folder / "points_crate.ply").is_file() and (folder / "points_background.ply").is_file()
    assert (folder / "masks" / "000.png").is_file()
    raw, _ = read_splats(folder / "gaussians_labeled.ply")
    assert len(raw["means"]) == len(splats[0])
    _, _, props = ply.read_points(folder / "gaussians_labeled.ply")
    gaussian_classes = np.load(entry["gaussians"]["classes_file"])
    assert props["class"].dtype == np.int32
    np.testing.assert_array_equal(props["class"], gaussian_classes)
    assert (gaussian_classes == splats[1]).mean() > 0.9


def test_labels_in_the_undistorted_twin_are_where_its_pixels_see():
    """A box drawn on a photo with barrel distortion, carried into the PINHOLE twin the Gaussians train on: a twin
    pixel is in the instance when the photo's pixel it came from (its centre, distorted) lies in the box."""
    cam = make_camera("SIMPLE_RADIAL", 160, 120)
    assert cam.params[-1] != 0
    labels = Labels(np.array([[100.0, 70.0, 156.0, 118.0], [60.0, 40.0, 90.0, 70.0]]), np.array([1, 0], np.int32),
                    np.array([0.9, 0.6], np.float32))
    twin = undistort_labels(labels, cam, 120, 160)
    rows, cols = np.mgrid[0:120, 0:160]
    ray = np.linalg.solve(cam.K, np.stack([cols + 0.5, rows + 0.5, np.ones_like(rows)]).reshape(3, -1)).T
    seen = camera_models.project(cam.model, cam.params, ray).reshape(120, 160, 2)
    for i, (x0, y0, x1, y1) in enumerate(labels.boxes):
        inside = (seen[..., 0] >= x0) & (seen[..., 0] < x1) & (seen[..., 1] >= y0) & (seen[..., 1] < y1)
        assert (twin.masks[i] != inside).sum() <= 0.03 * inside.sum()  # pixels on the outline
        r, c = np.nonzero(twin.masks[i])
        np.testing.assert_array_equal(twin.boxes[i], [c.min(), r.min(), c.max() + 1, r.max() + 1])
    assert not np.array_equal(twin.boxes[0], labels.boxes[0])  # the corner box moved
    np.testing.assert_array_equal(twin.classes, labels.classes)
    np.testing.assert_array_equal(twin.scores, labels.scores)
    f, cx, cy, _ = cam.params
    pinhole = Camera("PINHOLE", 160, 120, np.array([f, f, cx, cy]))
    assert undistort_labels(labels, pinhole, 120, 160) is labels


def test_stage_lifts_onto_gaussians_trained_on_undistorted_twins(labeled, splats, tmp_path):
    """Photos with lens distortion (SfM gives a photo folder SIMPLE_RADIAL cameras): their labels are carried into
    the twins the Gaussians trained on (here no distortion at all, so the figures match the pinhole run's)."""
    truth, _ = labeled
    (fx, _), (cx, cy), _ = camera_models.split_params(truth.cameras[1].model, truth.cameras[1].params)
    radial = Camera("SIMPLE_RADIAL", 160, 120, np.array([fx, cx, cy, 0.0]))
    scene = _with_model(truth.replace(cameras={1: radial}), splats[0], tmp_path)
    entry = lift_labels.run(scene, lift_labels.LiftLabelsConfig()).metrics["lift_labels"]
    assert entry["gaussians"]["heldout"]["mIoU"] > 0.8


def test_stage_bad_inputs(labeled, tmp_path):
    truth, _ = labeled
    with pytest.raises(StageError, match="no labels"):
        lift_labels.run(truth.replace(labels={}), lift_labels.LiftLabelsConfig())
    with pytest.raises(StageError, match="no Gaussian model from node 'nope'"):
        lift_labels.run(truth, lift_labels.LiftLabelsConfig(model="nope"))
    # points only: no model, no error; images without labels simply do not vote
    half = {k: v for i, (k, v) in enumerate(truth.labels.items()) if i % 2}
    out = lift_labels.run(dataclasses.replace(truth, labels=half), lift_labels.LiftLabelsConfig())
    assert "gaussians" not in out.metrics["lift_labels"]
    assert out.metrics["lift_labels"]["points"]["labeled"] > 0


def test_moving_classes_do_not_vote(tmp_path):
    """Labels of a class in mask_classes weigh nothing: a static model seen through views where the car moved
    in front of it gets car votes, unless the car is silent."""
    labels = Labels(np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([1], np.int32))
    channels, weights = lift.class_map(labels, 3, 3, silent=[1])
    assert channels[0, 0] == 2 and weights[0, 0] == 0 and weights[2, 2] == 1
    truth, world = make_labeled_scene(tmp_path, n_images=4, width=160, height=120, n_points=400, moving=True)
    car = truth.class_names.index("car")
    xyz, rgb = sample_points(world.quads, 20000, seed=3)  # the static world only, as a masked training gives
    model = GaussianModel.from_points(xyz, rgb / 255, sh_degree=0, init_opacity=0.95, init_scale=0.7)
    cam = truth.cameras[1]
    views = [(truth.poses[im.name], cam.K, truth.labels[im.name], im.width, im.height) for im in truth.images]
    loud = lift.decide(lift.vote_gaussians(model, views, 4), 1e-3, 0.5)
    quiet = lift.decide(lift.vote_gaussians(model, views, 4, silent=[car]), 1e-3, 0.5)
    assert (loud == car).sum() > 100 and not (quiet == car).any()
    with pytest.raises(StageError, match="mask_classes person not among"):
        lift_labels.run(truth, lift_labels.LiftLabelsConfig(mask_classes=("person",)))
