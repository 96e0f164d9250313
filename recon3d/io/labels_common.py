"""What every label format shares: the `LabelSet` a reader returns, matching label files to the scene's images,
one class table over several files, and turning read instances into `Labels` (boxes clipped to the image).

Pixels follow COLMAP's convention everywhere (see `recon3d.scene.Labels`): a box (x0, y0, x1, y1) has corners
in continuous pixel coordinates, so the box round pixel (row r, column c) is (c, r, c + 1, r + 1), exactly
COCO's [x, y, w, h] = [c, r, 1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import read_text
from recon3d.scene import ImageInfo, Labels

UnknownImages = Literal["error", "skip"]


@dataclass(frozen=True)
class LabelSet:
    """Labels read from one data set, ready to attach to a scene (`class_names`, `labels`)."""

    class_names: tuple[str, ...]  # the class table: Labels.classes index into it
    labels: dict[str, Labels]  # scene image name -> labels
    fixes: list[str] = field(default_factory=list)  # what was repaired or left out while reading, one line each
    category_ids: tuple[int, ...] | None = None  # COCO category id of each class, when read from COCO
    crowd: dict[str, np.ndarray] = field(default_factory=dict)  # image name -> (N,) bool COCO iscrowd, if any
    void: dict[str, np.ndarray] = field(default_factory=dict)  # image name -> (H, W) bool VOC void (255) pixels
    splits: dict[str, str] = field(default_factory=dict)  # image name -> "train" / "val" / "test" the labels give


@dataclass
class Instance:
    """One object while a file is read, before it becomes a row of `Labels`."""

    box: np.ndarray  # (4,) float64 xyxy pixels
    cls: int  # index into the class table
    polygons: list[np.ndarray] = field(default_factory=list)  # each (K, 2) float64 pixels, K >= 3
    mask: np.ndarray | None = None  # (H, W) bool
    score: float | None = None
    crowd: bool = False


# -- images -------------------------------------------------------------------------------------------------

class ImageIndex:
    """Finds the scene image a label file names: the exact name, else the image whose name shares the most
    trailing path components with it, extensions aside (so `images/train/0009` finds `train/0009.jpg`, a
    basename or a stem finds a unique image), preferring the same extension on a tie."""

    def __init__(self, images: Sequence[ImageInfo]):
        self.images = tuple(images)
        self._by_name = {im.name: im for im in self.images}
        self._by_stem: dict[str, list[ImageInfo]] = {}
        for im in self.images:
            self._by_stem.setdefault(PurePosixPath(im.name).stem, []).append(im)

    def find(self, ref: str, source: str | Path, unknown_images: UnknownImages,
             fixes: list[str]) -> ImageInfo | None:
        """The image `ref` names in label file `source`; None (reported in `fixes`) when `unknown_images` is
        "skip" and the scene has no such image, DataError when it is "error" or the name is ambiguous."""
        ref = str(ref).replace("\\", "/")
        if ref in self._by_name:
            return self._by_name[ref]
        path = PurePosixPath(ref)
        # the ref may carry an extension ("0009.jpg", "0009.txt") or not ("cam.left.0009": no suffix to strip)
        candidates = {id(im): im for key in (path.stem, path.name) for im in self._by_stem.get(key, [])}
        scored = [(max(_common_tail(path.with_suffix("").parts, PurePosixPath(im.name).with_suffix("").parts),
                       _common_tail(path.parts, PurePosixPath(im.name).with_suffix("").parts)),
                   PurePosixPath(im.name).suffix == path.suffix, im) for im in candidates.values()]
        if scored:
            best = max((s, e) for s, e, _ in scored)
            found = [im for s, e, im in scored if (s, e) == best]
            if len(found) == 1:
                return found[0]
            raise DataError(f"{source} names image {ref!r}, which matches {len(found)} scene images "
                            f"({', '.join(im.name for im in found[:4])})",
                            "name the image by its full scene name in the label file")
        if unknown_images == "skip":
            fixes.append(f"{source}: image {ref!r} is not in the scene, its labels were skipped")
            return None
        sample = ", ".join(im.name for im in self.images[:5]) + (", ..." if len(self.images) > 5 else "")
        raise UnknownLabelImage(f"{source} labels image {ref!r}, which is not in the scene "
                                f"({len(self.images)} images: {sample or 'none'})",
                                "ingest that image too, fix the name in the label file, or pass "
                                "unknown_images='skip'")


class UnknownLabelImage(DataError):
    """A label file names an image the scene does not have (`unknown_images="error"`): the ingest stage
    words its fix as the setting a user types."""


def _common_tail(pa: tuple[str, ...], pb: tuple[str, ...]) -> int:
    """How many trailing path components `pa` and `pb` share."""
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def check_size(image: ImageInfo, width: int, height: int, source: str | Path) -> None:
    """DataError unless the label file's image size is the scene image's."""
    if (width, height) != (image.width, image.height):  # a string or float size is a wrong size too
        raise DataError(f"{source} gives image {image.name} the size {width}x{height}, the scene image is "
                        f"{image.width}x{image.height}", "label the images the scene holds (same resolution)")


# -- classes ------------------------------------------------------------------------------------------------

def class_table(names_of: Mapping[str, Sequence[str]],
                class_names: Sequence[str] | None) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """One class table for several label files, and for each file the table index of its local classes.

    names_of: file -> its class names in its own order (local index = position). Without `class_names` every
    file must list the same names in the same order (DataError naming two files and the differing names);
    with it, names map onto it by name and a name it lacks is an error.
    Returns (table, {file: (C_file,) int32 table index of each local class}).
    """
    if class_names is not None:
        table = tuple(class_names)
        index = {name: i for i, name in enumerate(table)}
        mapping = {}
        for file, names in names_of.items():
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DataError(f"{file} has classes {unknown[:8]} that the class table lacks "
                                f"({len(table)} classes: {list(table[:8])}{', ...' if len(table) > 8 else ''})",
                                "add them to the class table passed in, or relabel them")
            mapping[file] = np.array([index[n] for n in names], dtype=np.int32)
        return table, mapping
    items = list(names_of.items())
    if not items:
        return (), {}
    first_file, first = items[0]
    for file, names in items[1:]:
        if tuple(names) != tuple(first):
            only_a = [n for n in first if n not in names]
            only_b = [n for n in names if n not in first]
            detail = (f"only in the first: {only_a[:8]}, only in the second: {only_b[:8]}" if only_a or only_b
                      else "the same names in a different order")
            raise DataError(f"{first_file} and {file} have different class lists ({detail})",
                            "make the files list the same classes, or pass a class table (class_names) "
                            "to map every file's names onto")
    table = tuple(first)
    return table, {file: np.arange(len(table), dtype=np.int32) for file, _ in items}


# -- instances to Labels ------------------------------------------------------------------------------------

def box_of_mask(mask: np.ndarray) -> np.ndarray:
    """mask: (H, W) bool -> (4,) float64 xyxy pixel corners of its pixels; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return np.zeros(4)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def box_of_polygons(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """polygons: each (K, 2) pixels -> (4,) float64 xyxy extent of all their vertices."""
    xy = np.concatenate(polygons)
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float64)


