"""COCO instance JSON (`images`, `annotations`, `categories`): boxes, polygons, RLE masks, iscrowd, scores.

COCO's `bbox` [x, y, w, h] uses the same pixel corners as recon3d (COLMAP), so boxes copy unchanged:
(x0, y0, x1, y1) = (x, y, x + w, y + h). Classes are matched to the class table by category *name*; the
category ids are kept in `LabelSet.category_ids` so that writing back keeps them (labelme's COCO export, for
one, has id 0 = `_background_`). Masks are what pycocotools makes of a segmentation: polygons rasterised by
`frPyObjects` (the rasterisation COCO's own evaluation uses) or an RLE decoded, compressed (`counts` a string)
or not (`counts` a list); an image where any annotation has a segmentation gets masks for all its instances,
all-False for the box-only ones. `iscrowd` goes to `LabelSet.crowd` (recon3d's Labels have no such field).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from recon3d.errors import DataError
from recon3d.io.files import read_json, write_json
from recon3d.io.labels_common import (
    ImageIndex,
    Instance,
    LabelSet,
    UnknownImages,
    box_of_mask,
    check_classes,
    check_size,
    class_table,
    images_by_name,
    make_labels,
)
from recon3d.scene import ImageInfo, Labels


def read_coco(path: str | Path | Sequence[str | Path], images: Sequence[ImageInfo],
              class_names: Sequence[str] | None = None, unknown_images: UnknownImages = "error") -> LabelSet:
    """Read one or several COCO JSON files (e.g. instances_train.json and instances_val.json).

    Without `class_names` every file must have the same categories (names and ids); with it, category names map
    onto it and a name it lacks is an error. A polygon with fewer than 3 vertices is dropped (and reported)
    when its annotation has a bbox, else it is an error.
    """
    files = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    data = {str(f): _load(f) for f in files}
    names_of = {f: [str(c["name"]) for c in d["categories"]] for f, d in data.items()}
    table, mapping = class_table(names_of, class_names)
    ids_of = {f: [int(c["id"]) for c in d["categories"]] for f, d in data.items()}
    first = str(files[0])
    for f, ids in ids_of.items():
        if class_names is None and ids != ids_of[first]:
            raise DataError(f"{first} and {f} give the same categories different ids ({ids_of[first][:6]} and "
                            f"{ids[:6]})", "renumber the categories alike, or pass a class table (class_names)")
    category_ids = _category_ids(table, names_of, ids_of)
    index, fixes = ImageIndex(images), []
    labels: dict[str, Labels] = {}
    crowd: dict[str, np.ndarray] = {}
    for file, d in data.items():
        cls_of = {cid: int(mapping[file][k]) for k, cid in enumerate(ids_of[file])}
        by_image: dict[int, list[tuple[int, dict]]] = {}
        for k, ann in enumerate(d["annotations"]):
            by_image.setdefault(ann.get("image_id"), []).append((k, ann))
        orphans = by_image.keys() - {record.get("id") for record in d["images"]}
        if orphans:
            fixes.append(f"{file}: {sum(len(by_image[i]) for i in orphans)} annotations name image ids that "
                         f"images[] lacks ({sorted(orphans, key=str)[:4]}), skipped")
        for record in d["images"]:
            image = index.find(str(record.get("file_name", "")), file, unknown_images, fixes)
            if image is None:
                continue
            if image.name in labels:
                raise DataError(f"{file} labels image {image.name} a second time (image id {record.get('id')})",
                                "keep one images[] entry per image")
            if "width" in record and "height" in record:
                check_size(image, record["width"], record["height"], file)
            instances = [_instance(ann, cls_of, image, f"{file}, image {image.name}, annotation {k}", fixes)
                         for k, ann in by_image.get(record.get("id"), [])]
            labels[image.name], flags = make_labels(instances, image, fixes)
            if flags.any():
                crowd[image.name] = flags
    return LabelSet(table, labels, fixes, category_ids, crowd)


def _load(file: Path) -> dict:
    try:
        d = read_json(file)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read COCO file {file}: {exc}", "pass a readable COCO JSON file") from exc
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(d, dict) or key not in d]
    if missing:
        raise DataError(f"{file} is not a COCO instances file (no {', '.join(missing)})",
                        "pass a COCO JSON with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(d[key], list) or not all(isinstance(item, dict) for item in d[key]):
            raise DataError(f"{file}: `{key}` is not a list of objects", "pass a COCO JSON as COCO tools write it")
    bad = [c for c in d["categories"] if not _is_int(c.get("id")) or "name" not in c]
    if bad:
        raise DataError(f"{file}: category {bad[0]!r} has no integer id or no name",
                        "give every category an integer id and a name")
    ids = [r.get("id") for r in d["images"]] + [a.get("image_id") for a in d["annotations"]]
    if not all(i is None or isinstance(i, int | str) for i in ids):
        raise DataError(f"{file}: an image id is neither an integer nor a string", "number the images")
    return d


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(values, count: int | None, limit: float) -> np.ndarray | None:
    """`values` as float64 when it is a list of (`count`) finite numbers within +-`limit`, else None."""
    if not isinstance(values, list) or (count is not None and len(values) != count) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    array = np.asarray(values, dtype=np.float64)
    return array if np.isfinite(array).all() and (np.abs(array) <= limit).all() else None


def _rle_counts(counts, h: int, w: int) -> list[int] | None:
    """The run lengths of an RLE's `counts` (a list, or COCO's compressed string, decoded as pycocotools'
    rleFrString does), or None unless they are non-negative and cover the h x w pixels exactly."""
    if isinstance(counts, list):
        runs = counts if all(_is_int(c) for c in counts) else None
    elif isinstance(counts, str):
        runs, p = [], 0
        while p < len(counts) and runs is not None:
            x, k, more = 0, 0, True
            while more:
                c = ord(counts[p]) - 48 if p < len(counts) and k < 13 else -1
                if not 0 <= c < 64:
                    return None
                x |= (c & 0x1F) << (5 * k)
                more, p, k = bool(c & 0x20), p + 1, k + 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            runs.append(x + runs[-2] if len(runs) > 2 else x)
    else:
        return None
    return runs if runs is not None and all(r >= 0 for r in runs) and sum(runs) == h * w else None


def _category_ids(table: tuple[str, ...], names_of: Mapping[str, list[str]],
                  ids_of: Mapping[str, list[int]]) -> tuple[int, ...]:
    """The COCO id of each class of the table: the first file's id for its name, new ids for names no file has."""
    id_of: dict[str, int] = {}
    for f in names_of:
        for name, cid in zip(names_of[f], ids_of[f], strict=True):
            id_of.setdefault(name, cid)
    free = max(id_of.values(), default=0) + 1
    out = []
    for name in table:
        if name not in id_of:
            id_of[name], free = free, free + 1
        out.append(id_of[name])
    return tuple(out)


