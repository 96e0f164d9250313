"""recon3d.io.labels: YOLO, COCO, labelme and VOC labels; round trips and bad input, on files built in tmp_path."""


import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from recon3d.errors import DataError
from recon3d.io import labels as lio
from recon3d.io.labels_common import ImageIndex, box_of_mask
from recon3d.scene import ImageInfo, Labels

W, H = 40, 30


def make_images(root, names=("a.png", "sub/b.png"), size=(W, H), splits=("train", "val")):
    infos = []
    for i, name in enumerate(names):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 40, 100, 50)).save(path)
        infos.append(ImageInfo(name, str(path), 1, size[0], size[1], split=splits[i % len(splits)]))
    return infos


def box_labels(boxes, classes, **kw):
    return Labels(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int32), **kw)


def polygon_labels(polygons_per_instance, classes, boxes=None):
    """Labels from {instance: [polygon (K, 2), ...]} lists; boxes default to the vertices' extent."""
    flat = [(i, np.asarray(p, dtype=np.float64)) for i, polys in enumerate(polygons_per_instance) for p in polys]
    if boxes is None:
        boxes = [np.r_[np.concatenate(polys).min(0), np.concatenate(polys).max(0)] for polys in
                 [[np.asarray(p, float) for p in polys] for polys in polygons_per_instance]]
    return box_labels(boxes, classes, polygon_xy=np.concatenate([p for _, p in flat]),
                      polygon_offsets=np.r_[0, np.cumsum([len(p) for _, p in flat])].astype(np.int64),
                      polygon_instance=np.array([i for i, _ in flat], dtype=np.int32))


def assert_same_polygons(a, b, atol=0.0):
    assert len(a) == len(b)
    for i in range(len(a)):
        pa, pb = a.polygons(i), b.polygons(i)
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb, strict=True):
            np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# -- YOLO ---------------------------------------------------------------------------------------------------

