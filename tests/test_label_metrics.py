"""recon3d.labels.metrics against cases worked out by hand: COCO mAP (boxes and masks), semantic maps, mIoU."""

import json

import cv2
import numpy as np
import pytest

from recon3d.errors import DataError
from recon3d.labels import metrics
from recon3d.scene import ImageInfo, Labels

NAMES = ("car", "person", "dog")
SIZES = {"a.png": (40, 60), "b.png": (40, 60)}  # name -> (height, width)


def labels(boxes, classes, scores=None, masks=None) -> Labels:
    return Labels(np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int32),
                  None if scores is None else np.array(scores, np.float32), masks)


def square_mask(size, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_perfect_predictions_score_one():
    truth = {"a.png": labels([[1, 2, 11, 12], [20, 5, 35, 30]], [0, 1]), "b.png": labels([[3, 3, 9, 20]], [0])}
    pred = {n: labels(t.boxes, t.classes, np.linspace(0.9, 0.5, len(t))) for n, t in truth.items()}
    images = [ImageInfo(n, n, 1, w, h) for n, (h, w) in SIZES.items()]  # ImageInfo works as well as sizes
    r = metrics.coco_map(truth, pred, NAMES, images)
    assert r["mAP"] == 1.0 and r["mAP50"] == 1.0 and r["mAP75"] == 1.0
    assert r["per_class"]["car"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "n_truth": 2, "n_pred": 2})
    assert r["per_class"]["dog"]["AP"] is None  # no truth: out of the means
    assert (r["n_images"], r["n_truth"], r["n_pred"]) == (2, 3, 3)
    assert set(r["pr_curves"]["precision"]) == {"car", "person"}
    assert len(r["pr_curves"]["recall"]) == len(r["pr_curves"]["precision"]["car"]) == 101
    json.dumps(r, allow_nan=False)  # JSON-ready


@pytest.mark.parametrize("dx, iou, m_ap", [(2.5, 0.6, None), (2.0, 2 / 3, 0.4)])
def test_shifted_box_counts_at_low_iou_only(dx, iou, m_ap):
    # a 10 x 10 box shifted by dx along x: IoU = (10 - dx) / (10 + dx)
    assert (10 - dx) / (10 + dx) == pytest.approx(iou)
    truth = {"a.png": labels([[10, 10, 20, 20]], [0])}
    pred = {"a.png": labels([[10 + dx, 10, 20 + dx, 20]], [0], [0.9])}
    r = metrics.coco_map(truth, pred, NAMES, SIZES)
    assert r["mAP50"] == 1.0 and r["mAP75"] == 0.0
    if m_ap is not None:  # IoU 2/3 matches at thresholds 0.5, 0.55, 0.6, 0.65: 4 of 10
        assert r["mAP"] == pytest.approx(m_ap)