def clip_box(box: np.ndarray, image: ImageInfo, where: str, fixes: list[str]) -> np.ndarray | None:
    """The box clipped to the image (reported in `fixes` when it changes); None when nothing of it is left."""
    clipped = np.clip(box, 0.0, [image.width, image.height, image.width, image.height])
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        fixes.append(f"{where}: box {_fmt(box)} is empty or outside the {image.width}x{image.height} image, "
                     f"dropped")
        return None
    if not np.array_equal(clipped, box):
        fixes.append(f"{where}: box {_fmt(box)} clipped to the {image.width}x{image.height} image")
    return clipped


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box) + "]"


def make_labels(instances: Sequence[tuple[str, Instance]], image: ImageInfo,
                fixes: list[str]) -> tuple[Labels, np.ndarray]:
    """Labels of one image from its read instances, each with the place it was read from (for `fixes`).

    Boxes are clipped to the image and instances left without a box are dropped, both reported. Masks,
    scores and polygons are filled when any instance has them: box-only instances get an all-False mask.
    Returns (labels, (N,) bool crowd flags).
    """
    kept = []
    for where, inst in instances:
        box = clip_box(np.asarray(inst.box, dtype=np.float64), image, where, fixes)
        if box is not None:
            inst.box = box
            kept.append(inst)
    n = len(kept)
    boxes = np.array([inst.box for inst in kept], dtype=np.float64).reshape(n, 4)
    classes = np.array([inst.cls for inst in kept], dtype=np.int32)
    scores = masks = None
    if any(inst.score is not None for inst in kept):
        scores = np.array([np.nan if inst.score is None else inst.score for inst in kept], dtype=np.float32)
    if any(inst.mask is not None for inst in kept):
        masks = np.zeros((n, image.height, image.width), dtype=bool)
        for i, inst in enumerate(kept):
            if inst.mask is not None:
                masks[i] = inst.mask
    poly = flat_polygons([(i, p) for i, inst in enumerate(kept) for p in inst.polygons])
    labels = Labels(boxes=boxes, classes=classes, scores=scores, masks=masks, **poly)
    return labels, np.array([inst.crowd for inst in kept], dtype=bool)


def flat_polygons(owned: Sequence[tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """(instance, polygon (K, 2)) pairs -> the `Labels` fields polygon_xy, polygon_offsets, polygon_instance;
    {} for no polygons."""
    if not owned:
        return {}
    return dict(polygon_xy=np.concatenate([p for _, p in owned]).astype(np.float64).reshape(-1, 2),
                polygon_offsets=np.r_[0, np.cumsum([len(p) for _, p in owned])].astype(np.int64),
                polygon_instance=np.array([i for i, _ in owned], dtype=np.int32))


def read_names(path: Path) -> list[str]:
    """The non-blank lines of a class-name list (classes.txt, labels.txt, class_names.txt), stripped."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def check_classes(labels: Mapping[str, Labels], class_names: Sequence[str], target: str | Path) -> None:
    """DataError before writing `target` when a class index is outside the class table."""
    for name, lab in labels.items():
        bad = lab.classes[(lab.classes < 0) | (lab.classes >= len(class_names))]
        if len(bad):
            raise DataError(f"cannot write {target}: image {name} has class index {int(bad[0])}, the class table "
                            f"has {len(class_names)} names", "pass the class table the labels index into")


def images_by_name(images: Sequence[ImageInfo], labels: Mapping[str, Labels],
                   target: str | Path) -> list[ImageInfo]:
    """The scene images that have labels, in scene order; DataError when labels name an image not given."""
    known = {im.name for im in images}
    missing = [name for name in labels if name not in known]
    if missing:
        raise DataError(f"cannot write {target}: labels for images {missing[:4]} that are not among the images "
                        f"given", "pass the scene's images (ImageInfo) for every labelled image")
    return [im for im in images if im.name in labels]