def test_yolo_dataset_round_trip_boxes_segments_and_scores(tmp_path):
    images = make_images(tmp_path)
    names = ("cat", "dog", "car")
    labels = {
        "a.png": box_labels([[1.25, 2.5, 10.75, 20.0], [0, 0, W, H]], [2, 0]),
        "sub/b.png": polygon_labels([[[[1.5, 1.5], [30.25, 2.0], [20.0, 25.125]]]], [1]),
    }
    data_yaml = lio.write_yolo_dataset(tmp_path / "ds", names, labels, images)
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["path"] == str((tmp_path / "ds").resolve()) and meta["names"] == {0: "cat", 1: "dog", 2: "car"}
    assert meta["train"] == "images/train" and meta["val"] == "images/val"
    assert (tmp_path / "ds/images/train/a.png").is_file() and (tmp_path / "ds/labels/val/sub/b.txt").is_file()
    assert (tmp_path / "ds/labels/val/sub/b.txt").read_text().startswith("1 0.0375 0.05 ")

    back = lio.read_yolo(data_yaml, images)
    assert back.class_names == names and back.fixes == []
    assert back.splits == {"a.png": "train", "sub/b.png": "val"}  # the yaml's split folders each label is in
    np.testing.assert_allclose(back.labels["a.png"].boxes, labels["a.png"].boxes, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(back.labels["a.png"].classes, [2, 0])
    assert_same_polygons(back.labels["sub/b.png"], labels["sub/b.png"], atol=1e-6)
    np.testing.assert_allclose(back.labels["sub/b.png"].boxes, [[1.5, 1.5, 30.25, 25.125]], atol=1e-6)
    assert back.labels["a.png"].masks is None

    scored = {"a.png": box_labels([[1, 2, 3, 4]], [1], scores=np.array([0.75], np.float32))}
    lio.write_yolo(tmp_path / "pred", scored, images)
    read = lio.read_yolo(tmp_path / "pred", images, class_names=names)
    np.testing.assert_allclose(read.labels["a.png"].scores, [0.75])


def test_yolo_dataset_where_ultralytics_looks_for_labels(tmp_path):
    """A scene name with an `images/` folder (nerfstudio's) must not hide the labels from ultralytics, which
    maps .../images/... to .../labels/... at the last `images` of the path."""
    images = make_images(tmp_path, names=("images/c.png",), splits=("train",))
    labels = {"images/c.png": box_labels([[1, 2, 10, 20]], [0])}
    data_yaml = lio.write_yolo_dataset(tmp_path / "ds", ("cat",), labels, images)
    image = next((tmp_path / "ds" / "images" / "train").rglob("*.png"))
    label = Path("/labels/".join(str(image).rsplit("/images/", 1))).with_suffix(".txt")  # ultralytics' rule
    assert label.is_file() and label.read_text().startswith("0 ")
    back = lio.read_yolo(data_yaml, images)
    np.testing.assert_allclose(back.labels["images/c.png"].boxes, labels["images/c.png"].boxes, atol=1e-6)


def test_yolo_names_list_yaml_and_plain_folder(tmp_path):
    images = make_images(tmp_path, names=("x.jpg",))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/x.txt").write_text("1 0.5 0.5 0.5 0.5\n\n")
    (tmp_path / "data.yaml").write_text("names: [a, b]\n")
    got = lio.read_yolo(tmp_path / "data.yaml", images)
    assert got.class_names == ("a", "b")
    np.testing.assert_allclose(got.labels["x.jpg"].boxes, [[10, 7.5, 30, 22.5]])
    # a class table passed in: the yaml's names map onto it by name
    mapped = lio.read_yolo(tmp_path / "data.yaml", images, class_names=["z", "b", "a"])
    assert mapped.labels["x.jpg"].classes.tolist() == [1]
    with pytest.raises(DataError, match="no class names") as caught:
        lio.read_yolo(tmp_path / "labels", images)
    assert f"put a classes.txt in {tmp_path / 'labels'}" in str(caught.value)  # what a user of the CLI can do
    assert "--set ingest.labels=DATA.yaml" in str(caught.value)
    assert lio.read_yolo(tmp_path / "labels", images, class_names=["a", "b"]).labels["x.jpg"].classes.tolist() == [1]


def test_yolo_bad_lines_and_classes(tmp_path):
    images = make_images(tmp_path, names=("x.jpg",))
    (tmp_path / "labels").mkdir()
    for text, match in [("7 0.5 0.5 0.1 0.1", "class 7"), ("0 0.5 0.5", "2 numbers"), ("0 a b c d", "not a YOLO")]:
        (tmp_path / "labels/x.txt").write_text(text + "\n")
        with pytest.raises(DataError, match=match) as err:
            lio.read_yolo(tmp_path / "labels", images, class_names=["a", "b"])
        assert "x.txt, line 1" in str(err.value)


def test_yolo_two_yamls_with_different_names(tmp_path):
    images = make_images(tmp_path, names=("p.jpg", "q.jpg"))
    for ds, names in (("one", ["cat", "dog"]), ("two", ["cat", "cow"])):
        (tmp_path / ds / "labels").mkdir(parents=True)
        (tmp_path / ds / "labels" / ("p.txt" if ds == "one" else "q.txt")).write_text("1 0.5 0.5 0.2 0.2\n")
        (tmp_path / ds / "data.yaml").write_text(yaml.safe_dump({"names": names}))
    yamls = [tmp_path / "one/data.yaml", tmp_path / "two/data.yaml"]
    with pytest.raises(DataError) as err:
        lio.read_yolo(yamls, images)
    message = str(err.value)
    assert "one/data.yaml" in message and "two/data.yaml" in message and "dog" in message and "cow" in message
    got = lio.read_yolo(yamls, images, class_names=["cat", "dog", "cow"])
    assert got.labels["p.jpg"].classes.tolist() == [1] and got.labels["q.jpg"].classes.tolist() == [2]
    with pytest.raises(DataError, match="cow"):
        lio.read_yolo(yamls, images, class_names=["cat", "dog"])


def test_yolo_boxes_clipped_dropped_and_unknown_images(tmp_path):
    images = make_images(tmp_path, names=("x.jpg",))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/x.txt").write_text("0 0.95 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels/ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError) as err:
        lio.read_yolo(tmp_path / "labels", images, class_names=["a"])
    assert "ghost.txt" in str(err.value) and "'images/ghost'" in str(err.value) and "x.jpg" in str(err.value)
    got = lio.read_yolo(tmp_path / "labels", images, class_names=["a"], unknown_images="skip")
    np.testing.assert_allclose(got.labels["x.jpg"].boxes, [[34, 12, 40, 18], [16, 12, 24, 18]])
    assert len(got.fixes) == 3
    assert any("clipped" in f and "line 1" in f for f in got.fixes)
    assert any("dropped" in f and "line 2" in f for f in got.fixes)
    assert any("ghost" in f and "skipped" in f for f in got.fixes)