def _instance(ann: dict, cls_of: dict[int, int], image: ImageInfo, where: str,
              fixes: list[str]) -> tuple[str, Instance]:
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in cls_of:
        raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not in the file's categories",
                        "add the category or fix the annotation")
    h, w = image.height, image.width
    limit = 10.0 * max(h, w)  # a coordinate beyond this is no pixel of the image, nor near one
    box = None
    if ann.get("bbox") is not None:
        xywh = _numbers(ann["bbox"], 4, limit)
        if xywh is None:
            raise DataError(f"{where}: bbox {ann['bbox']!r} is not 4 finite numbers [x, y, w, h] near the image",
                            "fix or remove the bbox")
        x, y, bw, bh = xywh
        box = np.array([x, y, x + bw, y + bh])
    seg = ann.get("segmentation")
    if seg is not None and not isinstance(seg, list | dict):
        raise DataError(f"{where}: segmentation is a {type(seg).__name__}", "give polygons (a list) or an RLE")
    polygons, mask = [], None
    if isinstance(seg, list) and seg:
        for j, flat in enumerate(seg):
            if _numbers(flat, None, limit) is None:
                raise DataError(f"{where}: polygon {j} is not a list of finite numbers near the image",
                                "write polygons as [x1, y1, x2, y2, ...] in pixels")
            if len(flat) % 2:
                raise DataError(f"{where}: polygon {j} has an odd number ({len(flat)}) of coordinates",
                                "write polygons as [x1, y1, x2, y2, ...]")
            if len(flat) < 6:
                if box is None:
                    raise DataError(f"{where}: polygon {j} has {len(flat) // 2} points (a polygon needs 3) and the "
                                    f"annotation has no bbox", "fix or remove the annotation")
                fixes.append(f"{where}: polygon {j} has {len(flat) // 2} points (fewer than 3), dropped; "
                             "the box stays")
                continue
            polygons.append(np.asarray(flat, dtype=np.float64).reshape(-1, 2))
        if polygons:
            mask = polygon_mask(polygons, h, w)
    elif isinstance(seg, dict):
        if seg.get("size") != [h, w]:
            raise DataError(f"{where}: RLE size {seg.get('size')} is not the image's [{h}, {w}]",
                            "encode the mask at the image's resolution")
        runs = _rle_counts(seg.get("counts"), h, w)
        if runs is None:
            raise DataError(f"{where}: the RLE counts do not cover the image's {h} x {w} pixels",
                            "encode the mask with pycocotools (mask.encode) at the image's resolution")
        mask = _decode(mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w))
    if box is None:
        if mask is None:
            raise DataError(f"{where}: no bbox and no segmentation", "give the annotation a bbox")
        box = box_of_mask(mask)
    score = ann.get("score")
    if score is not None and _numbers([score], 1, np.inf) is None:
        raise DataError(f"{where}: score {score!r} is not a finite number", "fix or remove the score")
    return where, Instance(box, cls_of[ann["category_id"]], polygons, mask,
                           None if score is None else float(score), bool(ann.get("iscrowd", 0)))


