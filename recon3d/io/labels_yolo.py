"""YOLO (ultralytics) labels: one `.txt` per image, one object per line, coordinates normalised by the image size.

A line is `c cx cy w h` (a box: centre and size) or `c x1 y1 x2 y2 ...` (a segment: polygon vertices, at least
three), optionally followed by a confidence (ultralytics' `save_conf`), so 4 or 5 numbers after the class are
a box, 6 or more an even number of vertex coordinates (odd: the last is the confidence). Class names come
from an ultralytics data yaml (`names:` as a dict {index: name} or a list) or are passed in.

Normalised x = pixel x / width in COLMAP's pixel convention, so a box (x0, y0, x1, y1) reads back to 1e-12 of
the image size. A segment's box is the extent of its vertices, as ultralytics computes it; YOLO holds no
masks, so instances read from YOLO have polygons but `masks` is None.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from recon3d.errors import DataError
from recon3d.io.files import atomic_write, read_text
from recon3d.io.labels_common import (
    ImageIndex,
    Instance,
    LabelSet,
    UnknownImages,
    box_of_polygons,
    check_classes,
    class_table,
    images_by_name,
    make_labels,
    read_names,
)
from recon3d.scene import ImageInfo, Labels

SPLITS = ("train", "val", "test")


def read_yolo(path: str | Path | Sequence[str | Path], images: Sequence[ImageInfo],
              class_names: Sequence[str] | None = None, unknown_images: UnknownImages = "error") -> LabelSet:
    """Read YOLO labels: a data yaml (or several), or a labels folder (`.txt` files, searched recursively).

    A yaml's labels are found where ultralytics looks: its `train` / `val` / `test` image folders (relative to
    `path:`, else to the yaml's folder) with the last `images` component replaced by `labels`, else a `labels/`
    folder beside the yaml. Without a yaml the class names are `class_names` (or a `classes.txt` in or beside
    the folder); with one, its names map onto `class_names` when that is given. Several yamls must name the
    same classes unless `class_names` is given.
    """
    paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    sources: dict[str, tuple[list[str] | None, Path, list[Path]]] = {}  # key -> (names, root, label files)
    split_of: dict[Path, str] = {}  # label file -> the yaml split whose folder holds it
    for p in paths:
        if p.suffix.lower() in (".yaml", ".yml"):
            names, root, folders = _read_data_yaml(p)
        elif p.is_dir():
            root = p.parent if p.name == "labels" else p
            classes_txt = next((f for f in (p / "classes.txt", root / "classes.txt") if f.is_file()), None)
            names = read_names(classes_txt) if classes_txt else None
            folders = [(p, "")]
        else:
            raise DataError(f"{p} is neither a YOLO data yaml nor a folder of YOLO labels",
                            "pass a data.yaml or the labels folder")
        found = {f: split for folder, split in folders for f in folder.rglob("*.txt") if f.name != "classes.txt"}
        split_of.update(found)  # each folder walked once: its label files, with the split they are under
        sources[str(p)] = (names, root, sorted(found))
    if any(names is None for names, _, _ in sources.values()) and class_names is None:
        unnamed = next(Path(key) for key, (names, _, _) in sources.items() if names is None)
        raise DataError(f"{unnamed} gives no class names (no data yaml, no classes.txt)",
                        f"put a classes.txt in {unnamed} (one class name per line, in the order of the class ids), "
                        "or --set ingest.labels=DATA.yaml, the data yaml that names the classes")
    named = {key: names for key, (names, _, _) in sources.items() if names is not None}
    table, mapping = class_table(named, class_names)
    index, fixes = ImageIndex(images), []
    labels: dict[str, Labels] = {}
    splits: dict[str, str] = {}
    for key, (names, root, files) in sources.items():
        local_to_table = mapping.get(key, np.arange(len(table), dtype=np.int32))
        for file in files:
            image = index.find(_image_ref(file, root), file, unknown_images, fixes)
            if image is None:
                continue
            if image.name in labels:
                raise DataError(f"{file} labels image {image.name}, which another label file labels too",
                                "keep one label file per image")
            instances = _read_txt(file, image, local_to_table, len(names) if names else len(table))
            labels[image.name], _ = make_labels(instances, image, fixes)
            if split_of[file]:
                splits[image.name] = split_of[file]
    if not any(split in ("val", "test") for split in splits.values()):  # train only (or val: images/train, as
        splits = {}  # coco128's yaml): nothing held out by the labels, so the labelling stages' own rule holds
    return LabelSet(table, labels, fixes, splits=splits)


def _read_data_yaml(path: Path) -> tuple[list[str], Path, list[tuple[Path, str]]]:
    """(class names, dataset root, label folders each with its split: "train" / "val" / "test", "" for a
    `labels/` folder beside the yaml) of an ultralytics data yaml."""
    try:
        meta = yaml.safe_load(read_text(path))
    except (OSError, yaml.YAMLError, RecursionError) as exc:
        raise DataError(f"cannot read YOLO data yaml {path}: {exc}", "pass a readable data.yaml") from exc
    if not isinstance(meta, dict) or "names" not in meta:
        raise DataError(f"{path} has no `names:`", "list the classes under names: (a list or {index: name})")
    names = meta["names"]
    if isinstance(names, dict):
        keys = list(names)
        if not all(type(k) is int for k in keys) or sorted(keys) != list(range(len(keys))):
            raise DataError(f"{path}: `names:` keys are {keys[:8]}, not 0..{len(keys) - 1}",
                            "number the classes 0, 1, 2, ... without gaps")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise DataError(f"{path}: `names:` is a {type(names).__name__}, not a list of class names",
                        "list the classes under names: (a list or {index: name})")
    names = [str(n) for n in names]
    root = Path(str(meta.get("path") or "").replace("\0", ""))
    if not root.is_absolute() or not root.is_dir():
        root = path.parent / root if (path.parent / root).is_dir() else path.parent
    folders: dict[Path, str] = {}  # label folder -> its split, in the yaml's order
    for split in SPLITS:
        entries = meta.get(split) or []
        if not isinstance(entries, str | list):
            raise DataError(f"{path}: `{split}:` is a {type(entries).__name__}",
                            f"give {split}: a folder (images/{split}) or a list of folders")
        for entry in [entries] if isinstance(entries, str) else entries:
            parts = list(PurePosixPath(str(entry).replace("\0", "")).parts)
            if "images" in parts:
                parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
                folder = root.joinpath(*parts)
                if folder.is_dir():  # one folder under two splits (val: images/train) has none
                    folders[folder] = "" if folder in folders else split
    if not folders and (root / "labels").is_dir():
        folders = {root / "labels": ""}
    if not folders:
        raise DataError(f"{path}: no label folder found (looked for the split folders' labels/ and "
                        f"{root / 'labels'})", "put the labels under labels/<split>/ beside images/<split>/")
    return names, root, list(folders.items())


def _image_ref(file: Path, root: Path) -> str:
    """The image a label file stands for: its path under `root`, `labels` -> `images`, without extension."""
    parts = list(file.relative_to(root).with_suffix("").parts) if file.is_relative_to(root) else [file.stem]
    if "labels" in parts:
        parts[len(parts) - 1 - parts[::-1].index("labels")] = "images"
    return "/".join(parts)


def _read_txt(file: Path, image: ImageInfo, local_to_table: np.ndarray,
              n_classes: int) -> list[tuple[str, Instance]]:
    scale = np.array([image.width, image.height], dtype=np.float64)
    instances = []
    for number, line in enumerate(read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            values = [float(v) for v in line.split()]
        except ValueError as exc:
            raise DataError(f"{where}: {line.strip()[:60]!r} is not a YOLO line ({exc})",
                            "write `class cx cy w h` or `class x1 y1 x2 y2 ...`, numbers only") from exc
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{where}: {line.strip()[:60]!r} holds a number that is not finite",
                            "write finite numbers only")
        c, rest = values[0], values[1:]
        if c != int(c) or not 0 <= c < n_classes:
            raise DataError(f"{where}: class {values[0]:g} is not one of the {n_classes} classes 0..{n_classes - 1}",
                            "fix the class index or the class names")
        cls = int(local_to_table[int(c)])
        score = None
        if len(rest) in (4, 5):
            cx, cy, w, h = np.array(rest[:4]) * np.r_[scale, scale]
            inst = Instance(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), cls)
            score = rest[4] if len(rest) == 5 else None
        elif len(rest) >= 6:
            if len(rest) % 2:
                score, rest = rest[-1], rest[:-1]
            polygon = np.array(rest, dtype=np.float64).reshape(-1, 2) * scale
            inst = Instance(box_of_polygons([polygon]), cls, polygons=[polygon])
        else:
            raise DataError(f"{where}: {len(rest)} numbers after the class; a box has 4, a segment 6 or more",
                            "fix or remove the line")
        inst.score = score
        instances.append((where, inst))
    return instances


# -- writing ------------------------------------------------------------------------------------------------

def write_yolo(folder: str | Path, labels: Mapping[str, Labels], images: Sequence[ImageInfo],
               class_names: Sequence[str] | None = None) -> list[Path]:
    """Write one `<folder>/<image name without extension>.txt` per labelled image, atomically each.

    An instance with polygons is written as a segment (several polygons joined into one as ultralytics'
    COCO converter does), else as a box; scores, when present, follow as the confidence. Returns the files.
    """
    folder = Path(folder)
    if class_names is not None:
        check_classes(labels, class_names, folder)
    written = []
    for image in images_by_name(images, labels, folder):
        text = _yolo_text(labels[image.name], image)
        path = folder / PurePosixPath(image.name).with_suffix(".txt")
        written.append(atomic_write(path, lambda f, text=text: f.write(text), mode="w"))
    return written


def _yolo_text(lab: Labels, image: ImageInfo) -> str:
    scale = np.array([image.width, image.height], dtype=np.float64)
    lines = []
    for i, polygons in enumerate(lab.polygons(j) for j in range(len(lab))):
        if polygons:
            xy = polygons[0] if len(polygons) == 1 else _merge_segments(polygons)
            numbers = (np.asarray(xy, dtype=np.float64) / scale).ravel()
        else:
            x0, y0, x1, y1 = lab.boxes[i]
            numbers = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / np.r_[scale, scale]
        if lab.scores is not None:
            numbers = np.r_[numbers, lab.scores[i]]
        lines.append(" ".join([str(int(lab.classes[i]))] + [f"{v:.12g}" for v in numbers]))
    return "".join(line + "\n" for line in lines)


def _merge_segments(polygons: list[np.ndarray]) -> np.ndarray:
    """Several polygons of one instance as one, joined at their closest vertices (ultralytics' own rule).

    ultralytics is imported as the detect stage imports it (offline, torchvision made importable, the globals
    it patches put back; settings under recon3d's cache), not bare: a bare import here broke every later
    ultralytics use in the process ("operator torchvision::nms does not exist")."""
    from recon3d.labels.yolo import load_ultralytics
    from recon3d.radiance.native import cache_dir

    load_ultralytics(cache_dir() / "ultralytics")
    from ultralytics.data.converter import merge_multi_segment  # heavy import, only for multi-polygon instances

    return np.concatenate(merge_multi_segment([p.ravel().tolist() for p in polygons]))


def write_yolo_dataset(folder: str | Path, class_names: Sequence[str], labels: Mapping[str, Labels],
                       images: Sequence[ImageInfo], splits: Mapping[str, str] | None = None) -> Path:
    """Write what ultralytics trains from: `images/<split>/<name>`, `labels/<split>/<name>.txt`, `data.yaml`
    (`<name>`: the image name, a folder in it called `images` written `images_`).

    splits: image name -> "train" / "val" / "test"; None uses each image's `ImageInfo.split` ("" -> train).
    Only images with an entry in `labels` are written (an unlabelled image is not an image without objects;
    pass `Labels` with no rows for those). Image files are symlinked, copied where a link cannot be made.
    `data.yaml` has the folder's absolute `path:`, one entry per split present (`val` falls back to the train
    images when there is no val split, as ultralytics needs one) and `names: {index: name}`. Returns its path.
    """
    folder = Path(os.path.abspath(folder))
    check_classes(labels, class_names, folder)
    by_split: dict[str, list[ImageInfo]] = {}
    for image in images_by_name(images, labels, folder):
        split = (splits.get(image.name, image.split) if splits is not None else image.split) or "train"
        if split not in SPLITS:
            raise DataError(f"cannot write {folder}: image {image.name} has split {split!r}",
                            f"use one of {', '.join(SPLITS)}")
        by_split.setdefault(split, []).append(image)
    for split, split_images in by_split.items():
        flat = [dataclasses.replace(im, name=_dataset_name(im.name)) for im in split_images]
        for image in flat:
            _link_or_copy(Path(image.path), folder / "images" / split / image.name)
        write_yolo(folder / "labels" / split, {f.name: labels[im.name] for f, im in zip(flat, split_images,
                                                                                          strict=True)}, flat)
    meta: dict = {"path": folder.as_posix()}
    for split in SPLITS:
        if split in by_split:
            meta[split] = f"images/{split}"
    meta.setdefault("val", meta.get("train", "images/train"))
    meta["names"] = dict(enumerate(class_names))
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return atomic_write(folder / "data.yaml", lambda f: f.write(text), mode="w")


def _dataset_name(name: str) -> str:
    """`name` without path components called "images": ultralytics finds an image's label by replacing the
    last "/images/" of its path with "/labels/", which a scene name such as "images/000.png" would break."""
    return "/".join(part + "_" if part == "images" else part for part in PurePosixPath(name).parts)


def _link_or_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise DataError(f"image file {source} does not exist", "ingest the images again, or fix the scene's paths")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(os.path.abspath(source), target)
    except OSError:
        shutil.copy2(source, target)
