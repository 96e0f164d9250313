"""labelme JSON (one file per image, `shapes` of polygons, rectangles and circles) and its COCO export.

Instances are formed as labelme's `examples/instance_segmentation/labelme2coco.py` forms them: shapes with
the same (label, group_id) are one instance, a shape without group_id is an instance of its own; instances
are ordered by their first shape. Each shape is rasterised as labelme's `utils.shape_to_mask` does it
(PIL `ImageDraw.polygon(xy, outline=1, fill=1)`, `rectangle`, `ellipse`), the instance mask is the union,
its box the mask's pixel extent (pycocotools `toBbox`), and its polygons are the shapes' points exactly as
stored (a rectangle as its 4 corners, a circle as labelme2coco's n-gon). Point, line and linestrip shapes
outline no area and are rejected.

The class table comes from a labels.txt (`__ignore__` first: shapes so labelled are skipped; then
`_background_`, class 0, then the classes), or from `class_names`, or else is `_background_` followed by
the labels in order of appearance.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from recon3d.errors import DataError
from recon3d.io.files import read_json
from recon3d.io.labels_common import (
    ImageIndex,
    Instance,
    LabelSet,
    UnknownImages,
    check_size,
    class_table,
    make_labels,
    read_names,
)
from recon3d.scene import ImageInfo

IGNORE, BACKGROUND = "__ignore__", "_background_"
AREA_SHAPES = ("polygon", "rectangle", "circle")


def read_labelme(path: str | Path, images: Sequence[ImageInfo], class_names: Sequence[str] | None = None,
                 labels_file: str | Path | None = None, unknown_images: UnknownImages = "error") -> LabelSet:
    """Read a folder of labelme `.json` files (or one file); `labels_file` defaults to a labels.txt in the
    folder or beside it. Its names map onto `class_names` when both are given."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    folder = path if path.is_dir() else path.parent
    labels_file = labels_file or next((f for f in (folder / "labels.txt", folder.parent / "labels.txt")
                                       if f.is_file()), None)
    fixes: list[str] = []
    if labels_file is not None:
        listed = [n for n in read_names(Path(labels_file)) if n != IGNORE]
        table, mapping = class_table({str(labels_file): listed}, class_names)
        index_of = {name: int(i) for name, i in zip(listed, mapping[str(labels_file)], strict=True)}
    else:
        table = tuple(class_names) if class_names is not None else (BACKGROUND,)
        index_of = {name: i for i, name in enumerate(table)}
    grow = labels_file is None and class_names is None
    index, labels = ImageIndex(images), {}
    for file in files:
        data = _load(file)
        image = index.find(str(data.get("imagePath") or file.with_suffix("").name), file, unknown_images, fixes)
        if image is None:
            continue
        if "imageWidth" in data and "imageHeight" in data:
            check_size(image, data["imageWidth"], data["imageHeight"], file)
        where = f"{file}, image {image.name}"
        instances = _instances(data, (image.height, image.width), index_of, grow, where, fixes)
        labels[image.name], _ = make_labels(instances, image, fixes)
    if grow:
        table = tuple(index_of)
    return LabelSet(table, labels, fixes)


def _load(file: Path) -> dict:
    try:
        data = read_json(file)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read labelme file {file}: {exc}", "pass readable labelme JSON files") from exc
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(f"{file} is not a labelme file (no `shapes` list)", "pass labelme JSON files")
    return data


def _instances(data: dict, shape_hw: tuple[int, int], index_of: dict[str, int], grow: bool, where: str,
               fixes: list[str]) -> list[tuple[str, Instance]]:
    """The instances of one labelme file, `__ignore__` shapes skipped (`index_of` grows when `grow`)."""
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for k, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise DataError(f"{where}: shape {k} is a {type(shape).__name__}, not a labelme shape",
                            "fix or delete the shape")
        label = str(shape.get("label"))
        if label == IGNORE:
            continue
        kind = shape.get("shape_type") or "polygon"
        if kind not in AREA_SHAPES:
            raise DataError(f"{where}: shape {k} ({label!r}) is a {kind}, which outlines no area",
                            "redraw it as a polygon, rectangle or circle, or label it __ignore__")
        points = _points(shape.get("points") or [], f"{where}: shape {k} ({label!r})")
        shape = {**shape, "shape_type": kind, "points": points}
        if not points or (kind != "polygon" and len(points) != 2):
            raise DataError(f"{where}: shape {k} ({label!r}, {kind}) has {len(points)} points",
                            "a rectangle or circle has 2 points, a polygon 3 or more")
        if label not in index_of:
            if not grow:
                raise DataError(f"{where}: shape {k} has label {label!r}, which the class table lacks",
                                "add it to labels.txt (or the class table passed in), or label it __ignore__")
            index_of[label] = len(index_of)
        group_id = shape.get("group_id")
        group_id = group_id if group_id is None or isinstance(group_id, int | str) else str(group_id)
        groups.setdefault((label, ("shape", k) if group_id is None else group_id), []).append((k, shape))
    instances = []
    for (label, _), shapes in groups.items():
        short = [k for k, s in shapes if (s.get("shape_type") or "polygon") == "polygon" and len(s["points"]) < 3]
        kept = [(k, s) for k, s in shapes if k not in short]
        if short and not kept:
            n = len(data["shapes"][short[0]]["points"])
            raise DataError(f"{where}: shape {short[0]} ({label!r}) is a polygon of {n} points (a polygon needs 3)",
                            "fix or delete the shape")
        for k in short:
            fixes.append(f"{where}: shape {k} ({label!r}) is a polygon of fewer than 3 points, dropped; its "
                         f"instance keeps its other shapes")
        mask = np.zeros(shape_hw, dtype=bool)
        polygons = []
        for _, s in kept:
            kind = s.get("shape_type") or "polygon"
            mask |= shape_mask(shape_hw, s["points"], kind)
            polygons.append(shape_polygon(s["points"], kind))
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        x, y, w, h = mask_utils.toBbox(rle)
        instances.append((f"{where}, shape {kept[0][0]}",
                          Instance(np.array([x, y, x + w, y + h], dtype=np.float64), index_of[label], polygons, mask)))
    return instances


