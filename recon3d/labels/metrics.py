"""Detection and segmentation metrics: COCO mAP through pycocotools, semantic maps and mIoU, their figures.

Boxes are `Labels.boxes` (N, 4) xyxy pixel corners, so `[x0, y0, x1 - x0, y1 - y0]` is COCO's `bbox`
unchanged; class `c` of the scene's `class_names` is COCO category `c + 1` and semantic value `c + 1`
(0 is background). Results are JSON-ready dicts: floats, lists, `None` where a value does not exist.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import atomic_write
from recon3d.scene import ImageInfo, Labels

Sizes = Sequence[ImageInfo] | Mapping[str, tuple[int, int]]  # scene images, or image name -> (height, width)


# -- COCO mAP ----------------------------------------------------------------------------------------------

def coco_map(truth: Mapping[str, Labels], pred: Mapping[str, Labels], class_names: Sequence[str],
             images: Sizes, iou_type: str = "bbox", max_dets: int = 100) -> dict:
    """COCO average precision of `pred` against `truth` (pycocotools' COCOeval, area range "all").

    truth, pred: image name -> Labels; pred needs `scores` (N,), and `masks` (N, H, W) for `iou_type="segm"`
    (truth too). The images evaluated are those of `truth`: one without predictions counts its objects as
    misses. Only the `max_dets` best-scored predictions of an image count (COCO's 100). images: the sizes.

    Returns {"iou_type", "mAP" (IoU 0.5:0.95), "mAP50", "mAP75", "per_class": {name: {"AP", "AP50",
    "AP75", "n_truth", "n_pred"}}, "pr_curves": {"iou": 0.5, "recall": (101,), "precision": {name: (101,)}},
    "n_images", "n_truth", "n_pred"}. A class without truth has AP None, no curve, and stays out of the means
    (as in COCO); precision is COCO's interpolated precision (the best at that recall or above).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"coco_map: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if not class_names:
        raise ValueError("coco_map: class_names is empty")
    sizes = _sizes(images, truth, pred)
    image_ids = {name: i + 1 for i, name in enumerate(truth)}
    coco_images = [{"id": image_ids[n], "file_name": n, "height": sizes[n][0], "width": sizes[n][1]}
                   for n in truth]
    categories = [{"id": c + 1, "name": str(name)} for c, name in enumerate(class_names)]

    gt_anns, dt_anns = [], []
    for name, labels in truth.items():
        gt_anns += _annotations(labels, name, image_ids[name], sizes[name], len(class_names), iou_type, False)
    for name, labels in pred.items():
        dt_anns += _annotations(labels, name, image_ids[name], sizes[name], len(class_names), iou_type, True)
    for anns in (gt_anns, dt_anns):
        for i, ann in enumerate(anns):
            ann["id"] = i + 1

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": coco_images, "categories": categories, "annotations": gt_anns}
        coco_dt.dataset = {"images": coco_images, "categories": categories, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = list(image_ids.values())
        ev.params.catIds = [c["id"] for c in categories]
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()

    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T iou thresholds, R recall levels, K classes)
    t50, t75 = (int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (0.5, 0.75))
    n_truth, n_pred = (np.bincount(np.array([a["category_id"] - 1 for a in anns], np.int64),
                                   minlength=len(class_names)) for anns in (gt_anns, dt_anns))
    per_class, curves = {}, {}
    for k, name in enumerate(class_names):
        per_class[name] = {"AP": _mean_valid(precision[:, :, k]), "AP50": _mean_valid(precision[t50, :, k]),
                           "AP75": _mean_valid(precision[t75, :, k]),
                           "n_truth": int(n_truth[k]), "n_pred": int(n_pred[k])}
        if n_truth[k] > 0:
            curves[name] = [round(float(p), 10) for p in precision[t50, :, k]]
    return {"iou_type": iou_type, "mAP": _mean_valid(precision), "mAP50": _mean_valid(precision[t50]),
            "mAP75": _mean_valid(precision[t75]), "per_class": per_class,
            "pr_curves": {"iou": 0.5, "recall": [float(r) for r in ev.params.recThrs], "precision": curves},
            "n_images": len(truth), "n_truth": len(gt_anns), "n_pred": len(dt_anns)}


def _sizes(images: Sizes, truth: Mapping[str, Labels], pred: Mapping[str, Labels]) -> dict[str, tuple[int, int]]:
    """image name -> (height, width) for every truth image; every predicted image must have truth."""
    for name in pred:
        if name not in truth:
            raise DataError(f"predictions for image {name!r}, which has no ground truth",
                            "pass truth for every predicted image (an empty Labels if it has no objects)")
    if isinstance(images, Mapping):
        sizes = {n: (int(hw[0]), int(hw[1])) for n, hw in images.items()}
    else:
        sizes = {im.name: (im.height, im.width) for im in images}
    missing = [n for n in truth if n not in sizes]
    if missing:
        raise DataError(f"no image size for {len(missing)} labeled image(s), e.g. {missing[0]!r}",
                        "pass the scene's images (or name -> (height, width)) covering every truth image")
    return sizes


def _annotations(labels: Labels, name: str, image_id: int, size: tuple[int, int], n_classes: int,
                 iou_type: str, is_pred: bool) -> list[dict]:
    """COCO annotation dicts (without ids) of one image's Labels, checked against the image and classes."""
    from pycocotools import mask as mask_utils

    what = f"{'predictions' if is_pred else 'truth'} of image {name!r}"
    boxes, classes = np.asarray(labels.boxes, np.float64), np.asarray(labels.classes)
    n = len(boxes)
    if boxes.shape != (n, 4) or classes.shape != (n,):
        raise DataError(f"{what}: boxes {boxes.shape} and classes {classes.shape} do not match (N, 4), (N,)")
    bad = classes[(classes < 0) | (classes >= n_classes)]
    if len(bad):
        raise DataError(f"{what}: class id {int(bad[0])} out of range for {n_classes} class names",
                        "classes index into the scene's class_names")
    if is_pred and (labels.scores is None or np.shape(labels.scores) != (n,)):
        raise DataError(f"{what}: need scores (N,) = ({n},), got "
                        f"{None if labels.scores is None else np.shape(labels.scores)}")
    masks = labels.masks
    if iou_type == "segm" and (masks is None or np.shape(masks) != (n, *size)):
        raise DataError(f"{what}: segm needs masks (N, H, W) = {(n, *size)}, got "
                        f"{None if masks is None else np.shape(masks)}", "evaluate boxes with iou_type='bbox'")
    anns = []
    for i in range(n):
        x0, y0, x1, y1 = boxes[i]
        ann = {"image_id": image_id, "category_id": int(classes[i]) + 1, "iscrowd": 0,
               "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
               "area": float((x1 - x0) * (y1 - y0))}
        if iou_type == "segm":
            ann["segmentation"] = mask_utils.encode(np.asfortranarray(masks[i], dtype=np.uint8))
            ann["area"] = float(mask_utils.area(ann["segmentation"]))
        if is_pred:
            ann["score"] = float(labels.scores[i])
        anns.append(ann)
    return anns


def _mean_valid(precision: np.ndarray) -> float | None:
    """Mean of the entries that are not COCO's -1 (absent class), to 10 decimals (COCO's precision of a
    perfect ranking is 1 / (1 + eps)); None when none is."""
    valid = precision[precision > -1]
    return round(float(valid.mean()), 10) if valid.size else None


# -- semantic maps and mIoU ------------------------------------------------------------------------------

def semantic_from_masks(masks: np.ndarray, classes: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """masks (N, H, W) bool, classes (N,) -> (H, W) int32: 0 background, class c -> c + 1.

    Overlaps go to the instance painted last: in order of increasing score (the highest wins), or in the
    given order without scores (the last wins).
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or len(classes) != len(masks):
        raise ValueError(f"semantic_from_masks: need masks (N, H, W) and classes (N,), got {masks.shape}, "
                         f"{np.shape(classes)}")
    order = np.arange(len(masks)) if scores is None else np.argsort(scores, kind="stable")
    out = np.zeros(masks.shape[1:], np.int32)
    for i in order:
        out[masks[i]] = int(classes[i]) + 1
    return out


def semantic_map(labels: Labels, height: int, width: int, source: str = "masks",
                 min_score: float = 0.0) -> np.ndarray:
    """One image's Labels -> (height, width) int32 semantic map (0 background, class c -> c + 1).

    source "masks" paints `labels.masks` (an error without them); "boxes" paints the pixels whose centers
    lie inside each box. Predictions below `min_score` are left out; see `semantic_from_masks` for overlaps.
    """
    if len(labels) == 0:  # no objects: all background, with or without masks
        return np.zeros((height, width), np.int32)
    keep = np.ones(len(labels), bool) if labels.scores is None else np.asarray(labels.scores) >= min_score
    if source == "masks":
        if labels.masks is None or np.shape(labels.masks) != (len(labels), height, width):
            raise DataError(f"semantic_map: need masks (N, H, W) = {(len(labels), height, width)}, got "
                            f"{None if labels.masks is None else np.shape(labels.masks)}", "use source='boxes'")
        masks = np.asarray(labels.masks, bool)[keep]
    elif source == "boxes":  # the pixels whose centres lie in each box (Labels.region of a box alone)
        boxes_only = Labels(np.asarray(labels.boxes, np.float64), np.asarray(labels.classes))
        masks = np.array([boxes_only.region(i, height, width) for i in np.flatnonzero(keep)], bool)
    else:
        raise ValueError(f"semantic_map: source must be 'masks' or 'boxes', got {source!r}")
    scores = None if labels.scores is None else np.asarray(labels.scores)[keep]
    return semantic_from_masks(masks.reshape(-1, height, width), np.asarray(labels.classes)[keep], scores)


def miou(truth_maps: Sequence[np.ndarray], pred_maps: Sequence[np.ndarray], n_classes: int,
         ignore: int | None = None, class_names: Sequence[str] | None = None) -> dict:
    """Mean intersection over union of semantic maps, from one confusion matrix over all images.

    truth_maps, pred_maps: matching (H, W) int maps with values 0 (background) .. n_classes; truth pixels
    equal to `ignore` are left out. Returns {"mIoU" (over the classes, background included, present in
    truth or prediction), "mIoU_objects" (the same without background), "pixel_accuracy", "per_class":
    {"background" | name: {"IoU" (None if absent from both), "n_truth_px", "n_pred_px"}},
    "names", "confusion": (n_classes + 1)^2 rows truth, columns prediction}.
    """
    if len(truth_maps) != len(pred_maps):
        raise ValueError(f"miou: {len(truth_maps)} truth maps but {len(pred_maps)} predicted maps")
    names = ["background", *(class_names if class_names is not None else [str(c) for c in range(n_classes)])]
    if len(names) != n_classes + 1:
        raise ValueError(f"miou: {len(names) - 1} class names for n_classes={n_classes}")
    k = n_classes + 1
    confusion = np.zeros((k, k), np.int64)
    for i, (t, p) in enumerate(zip(truth_maps, pred_maps, strict=True)):
        t, p = np.asarray(t), np.asarray(p)
        if t.shape != p.shape or t.ndim != 2:
            raise ValueError(f"miou: map {i}: truth {t.shape} and prediction {p.shape} must be the same (H, W)")
        keep = np.ones(t.shape, bool) if ignore is None else t != ignore
        t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
        for what, m in (("truth", t), ("prediction", p)):
            if m.size and (m.min() < 0 or m.max() >= k):
                raise DataError(f"miou: map {i}: {what} value {int(m.min() if m.min() < 0 else m.max())} "
                                f"outside 0..{n_classes}", "values are 0 background or class + 1")
        confusion += np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp, n_truth, n_pred = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    union = n_truth + n_pred - tp
    iou = [float(tp[c] / union[c]) if union[c] else None for c in range(k)]
    present = [v for v in iou if v is not None]
    objects = [v for v in iou[1:] if v is not None]
    return {"mIoU": float(np.mean(present)) if present else None,
            "mIoU_objects": float(np.mean(objects)) if objects else None,
            "pixel_accuracy": float(tp.sum() / confusion.sum()) if confusion.sum() else None,
            "per_class": {names[c]: {"IoU": iou[c], "n_truth_px": int(n_truth[c]), "n_pred_px": int(n_pred[c])}
                          for c in range(k)},
            "names": names, "confusion": confusion.tolist()}


def labels_miou(truth: Mapping[str, Labels], pred: Mapping[str, Labels], class_names: Sequence[str],
                images: Sizes, source: str = "masks", min_score: float = 0.5) -> dict:
    """`miou` of the semantic maps of truth and prediction over the images of `truth` (an image without
    predictions is all background); predictions below `min_score` are left out. See `semantic_map`."""
    sizes = _sizes(images, truth, pred)
    truth_maps, pred_maps = [], []
    for name, labels in truth.items():
        h, w = sizes[name]
        truth_maps.append(semantic_map(labels, h, w, source))
        pred_maps.append(semantic_map(pred[name], h, w, source, min_score) if name in pred
                         else np.zeros((h, w), np.int32))
    return miou(truth_maps, pred_maps, len(class_names), class_names=class_names)


# -- figures (matplotlib's object API on the Agg canvas, no pyplot state) --------------------------------

def _save_png(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(result: dict, path: str | Path, title: str = "precision-recall, IoU 0.5") -> Path:
    """PNG at `path` of a `coco_map` result's PR curves at IoU 0.5, one per class with truth, AP50 in the
    legend; returns the path."""
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    curves = result["pr_curves"]
    for c, (name, precision) in enumerate(curves["precision"].items()):
        ax.plot(curves["recall"], precision, color=f"C{c % 10}", drawstyle="steps-post",
                label=f"{name} (AP50 {result['per_class'][name]['AP50']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    mean = result["mAP50"]
    ax.set_title(f"{title}: mAP50 {mean:.3f}" if mean is not None else f"{title}: no truth")
    ax.grid(alpha=0.3)
    if curves["precision"]:
        ax.legend(fontsize=8, loc="lower left")
    return _save_png(fig, path)


def plot_confusion(result: dict, path: str | Path, title: str = "confusion, rows normalised") -> Path:
    """PNG at `path` of a `miou` result's confusion matrix, each truth row divided by its pixel count."""
    confusion = np.asarray(result["confusion"], np.float64)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    k, names = len(confusion), result["names"]
    fig = _figure(1.5 + 0.5 * k, 1.2 + 0.5 * k)
    ax = fig.add_subplot()
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"{title}: mIoU {result['mIoU']:.3f}" if result["mIoU"] is not None else title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save_png(fig, path)