def test_image_matching_by_stem_and_ambiguity(tmp_path):
    images = make_images(tmp_path, names=("cam1/f.jpg", "cam2/f.jpg", "cam2/g.jpg"))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/g.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert list(lio.read_yolo(tmp_path / "labels", images, class_names=["a"]).labels) == ["cam2/g.jpg"]
    (tmp_path / "labels/f.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="matches 2 scene images"):
        lio.read_yolo(tmp_path / "labels", images, class_names=["a"])
    (tmp_path / "labels/f.txt").unlink()
    (tmp_path / "labels/cam1").mkdir()
    (tmp_path / "labels/cam1/f.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert sorted(lio.read_yolo(tmp_path / "labels", images, class_names=["a"]).labels) == ["cam1/f.jpg",
                                                                                             "cam2/g.jpg"]


def test_yolo_dataset_copies_when_links_fail(tmp_path, monkeypatch):
    images = make_images(tmp_path, names=("x.png",))
    monkeypatch.setattr("os.symlink", lambda *a: (_ for _ in ()).throw(OSError("no links")))
    lio.write_yolo_dataset(tmp_path / "ds", ["a"], {"x.png": box_labels([[1, 1, 5, 5]], [0])}, images)
    copied = tmp_path / "ds/images/train/x.png"
    assert copied.is_file() and not copied.is_symlink()
    meta = yaml.safe_load((tmp_path / "ds/data.yaml").read_text())
    assert meta["val"] == "images/train"
    with pytest.raises(DataError, match="class index 3"):
        lio.write_yolo_dataset(tmp_path / "ds2", ["a"], {"x.png": box_labels([[1, 1, 5, 5]], [3])}, images)


# -- COCO ---------------------------------------------------------------------------------------------------

def disk(cx, cy, r, size=(W, H)):
    yy, xx = np.mgrid[: size[1], : size[0]]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_coco_round_trip_boxes_polygons_rle_crowd_scores(tmp_path):
    images = make_images(tmp_path)
    masks = np.zeros((3, H, W), dtype=bool)
    masks[1] = disk(20, 15, 6)
    masks[2, 3:9, 30:38] = True
    tri = [[2.0, 3.0], [12.5, 3.25], [7.0, 11.75]]
    lab = polygon_labels([[tri], [], []], [0, 1, 2], boxes=[[2, 3, 12.5, 11.75], [14, 9, 26, 21], [30, 3, 38, 9]])
    lab = Labels(lab.boxes, lab.classes, masks=masks, polygon_xy=lab.polygon_xy, polygon_offsets=lab.polygon_offsets,
                 polygon_instance=lab.polygon_instance)
    labels = {"a.png": lab, "sub/b.png": box_labels([[0.5, 1.25, 7.75, 9.0]], [1])}
    crowd = {"a.png": np.array([False, False, True])}
    path = lio.write_coco(tmp_path / "c.json", ("x", "y", "z"), labels, images, category_ids=[0, 7, 3], crowd=crowd)
    written = json.loads(path.read_text())
    assert [c["id"] for c in written["categories"]] == [0, 7, 3]
    segs = [a.get("segmentation") for a in written["annotations"]]
    assert isinstance(segs[0], list) and isinstance(segs[1]["counts"], str) and isinstance(segs[2]["counts"], list)
    assert segs[3] is None and written["annotations"][2]["iscrowd"] == 1

    back = lio.read_coco(path, images)
    assert back.class_names == ("x", "y", "z") and back.category_ids == (0, 7, 3) and back.fixes == []
    a = back.labels["a.png"]
    np.testing.assert_allclose(a.boxes, lab.boxes, atol=1e-9, rtol=0)
    np.testing.assert_array_equal(a.classes, lab.classes)
    assert_same_polygons(a, lab)
    np.testing.assert_array_equal(a.masks[1:], masks[1:])  # RLE masks pixel-exact
    assert a.masks[0].sum() > 0 and not a.masks[0, 20:, :].any()  # the triangle, rasterised by pycocotools
    np.testing.assert_array_equal(back.crowd["a.png"], crowd["a.png"])
    assert back.labels["sub/b.png"].masks is None
    again = lio.coco_dict(back.class_names, back.labels, images, back.category_ids, back.crowd)
    assert again["annotations"] == written["annotations"] and again["categories"] == written["categories"]

    scored = {"a.png": box_labels([[1, 2, 3, 4]], [1], scores=np.array([0.5], np.float32))}
    lio.write_coco(tmp_path / "pred.json", ("x", "y", "z"), scored, images)
    np.testing.assert_allclose(lio.read_coco(tmp_path / "pred.json", images).labels["a.png"].scores, [0.5])


def coco_file(path, file_name="a.png", categories=((1, "cat"),), annotations=(), size=(W, H)):
    return write_json(path, {"images": [{"id": 5, "file_name": file_name, "width": size[0], "height": size[1]}],
                             "categories": [{"id": i, "name": n} for i, n in categories],
                             "annotations": [{"image_id": 5, "category_id": 1, **a} for a in annotations]})


def test_coco_short_polygons_clipping_unknown_images(tmp_path):
    images = make_images(tmp_path)
    anns = [{"bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1]]},
            {"bbox": [35, 25, 10, 10]}, {"bbox": [50, 1, 5, 5]}]
    got = lio.read_coco(coco_file(tmp_path / "c.json", annotations=anns), images)
    np.testing.assert_allclose(got.labels["a.png"].boxes, [[1, 1, 6, 6], [35, 25, 40, 30]])
    assert got.labels["a.png"].polygon_xy is None and len(got.fixes) == 3
    assert "c.json, image a.png, annotation 0: polygon 0 has 2 points" in got.fixes[0]
    assert "annotation 1" in got.fixes[1] and "clipped" in got.fixes[1]
    assert "annotation 2" in got.fixes[2] and "dropped" in got.fixes[2]

    coco_file(tmp_path / "bad.json", annotations=[{"segmentation": [[1, 1, 6, 1]]}])
    with pytest.raises(DataError, match=r"bad.json, image a.png, annotation 0: polygon 0 has 2 points"):
        lio.read_coco(tmp_path / "bad.json", images)

    coco_file(tmp_path / "ghost.json", file_name="ghost.png", annotations=anns[1:2])
    with pytest.raises(DataError, match=r"ghost.json labels image 'ghost.png', which is not in the scene .*a.png"):
        lio.read_coco(tmp_path / "ghost.json", images)
    skipped = lio.read_coco(tmp_path / "ghost.json", images, unknown_images="skip")
    assert skipped.labels == {} and "ghost.png" in skipped.fixes[0]
    orphan = lio.read_coco(coco_file(tmp_path / "o.json", annotations=[{"bbox": [1, 1, 2, 2], "image_id": 99}]), images)
    assert "1 annotations name image ids that images[] lacks ([99])" in orphan.fixes[0]
    coco_file(tmp_path / "small.json", size=(20, 15))
    with pytest.raises(DataError, match="size 20x15"):
        lio.read_coco(tmp_path / "small.json", images)


def test_coco_files_with_different_categories(tmp_path):
    images = make_images(tmp_path)
    one = coco_file(tmp_path / "one.json", categories=((1, "cat"), (2, "dog")), annotations=[{"bbox": [1, 1, 2, 2]}])
    two = coco_file(tmp_path / "two.json", "sub/b.png", ((1, "cat"), (2, "cow")), [{"bbox": [1, 1, 2, 2]}])
    with pytest.raises(DataError) as err:
        lio.read_coco([one, two], images)
    assert all(s in str(err.value) for s in ("one.json", "two.json", "dog", "cow"))
    got = lio.read_coco([one, two], images, class_names=["cow", "cat", "dog"])
    assert got.category_ids == (2, 1, 2)  # first file's ids by name; cow keeps the id it has in two.json
    with pytest.raises(DataError, match="cow"):
        lio.read_coco([one, two], images, class_names=["cat", "dog"])


def test_coco_uncompressed_rle_reads_pixel_exact(tmp_path):
    images = make_images(tmp_path)
    mask = disk(10, 10, 5) | disk(30, 20, 4)
    seg = lio.labels_coco.rle_of(mask, compressed=False)
    coco_file(tmp_path / "u.json", annotations=[{"segmentation": seg, "iscrowd": 1}])
    got = lio.read_coco(tmp_path / "u.json", images)
    np.testing.assert_array_equal(got.labels["a.png"].masks[0], mask)
    np.testing.assert_array_equal(got.labels["a.png"].boxes, [[5, 5, 34, 24]])  # box from the mask's pixels


def test_coco_to_yolo_to_coco_keeps_boxes(tmp_path):
    images = make_images(tmp_path)
    anns = [{"bbox": [1.08, 2.5, 20.25, 11.0]}, {"bbox": [0.0, 0.0, 40.0, 30.0], "category_id": 2}]
    first = lio.read_coco(coco_file(tmp_path / "c.json", categories=((1, "a"), (2, "b")), annotations=anns), images)
    data = lio.write_yolo_dataset(tmp_path / "yolo", first.class_names, first.labels, images)
    middle = lio.read_yolo(data, images)
    lio.write_coco(tmp_path / "back.json", middle.class_names, middle.labels, images, first.category_ids)
    back = lio.read_coco(tmp_path / "back.json", images)
    assert back.class_names == first.class_names and back.category_ids == (1, 2)
    np.testing.assert_allclose(back.labels["a.png"].boxes, first.labels["a.png"].boxes, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(back.labels["a.png"].classes, [0, 1])


# -- labelme ------------------------------------------------------------------------------------------------

def shape(label, points, kind="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": kind, "flags": {}}


def labelme_file(path, shapes, image="a.png", size=(W, H)):
    return write_json(path, {"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": image,
                             "imageData": None, "imageHeight": size[1], "imageWidth": size[0]})


LABELS_TXT = "__ignore__\n_background_\ncat\ndog\n"


def test_labelme_instances_groups_ignore_and_shape_kinds(tmp_path):
    images = make_images(tmp_path)
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm/labels.txt").write_text(LABELS_TXT)
    tri, quad = [[2, 2], [12, 2], [7, 10]], [[20.5, 3], [30, 3], [30, 12], [20.5, 12]]
    labelme_file(tmp_path / "lm/a.json", [
        shape("dog", tri), shape("cat", quad, group_id=1), shape("__ignore__", [[0, 0], [5, 0], [5, 5]]),
        shape("cat", [[33, 20], [38, 26]], "rectangle", group_id=1), shape("dog", [[10, 20], [13, 20]], "circle")])
    got = lio.read_labelme(tmp_path / "lm", images)
    assert got.class_names == ("_background_", "cat", "dog") and got.fixes == []
    lab = got.labels["a.png"]
    assert lab.classes.tolist() == [2, 1, 2]
    np.testing.assert_array_equal(lab.polygons(0)[0], tri)  # as stored
    assert len(lab.polygons(1)) == 2
    np.testing.assert_array_equal(lab.polygons(1)[1], [[33, 20], [38, 20], [38, 26], [33, 26]])
    assert len(lab.polygons(2)[0]) == 12  # labelme2coco's circle n-gon for r = 3
    # masks as labelme's shape_to_mask draws them (outline included), boxes their pixel extent
    assert lab.masks[1, 3:13, 20:31].all() and lab.masks[1, 20:27, 33:39].all() and lab.masks[1].sum() == 110 + 42
    np.testing.assert_array_equal(lab.boxes[1], [20, 3, 39, 27])
    np.testing.assert_array_equal(lab.boxes[0], [2, 2, 13, 11])

    coco = lio.labelme_to_coco(tmp_path / "lm")
    assert [c["id"] for c in coco["categories"]] == [0, 1, 2] and coco["images"][0]["file_name"] == "JPEGImages/a.jpg"
    anns = coco["annotations"]
    assert [a["category_id"] for a in anns] == [2, 1, 2] and anns[0]["segmentation"] == [np.ravel(tri).tolist()]
    assert anns[1]["bbox"] == [20.0, 3.0, 19.0, 24.0] and anns[1]["area"] == 152.0


def test_labelme_bad_shapes(tmp_path):
    images = make_images(tmp_path)
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm/labels.txt").write_text(LABELS_TXT)
    cases = [([shape("cat", [[1, 1]], "point")], "shape 0 .* is a point"),
             ([shape("cat", [[1, 1], [5, 5]])], r"a.json, image a.png: shape 0 .* polygon of 2 points"),
             ([shape("cow", [[1, 1], [5, 5], [1, 5]])], "label 'cow'"),
             ([shape("cat", [[1, 1]], "rectangle")], "has 1 points")]
    for shapes, match in cases:
        labelme_file(tmp_path / "lm/a.json", shapes)
        with pytest.raises(DataError, match=match):
            lio.read_labelme(tmp_path / "lm", images)
    # a short polygon in an instance that has other shapes is dropped and reported
    labelme_file(tmp_path / "lm/a.json", [shape("cat", [[1, 1], [5, 5]], group_id=3),
                                          shape("cat", [[1, 1], [9, 1], [5, 8]], group_id=3)])
    got = lio.read_labelme(tmp_path / "lm", images)
    assert len(got.labels["a.png"]) == 1 and len(got.labels["a.png"].polygons(0)) == 1
    assert "shape 0" in got.fixes[0] and "dropped" in got.fixes[0]
    labelme_file(tmp_path / "lm/a.json", [shape("cat", [[1, 1], [5, 5], [1, 5]])], image="ghost.png")
    with pytest.raises(DataError, match="ghost.png"):
        lio.read_labelme(tmp_path / "lm", images)
    assert "ghost.png" in lio.read_labelme(tmp_path / "lm", images, unknown_images="skip").fixes[0]


# -- VOC ----------------------------------------------------------------------------------------------------

def test_voc_round_trip_masks_classes_void(tmp_path):
    images = make_images(tmp_path)
    masks = np.stack([disk(10, 10, 6), disk(28, 18, 7), np.zeros((H, W), bool)])
    masks[2, 25:29, 2:8] = True
    lab = Labels(np.stack([box_of_mask(m) for m in masks]), np.array([2, 1, 2], np.int32),
                 masks=masks)
    void = {"a.png": np.zeros((H, W), bool)}
    void["a.png"][0, :] = True
    names = ("_background_", "cat", "dog")
    lio.write_voc(tmp_path / "voc", names, {"a.png": lab}, images, void)
    cls_png = Image.open(tmp_path / "voc/SegmentationClass/a.png")
    assert cls_png.mode == "P" and cls_png.getpalette()[3:6] == [128, 0, 0]
    back = lio.read_voc(tmp_path / "voc", images)
    assert back.class_names == names and back.fixes == []
    got = back.labels["a.png"]
    expected = masks & ~void["a.png"]
    np.testing.assert_array_equal(got.masks, expected)
    np.testing.assert_array_equal(got.classes, lab.classes)
    np.testing.assert_array_equal(got.boxes, np.stack([box_of_mask(m) for m in expected]))
    np.testing.assert_array_equal(back.void["a.png"], void["a.png"])
    lio.write_voc(tmp_path / "voc2", back.class_names, back.labels, images, back.void)
    for sub in ("SegmentationClass", "SegmentationObject"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "voc" / sub / "a.png")),
                                      np.asarray(Image.open(tmp_path / "voc2" / sub / "a.png")))
    with pytest.raises(DataError, match="instance 0 has only a box"):
        lio.write_voc(tmp_path / "voc3", names, {"a.png": box_labels([[1, 1, 4, 4]], [1])}, images)


def test_voc_mixed_classes_and_size_mismatch(tmp_path):
    images = make_images(tmp_path)
    for sub, values in (("SegmentationClass", [[0, 1], [2, 1]]), ("SegmentationObject", [[0, 1], [1, 1]])):
        (tmp_path / "voc" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(np.array(values, np.uint8), np.ones((15, 20), np.uint8))).save(
            tmp_path / "voc" / sub / "a.png")
    got = lio.read_voc(tmp_path / "voc", images)
    assert got.class_names[1] == "aeroplane" and got.labels["a.png"].classes.tolist() == [1]
    assert "covers classes [1, 2]" in got.fixes[0]
    small = [ImageInfo("a.png", images[0].path, 1, 10, 10)]
    with pytest.raises(DataError, match="40x30, the image a.png is 10x10"):
        lio.read_voc(tmp_path / "voc", small)


# -- read_labels --------------------------------------------------------------------------------------------

def test_read_labels_recognises_each_format(tmp_path):
    images = make_images(tmp_path)
    lab = {"a.png": box_labels([[1, 2, 11, 12]], [1])}
    masked = {"a.png": Labels(lab["a.png"].boxes, lab["a.png"].classes,
                              masks=np.stack([np.pad(np.ones((10, 10), bool), ((2, 18), (1, 29)))]))}
    names = ("_background_", "cat")
    coco = lio.write_coco(tmp_path / "coco/instances_train.json", names, lab, images)
    data_yaml = lio.write_yolo_dataset(tmp_path / "yolo", names, lab, images)
    lio.write_voc(tmp_path / "voc", names, masked, images)
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm/labels.txt").write_text("__ignore__\n_background_\ncat\n")
    labelme_file(tmp_path / "lm/a.json", [shape("cat", [[1, 2], [10, 11]], "rectangle")])
    for path in (coco, tmp_path / "coco", data_yaml, tmp_path / "yolo", tmp_path / "yolo/labels", tmp_path / "voc",
                 tmp_path / "lm", tmp_path / "lm/a.json"):
        got = lio.read_labels(path, images, class_names=names)
        np.testing.assert_allclose(got.labels["a.png"].boxes, lab["a.png"].boxes, atol=1e-6, err_msg=str(path))
        assert got.labels["a.png"].classes.tolist() == [1]
    with pytest.raises(DataError, match="does not exist"):
        lio.read_labels(tmp_path / "nothing", images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no labels"):
        lio.read_labels(tmp_path / "empty", images)


def test_yolo_joins_an_instances_polygons_into_one_segment(tmp_path):
    images = make_images(tmp_path, names=("x.png",))
    two = polygon_labels([[[[1, 1], [5, 1], [5, 5]], [[20, 20], [24, 20], [24, 25]]]], [0])
    lio.write_yolo(tmp_path / "labels", {"x.png": two}, images)
    assert len((tmp_path / "labels/x.txt").read_text().splitlines()) == 1
    back = lio.read_yolo(tmp_path / "labels", images, class_names=["a"]).labels["x.png"]
    assert len(back) == 1 and len(back.polygons(0)) == 1
    np.testing.assert_allclose(back.boxes, [[1, 1, 24, 25]], atol=1e-6)


def test_image_names_with_dots_and_labelme_under_annotations(tmp_path):
    images = make_images(tmp_path, names=("cam.left.0001.png", "sub/b.png"))
    index = ImageIndex(images)
    for ref in ("cam.left.0001", "images/cam.left.0001", "cam.left.0001.txt", "cam.left.0001.png"):
        assert index.find(ref, "labels", "error", []).name == "cam.left.0001.png", ref
    (tmp_path / "data/annotations").mkdir(parents=True)
    labelme_file(tmp_path / "data/annotations/b.json", [shape("cat", [[2, 2], [12, 2], [7, 10]])], image="b.png")
    got = lio.read_labels(tmp_path / "data", images)
    assert list(got.labels) == ["sub/b.png"] and "cat" in got.class_names


def test_multi_polygon_yolo_leaves_ultralytics_usable(tmp_path):
    """Writing a YOLO segment of several polygons imports ultralytics' merger; in a fresh process, torchvision
    (and with it ultralytics' NMS) must still work afterwards."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np, torch
        from PIL import Image
        from recon3d.io import labels as lio
        from recon3d.scene import ImageInfo, Labels
        Image.new("RGB", (40, 30)).save({str(tmp_path / "a.png")!r})
        im = ImageInfo("a.png", {str(tmp_path / "a.png")!r}, 1, 40, 30)
        xy = np.array([[1, 1], [5, 1], [5, 5], [10, 10], [15, 10], [15, 15]], np.float64)
        lab = Labels(np.array([[1, 1, 15, 15]], np.float64), np.array([0], np.int32), polygon_xy=xy,
                     polygon_offsets=np.array([0, 3, 6]), polygon_instance=np.array([0, 0], np.int32))
        lio.write_yolo({str(tmp_path / "out")!r}, {{"a.png": lab}}, [im])
        import torchvision
        keep = torchvision.ops.nms(torch.tensor([[0., 0, 2, 2], [0, 0, 2, 2]]), torch.tensor([1., .5]), .5)
        print(keep.tolist())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[0]"