def _points(points, where: str) -> list[list[float]]:
    """A shape's points as [x, y] float pairs; DataError unless they are finite numbers within 1e6 px."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        pts = None
    if pts is None or (pts.size and (pts.ndim != 2 or pts.shape[1] != 2)):
        raise DataError(f"{where}: points are not a list of [x, y] pairs of numbers", "fix or delete the shape")
    if not (np.isfinite(pts).all() and (np.abs(pts) < 1e6).all()):
        raise DataError(f"{where}: a point is not finite or lies far outside any image", "fix or delete the shape")
    return pts.reshape(-1, 2).tolist()


def shape_mask(shape_hw: tuple[int, int], points: list, kind: str) -> np.ndarray:
    """(H, W) bool pixels of one shape, as labelme's `utils.shape_to_mask` draws them with PIL."""
    canvas = Image.fromarray(np.zeros(shape_hw, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    xy = [tuple(p) for p in points]
    if kind == "circle":
        (cx, cy), (px, py) = xy
        d = np.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def shape_polygon(points: list, kind: str) -> np.ndarray:
    """(K, 2) float64 outline of one shape: a polygon's points as stored, a rectangle's 4 corners, a circle as
    labelme2coco's n-gon (n = max(pi / arccos(1 - 1 / r), 12))."""
    pts = np.asarray(points, dtype=np.float64)
    if kind == "rectangle":
        (x0, x1), (y0, y1) = np.sort(pts[:, 0]), np.sort(pts[:, 1])
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if kind == "circle":
        (x1, y1), (x2, y2) = pts
        r = float(np.linalg.norm([x2 - x1, y2 - y1]))
        n = max(int(np.pi / np.arccos(1 - 1 / r)), 12) if r > 0.5 else 12
        i = np.arange(n)
        return np.stack([x1 + r * np.sin(2 * np.pi / n * i), y1 + r * np.cos(2 * np.pi / n * i)], axis=1)
    return pts


# -- labelme2coco ---------------------------------------------------------------------------------------------

def labelme_to_coco(path: str | Path, labels_file: str | Path | None = None,
                    fixes: list[str] | None = None) -> dict:
    """The COCO dict labelme's `labelme2coco.py <path> <out> --labels <labels_file>` writes, without the images.

    Same categories (id = line of labels.txt - 1, so `_background_` = 0), images (`JPEGImages/<stem>.jpg`,
    ids in sorted file order, where labelme2coco takes glob order), annotations (polygons as labelme stores
    them; area and bbox by pycocotools from the shape_to_mask union). One deliberate difference: a rectangle's
    segmentation is its 4 corners, where labelme2coco's current code writes the 2 stored points (its
    rectangle branch is overwritten by the following `else`). Shapes of labels not in labels.txt are an
    error here, labelme2coco drops them silently; a polygon of fewer than 3 points is dropped, and reported in
    `fixes`, when its instance has other shapes (labelme2coco fails on it).
    """
    path = Path(path)
    if labels_file is None:  # labels.txt beside the files, or one folder up (labelme's examples)
        labels_file = next((f for f in (path / "labels.txt", path.parent / "labels.txt") if f.is_file()), None)
        if labels_file is None:
            raise DataError(f"no labels.txt in {path} or {path.parent}", "pass labels_file (labelme2coco's "
                            "--labels: __ignore__, _background_, then one class per line)")
    elif not Path(labels_file).is_file():
        raise DataError(f"labels file {labels_file}: no such file", "pass labelme2coco's --labels file")
    names = [n for n in read_names(Path(labels_file)) if n != IGNORE]
    index_of = {name: i for i, name in enumerate(names)}
    now = datetime.datetime.now()
    out: dict = {
        "info": {"description": None, "url": None, "version": None, "year": now.year, "contributor": None,
                 "date_created": now.strftime("%Y-%m-%d %H:%M:%S.%f")},
        "licenses": [{"url": None, "id": 0, "name": None}], "type": "instances",
        "images": [], "categories": [{"supercategory": None, "id": i, "name": n} for i, n in enumerate(names)],
        "annotations": [],
    }
    for image_id, file in enumerate(sorted(path.glob("*.json"))):
        data = _load(file)
        height, width = int(data["imageHeight"]), int(data["imageWidth"])
        out["images"].append({"license": 0, "url": None, "file_name": f"JPEGImages/{file.stem}.jpg",
                              "height": height, "width": width, "date_captured": None, "id": image_id})
        for _, inst in _instances(data, (height, width), index_of, False, str(file),
                                  fixes if fixes is not None else []):
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            out["annotations"].append({
                "id": len(out["annotations"]), "image_id": image_id, "category_id": inst.cls,
                "segmentation": [p.ravel().tolist() for p in inst.polygons],
                "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).flatten().tolist(),
                "iscrowd": 0})
    return out