def test_false_positive_above_true_positives():
    # one truth, FP (0.9) above TP (0.8): precision 0.5 at every recall -> AP50 = 0.5
    truth = {"a.png": labels([[0, 0, 10, 10]], [0])}
    pred = {"a.png": labels([[30, 0, 40, 10], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])}
    assert metrics.coco_map(truth, pred, NAMES, SIZES)["mAP50"] == pytest.approx(0.5)
    # two truths, ranked TP (0.9), FP (0.8), TP (0.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Interpolated precision is 1 up to recall 0.5 (51 of COCO's 101 recall levels), 2/3 above (50 levels).
    truth = {"a.png": labels([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])}
    pred = {"a.png": labels([[0, 0, 10, 10], [40, 0, 50, 10], [20, 20, 30, 30]], [1, 1, 1], [0.9, 0.8, 0.7])}
    r = metrics.coco_map(truth, pred, NAMES, SIZES)
    assert r["per_class"]["person"]["AP50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert r["mAP50"] == r["per_class"]["person"]["AP50"]  # the only class with truth
    curve = np.array(r["pr_curves"]["precision"]["person"])
    assert np.allclose(curve[:51], 1) and np.allclose(curve[51:], 2 / 3)


def test_missing_class_and_image_without_predictions():
    # car: found in a.png, missed in b.png (no predictions there): precision 1 up to recall 0.5, then 0
    # person: truth but no predictions: AP 0; dog: predictions but no truth: left out of the mean
    truth = {"a.png": labels([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1]), "b.png": labels([[5, 5, 15, 15]], [0])}
    pred = {"a.png": labels([[0, 0, 10, 10], [40, 20, 50, 30]], [0, 2], [0.9, 0.8])}
    r = metrics.coco_map(truth, pred, NAMES, SIZES)
    car, person, dog = (r["per_class"][n] for n in NAMES)
    assert car["AP50"] == pytest.approx(51 / 101) and car["AP"] == pytest.approx(51 / 101)
    assert person["AP"] == 0.0 and person["n_truth"] == 1 and person["n_pred"] == 0
    assert dog["AP"] is None and dog["n_pred"] == 1 and "dog" not in r["pr_curves"]["precision"]
    assert r["mAP"] == pytest.approx((51 / 101 + 0.0) / 2)


def test_masks_are_scored_by_mask_iou_not_box_iou():
    # identical boxes, masks of IoU 60 / 100 = 0.6
    size = SIZES["a.png"]
    truth = {"a.png": labels([[0, 0, 10, 10]], [0], masks=square_mask(size, 0, 0, 10, 10)[None])}
    pred = {"a.png": labels([[0, 0, 10, 10]], [0], [0.9], masks=square_mask(size, 0, 0, 6, 10)[None])}
    boxes = metrics.coco_map(truth, pred, NAMES, SIZES, iou_type="bbox")
    masks = metrics.coco_map(truth, pred, NAMES, SIZES, iou_type="segm")
    assert boxes["mAP50"] == 1.0 and boxes["mAP75"] == 1.0 and boxes["mAP"] == 1.0
    assert masks["mAP50"] == 1.0 and masks["mAP75"] == 0.0 and masks["iou_type"] == "segm"
    json.dumps(masks, allow_nan=False)
    no_masks = {"a.png": labels([[0, 0, 10, 10]], [0], [0.9])}
    with pytest.raises(DataError, match="segm needs masks"):
        metrics.coco_map(truth, no_masks, NAMES, SIZES, iou_type="segm")


def test_bad_input_is_named():
    truth = {"a.png": labels([[0, 0, 10, 10]], [0])}
    with pytest.raises(DataError, match="'c.png'"):
        metrics.coco_map(truth, {"c.png": labels([[0, 0, 1, 1]], [0], [0.5])}, NAMES, SIZES)
    with pytest.raises(DataError, match="class id 3 out of range"):
        metrics.coco_map(truth, {"a.png": labels([[0, 0, 1, 1]], [3], [0.5])}, NAMES, SIZES)
    with pytest.raises(DataError, match="need scores"):
        metrics.coco_map(truth, {"a.png": labels([[0, 0, 1, 1]], [0])}, NAMES, SIZES)
    with pytest.raises(DataError, match="no image size"):
        metrics.coco_map(truth, {}, NAMES, {"b.png": (4, 4)})
    with pytest.raises(ValueError, match="iou_type"):
        metrics.coco_map(truth, {}, NAMES, SIZES, iou_type="keypoints")


def test_no_predictions_at_all():
    r = metrics.coco_map({"a.png": labels([[0, 0, 10, 10]], [0])}, {}, NAMES, SIZES)
    assert r["mAP"] == 0.0 and r["n_pred"] == 0
    r = metrics.coco_map({"a.png": labels(np.zeros((0, 4)), [])}, {}, NAMES, SIZES)
    assert r["mAP"] is None and r["n_truth"] == 0


def test_semantic_map_overlaps():
    size = (4, 5)
    masks = np.stack([square_mask(size, 0, 0, 3, 3), square_mask(size, 2, 1, 5, 4)])
    # truth: in order, the last wins; predictions: the higher score wins, whatever the order
    assert metrics.semantic_map(labels([[0, 0, 3, 3], [2, 1, 5, 4]], [0, 2], masks=masks), *size)[1, 2] == 3
    pred = labels([[0, 0, 3, 3], [2, 1, 5, 4]], [0, 2], [0.9, 0.4], masks=masks)
    sem = metrics.semantic_map(pred, *size)
    assert sem.dtype == np.int32 and sem[1, 2] == 1 and sem[3, 4] == 3 and sem[0, 4] == 0
    assert metrics.semantic_map(pred, *size, min_score=0.5)[3, 4] == 0
    # boxes: the pixels whose centers (c + 0.5, r + 0.5) are inside
    box = metrics.semantic_map(labels([[1, 0, 3, 1], [0.6, 2, 1.4, 3]], [1, 1]), *size, source="boxes")
    assert np.array_equal(np.argwhere(box == 2), [[0, 1], [0, 2]])
    with pytest.raises(DataError, match="need masks"):
        metrics.semantic_map(labels([[0, 0, 1, 1]], [0]), *size)
    assert not metrics.semantic_map(labels(np.zeros((0, 4)), []), *size).any()  # no objects, no masks needed


def test_miou_by_hand():
    truth = np.array([[0, 1, 1], [0, 2, 2]])
    pred = np.array([[0, 1, 2], [1, 2, 2]])
    # confusion (rows truth): bg [1, 1, 0], class 1 [0, 1, 1], class 2 [0, 0, 2]
    # IoU: bg 1 / (2 + 1 - 1) = 1/2, car 1 / (2 + 2 - 1) = 1/3, person 2 / (2 + 3 - 2) = 2/3; dog absent
    r = metrics.miou([truth], [pred], 3, class_names=NAMES)
    assert r["confusion"] == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    iou = {n: v["IoU"] for n, v in r["per_class"].items()}
    assert iou == pytest.approx({"background": 1 / 2, "car": 1 / 3, "person": 2 / 3, "dog": None})
    assert r["mIoU"] == pytest.approx(0.5) and r["mIoU_objects"] == pytest.approx(0.5)
    assert r["pixel_accuracy"] == pytest.approx(4 / 6)
    # accumulated over images = one map of all pixels; ignored truth pixels do not count
    other_t, other_p = np.array([[1, 1, 255]]), np.array([[1, 1, 3]])
    both = metrics.miou([truth, other_t], [pred, other_p], 3, ignore=255)
    joined = metrics.miou([np.vstack([truth, other_t])], [np.vstack([pred, other_p])], 3, ignore=255)
    assert both == joined
    assert both["per_class"]["0"]["IoU"] == pytest.approx(3 / 5)  # value 1 (class "0") gains 2 pixels
    assert both["per_class"]["2"]["IoU"] is None
    with pytest.raises(DataError, match="value 3 outside 0..2"):
        metrics.miou([truth], [pred + 1], 2)


def test_labels_miou_and_figures(tmp_path):
    size = SIZES["a.png"]
    m = square_mask(size, 2, 2, 12, 12)[None]
    truth = {"a.png": labels([[2, 2, 12, 12]], [1], masks=m), "b.png": labels([[2, 2, 12, 12]], [0], masks=m)}
    pred = {"a.png": labels([[2, 2, 12, 12]], [1], [0.9], masks=m)}  # b.png: all background predicted
    r = metrics.labels_miou(truth, pred, NAMES, SIZES)
    assert r["per_class"]["person"]["IoU"] == 1.0 and r["per_class"]["car"]["IoU"] == 0.0
    assert r["per_class"]["dog"]["IoU"] is None

    truth_b = {"a.png": labels([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])}
    pred_b = {"a.png": labels([[0, 0, 10, 10], [40, 0, 50, 10], [20, 20, 30, 30]], [0, 0, 1], [0.9, 0.8, 0.7])}
    for path in (metrics.plot_pr_curves(metrics.coco_map(truth_b, pred_b, NAMES, SIZES), tmp_path / "pr.png",
                                        "test"),
                 metrics.plot_confusion(r, tmp_path / "confusion.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
