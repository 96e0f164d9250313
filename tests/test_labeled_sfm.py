"""Labels on the SfM side: ingest reads them with the images, `mask_classes` keeps a moving object's pixels
out of the features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recon3d.errors import DataError, StageError
from recon3d.scene import Scene
from recon3d.stages import features, gaussians, ingest
from recon3d.stages.base import StageContext
from recon3d.synthetic.dataset import write_labeled_dataset
from recon3d.synthetic.labeled import make_labeled_scene


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("labeled_data")
    return root, write_labeled_dataset(root, n_images=4, width=160, height=120, n_points=300, moving=True)


def test_ingest_reads_the_labels_beside_the_images(dataset):
    root, truth = dataset
    ctx = StageContext.standalone("ingest")
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(root)), ctx)
    assert scene.class_names == truth.class_names and scene.labels.keys() == truth.labels.keys()
    for name, want in truth.labels.items():
        got = scene.labels[name]
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.masks, want.masks)
    assert ctx.counts["labeled_images"] == 4 and ctx.counts["instances"] == sum(map(len, truth.labels.values()))
    none = ingest.run(Scene(), ingest.IngestConfig(path=str(root), labels=""))
    assert none.labels == {} and none.class_names == ()


def test_ingest_label_errors_name_the_input(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(DataError, match="ingest.labels nope.json: no such file"):
        ingest.run(Scene(), ingest.IngestConfig(path=str(root), labels="nope.json"))
    coco = json.loads((root / "labels.json").read_text())
    coco["images"].append({"id": 99, "file_name": "images/elsewhere.png", "width": 160, "height": 120})
    coco["annotations"].append({"id": 999, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
                                "iscrowd": 0})
    (tmp_path / "more.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="elsewhere.png"):
        ingest.run(Scene(), ingest.IngestConfig(path=str(root), labels=str(tmp_path / "more.json")))
    ctx = StageContext.standalone("ingest")
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(root), labels=str(tmp_path / "more.json"),
                                                    unknown_label_images="skip"), ctx)
    assert len(scene.labels) == 4 and any("elsewhere.png" in d["reason"] for d in ctx.dropped)


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    truth, _ = make_labeled_scene(tmp_path_factory.mktemp("moving"), n_images=4, width=320, height=240,
                                  n_points=200, moving=True)
    return truth.replace(features={}, points=None, poses={})


def _car_hits(scene, feats, dilate_px):
    car = scene.class_names.index("car")
    hits = 0
    for im in scene.images:
        labels = scene.labels[im.name]
        kp = feats[im.name].keypoints
        for i in np.flatnonzero(labels.classes == car):
            x0, y0, x1, y1 = labels.boxes[i]
            inside = (kp[:, 0] > x0 + dilate_px) & (kp[:, 0] < x1 - dilate_px) \
                & (kp[:, 1] > y0 + dilate_px) & (kp[:, 1] < y1 - dilate_px)
            rows, cols = kp[inside, 1].astype(int), kp[inside, 0].astype(int)
            hits += int(labels.masks[i][rows, cols].sum())
    return hits


def test_mask_classes_drop_the_moving_objects_keypoints(moving):
    plain = features.run(moving, features.FeaturesConfig())
    assert _car_hits(moving, plain.features, 0) > 50  # the car is textured: plenty of keypoints on it
    ctx = StageContext.standalone("features")
    masked = features.run(moving, features.FeaturesConfig(mask_classes=("car",)), ctx)
    assert _car_hits(moving, masked.features, 0) == 0
    assert ctx.counts["images_label_masked"] == 2  # the car shows in views 1 and 3 only
    for name in ("000.png", "002.png"):  # views without the car keep every keypoint
        np.testing.assert_array_equal(masked.features[name].keypoints, plain.features[name].keypoints)


def test_mask_classes_must_name_the_scenes_classes(moving):
    with pytest.raises(StageError, match="mask_classes person not among the scene's classes"):
        features.run(moving, features.FeaturesConfig(mask_classes=("person",)))
    with pytest.raises(StageError, match="none: the scene has no labels"):
        features.run(moving.replace(labels={}, class_names=()), features.FeaturesConfig(mask_classes=("car",)))


def test_gaussians_leave_the_moving_object_out(dataset):
    root, _ = dataset
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(root)))
    ctx = StageContext.standalone("gaussians")
    out = gaussians.run(scene, gaussians.GaussiansConfig(steps=3, mask_classes=("car",), eval_every_s=0), ctx)
    assert ctx.counts["views_masked"] == 2 and "gaussians" in out.radiance  # the car is in views 1 and 3
    # photos larger than the training size (max_side): the masks shrink with them
    out = gaussians.run(scene, gaussians.GaussiansConfig(steps=3, mask_classes=("car",), eval_every_s=0, max_side=80))
    assert "gaussians" in out.radiance
    with pytest.raises(StageError, match="gaussians: mask_classes person not among"):
        gaussians.run(scene, gaussians.GaussiansConfig(steps=3, mask_classes=("person",)))