def polygon_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """(H, W) bool union of `polygons` (each (K, 2) xy pixel corners, K >= 3) as COCO rasterises them
    (pycocotools' `frPyObjects`, what its evaluation uses): the one polygon -> mask rule of recon3d."""
    flat = [np.asarray(p, np.float64).ravel().tolist() for p in polygons if len(p) >= 3]
    if not flat:
        return np.zeros((height, width), dtype=bool)
    return _decode(mask_utils.merge(mask_utils.frPyObjects(flat, height, width)))


def _decode(rle: dict) -> np.ndarray:
    """(H, W) bool pixels of a COCO RLE."""
    with warnings.catch_warnings():  # pycocotools 2.0.11 on NumPy 2: "__array__ implementation doesn't accept..."
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


# -- writing ------------------------------------------------------------------------------------------------

def coco_dict(class_names: Sequence[str], labels: Mapping[str, Labels], images: Sequence[ImageInfo],
              category_ids: Sequence[int] | None = None, crowd: Mapping[str, np.ndarray] | None = None) -> dict:
    """The COCO instances dict of the labelled images (ids from 1, `file_name` = the scene name).

    Each instance is written with its polygons when it has some, else with its mask as an RLE (compressed;
    uncompressed for crowd instances, as COCO stores those) when the mask is not empty, else with its box
    only. `area` is the mask's pixel count, else the polygons' (rasterised by pycocotools), else w * h of the
    box. `category_ids` default to 1..C in class-table order; scores, when present, go to `score`.
    """
    check_classes(labels, class_names, "COCO")
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    if len(ids) != len(class_names):
        raise DataError(f"{len(ids)} category ids for {len(class_names)} classes", "pass one id per class")
    out = {"images": [], "annotations": [],
           "categories": [{"id": int(cid), "name": name} for cid, name in zip(ids, class_names, strict=True)]}
    for image_id, image in enumerate(images_by_name(images, labels, "COCO"), start=1):
        out["images"].append({"id": image_id, "file_name": image.name, "width": image.width, "height": image.height})
        lab = labels[image.name]
        flags = (crowd or {}).get(image.name, np.zeros(len(lab), dtype=bool))
        for i, polygons in enumerate(lab.polygons(j) for j in range(len(lab))):
            x0, y0, x1, y1 = (float(v) for v in lab.boxes[i])
            ann = {"id": len(out["annotations"]) + 1, "image_id": image_id, "category_id": int(ids[lab.classes[i]]),
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(flags[i])}
            has_mask = lab.masks is not None and lab.masks[i].any()
            if polygons:
                ann["segmentation"] = [p.ravel().tolist() for p in polygons]
            elif has_mask:
                ann["segmentation"] = rle_of(lab.masks[i], compressed=not flags[i])
            if has_mask:
                ann["area"] = float(lab.masks[i].sum())
            elif polygons:
                rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], image.height, image.width))
                ann["area"] = float(mask_utils.area(rle))
            if lab.scores is not None and np.isfinite(lab.scores[i]):
                ann["score"] = float(lab.scores[i])
            out["annotations"].append(ann)
    return out


def write_coco(path: str | Path, class_names: Sequence[str], labels: Mapping[str, Labels],
               images: Sequence[ImageInfo], category_ids: Sequence[int] | None = None,
               crowd: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write `coco_dict(...)` to `path`, atomically. Pass a LabelSet's `category_ids` and `crowd` to keep them."""
    check_classes(labels, class_names, path)
    return write_json(path, coco_dict(class_names, labels, images, category_ids, crowd))


def rle_of(mask: np.ndarray, compressed: bool = True) -> dict:
    """mask: (H, W) bool -> COCO RLE {"size": [H, W], "counts": str (compressed) or list of run lengths}."""
    mask = np.asarray(mask, dtype=bool)
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    flat = mask.ravel(order="F").astype(np.int8)  # column-major, as COCO runs go
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat.size and flat[0] else counts}
