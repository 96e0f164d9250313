"""Image labels in the ecosystem's formats, read into and written from recon3d's `Labels`.

Formats, one module each: YOLO txt + ultralytics data yaml (`labels_yolo`), COCO JSON (`labels_coco`), labelme
JSON and its COCO export (`labels_labelme`), VOC segmentation PNGs (`labels_voc`). `read_labels` picks the
reader from the path. Every reader takes the scene's `ImageInfo`s and matches each label file's image to one
of them by name: the exact name, else the one sharing the most trailing path components, extensions aside
(a unique basename or stem will do). It returns a `LabelSet`: the class table, labels per scene image name,
and `fixes`, one line per repair (a box clipped to the image, an instance dropped, an unknown image skipped).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recon3d.errors import DataError
from recon3d.io import labels_coco, labels_labelme, labels_voc, labels_yolo
from recon3d.io.labels_coco import coco_dict, read_coco, write_coco
from recon3d.io.labels_common import LabelSet, UnknownImages
from recon3d.io.labels_labelme import labelme_to_coco, read_labelme
from recon3d.io.labels_voc import read_voc, write_voc
from recon3d.io.labels_yolo import read_yolo, write_yolo, write_yolo_dataset
from recon3d.scene import ImageInfo

__all__ = ["LabelSet", "UnknownImages", "coco_dict", "labelme_to_coco", "labels_coco", "labels_labelme",
           "labels_voc", "labels_yolo", "read_coco", "read_labelme", "read_labels", "read_voc", "read_yolo",
           "write_coco", "write_voc", "write_yolo", "write_yolo_dataset"]


def read_labels(path: str | Path, images: Sequence[ImageInfo], class_names: Sequence[str] | None = None,
                unknown_images: UnknownImages = "error") -> LabelSet:
    """Read labels in whichever format `path` holds, for the scene images `images`.

    - a `.yaml` / `.yml`: an ultralytics data yaml (YOLO);
    - a `.json`: labelme when it has `shapes`, else COCO;
    - a folder with SegmentationClass/: VOC;
    - a folder with data yamls: YOLO through them; with `.json` files (also under `annotations/`): labelme
      when they are labelme files, else COCO, every file read; with `.txt` files: a YOLO labels folder.
    `class_names` is the class table to map every file's names onto (unknown names are an error); without it
    the files' own class lists must agree.
    """
    path = Path(path)
    kw = dict(class_names=class_names, unknown_images=unknown_images)
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return read_yolo(path, images, **kw)
        if path.suffix.lower() == ".json":
            return (read_labelme if _json_kind(path) == "labelme" else read_coco)(path, images, **kw)
    elif path.is_dir():
        if (path / labels_voc.CLASS_DIR).is_dir():
            return read_voc(path, images, **kw)
        yamls = sorted(f for pattern in ("*.yaml", "*.yml") for f in path.glob(pattern))
        if yamls:
            return read_yolo(yamls, images, **kw)
        jsons = sorted(path.glob("*.json")) + sorted((path / "annotations").glob("*.json"))
        if jsons:
            kinds = {f: _json_kind(f) for f in jsons}
            if set(kinds.values()) == {"labelme"}:
                folders = {f.parent for f in jsons}
                if len(folders) > 1:
                    raise DataError(f"{path} has labelme files both in it and in annotations/",
                                    "pass the one folder that holds them")
                return read_labelme(folders.pop(), images, **kw)
            if set(kinds.values()) == {"coco"}:
                return read_coco(jsons, images, **kw)
            found = ", ".join(f"{f.name}: {kind}" for f, kind in list(kinds.items())[:4])
            raise DataError(f"{path} holds JSON files of several kinds ({found})",
                            "pass the labelme folder or the COCO file itself")
        if any(f.name != "classes.txt" for f in path.rglob("*.txt")):
            return read_yolo(path, images, **kw)
    else:
        raise DataError(f"label path {path} does not exist", "pass a COCO / labelme JSON, a YOLO data yaml or "
                        "labels folder, or a VOC folder")
    raise DataError(f"{path} holds no labels recon3d reads",
                    "pass a COCO / labelme JSON, a YOLO data yaml or labels folder, or a VOC folder "
                    "(with SegmentationClass/)")


def _json_kind(path: Path) -> str:
    """"labelme", "coco" or "other" for a JSON file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", "pass a readable JSON file") from exc
    if isinstance(data, dict) and "shapes" in data:
        return "labelme"
    return "coco" if isinstance(data, dict) and "annotations" in data else "other"
