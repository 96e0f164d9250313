"""PASCAL VOC segmentation PNGs: `SegmentationClass/<stem>.png` (class index per pixel) and
`SegmentationObject/<stem>.png` (instance index per pixel), palette PNGs with VOC's colour map.

Reading: every non-zero instance index of SegmentationObject is one instance; its mask is its pixels, its
class the SegmentationClass value under them (the majority, reported in `fixes`, should they disagree), its
box the mask's pixel extent. Without SegmentationObject each class present becomes one instance. The class
table is `class_names.txt` beside the two folders (labelme2voc writes it; value 0 is `_background_`), else
`class_names`, else VOC's 21 classes; values index it directly.

Void: value 255 in either PNG (VOC's object borders and "difficult" regions, labelme's `__ignore__`) belongs
to no instance. Those pixels go to `LabelSet.void` (image name -> (H, W) bool) and are written back as 255
when passed to `write_voc`.

What VOC cannot represent: polygons (written as their PIL rasterisation when an instance has no mask; on
reading there are none), scores, box-only instances (an error when writing), overlapping masks (a later
instance overwrites an earlier one, as labelme2voc does), more than 254 instances or classes per image, and
the instance numbering itself (instances are written 1..N in Labels order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from recon3d.errors import DataError
from recon3d.io.files import atomic_write
from recon3d.io.labels_common import (
    ImageIndex,
    Instance,
    LabelSet,
    UnknownImages,
    box_of_mask,
    check_classes,
    class_table,
    images_by_name,
    make_labels,
    read_names,
)
from recon3d.io.labels_labelme import shape_mask
from recon3d.scene import ImageInfo, Labels

VOID = 255
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
CLASS_DIR, OBJECT_DIR = "SegmentationClass", "SegmentationObject"


def voc_colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 VOC palette: the bits of the index spread over R, G, B from the high bit down."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        cmap[i] = rgb
    return cmap


def read_voc(folder: str | Path, images: Sequence[ImageInfo], class_names: Sequence[str] | None = None,
             unknown_images: UnknownImages = "error") -> LabelSet:
    """Read a VOC folder holding SegmentationClass/ and (optionally) SegmentationObject/ PNGs."""
    folder = Path(folder)
    if not (folder / CLASS_DIR).is_dir():
        raise DataError(f"{folder} has no {CLASS_DIR}/ folder", "pass the VOC folder that holds SegmentationClass/")
    names_txt = folder / "class_names.txt"
    if names_txt.is_file():
        listed = read_names(names_txt)
        table, mapping = class_table({str(names_txt): listed}, class_names)
        value_to_class = mapping[str(names_txt)]
    else:
        table = tuple(class_names) if class_names is not None else VOC_CLASSES
        value_to_class = np.arange(len(table), dtype=np.int32)
    index, fixes = ImageIndex(images), []
    labels: dict[str, Labels] = {}
    void: dict[str, np.ndarray] = {}
    for class_png in sorted((folder / CLASS_DIR).glob("*.png")):
        image = index.find(class_png.stem, class_png, unknown_images, fixes)
        if image is None:
            continue
        cls = _indices(class_png, image)
        object_png = folder / OBJECT_DIR / class_png.name
        obj = _indices(object_png, image) if object_png.is_file() else None
        pixels_void = (cls == VOID) | (obj == VOID if obj is not None else False)
        where = f"{object_png if obj is not None else class_png}, image {image.name}"
        instances = []
        regions = np.unique(obj[~pixels_void]) if obj is not None else np.unique(cls[~pixels_void])
        for value in regions[regions != 0]:
            mask = ((obj if obj is not None else cls) == value) & ~pixels_void
            values, counts = np.unique(cls[mask], return_counts=True)
            v = int(values[np.argmax(counts)])
            if len(values) > 1:
                fixes.append(f"{where}: instance {value} covers classes {values.tolist()} in {class_png.name}, "
                             f"given the majority {v}")
            if v >= len(value_to_class):
                raise DataError(f"{class_png}: class value {v}, the class table has {len(value_to_class)} names",
                                "pass the class table the PNGs index into (class_names.txt or class_names)")
            instances.append((f"{where}, instance {value}", Instance(box_of_mask(mask), int(value_to_class[v]),
                                                                     mask=mask)))
        labels[image.name], _ = make_labels(instances, image, fixes)
        if pixels_void.any():
            void[image.name] = pixels_void
    return LabelSet(table, labels, fixes, void=void)


def _indices(path: Path, image: ImageInfo) -> np.ndarray:
    """(H, W) uint8 palette indices of a VOC PNG; DataError unless it is an index PNG of the image's size."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path} is a {im.mode} PNG, not a palette (index) PNG",
                                "save class / instance indices as a palette or grayscale PNG")
            values = np.asarray(im, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Pillow trips on in a user's file (SyntaxError: broken PNG)
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc})", "pass complete PNG files") from None
    if values.shape != (image.height, image.width):
        raise DataError(f"{path} is {values.shape[1]}x{values.shape[0]}, the image {image.name} is "
                        f"{image.width}x{image.height}", "label the images the scene holds (same resolution)")
    return values


# -- writing ------------------------------------------------------------------------------------------------

def write_voc(folder: str | Path, class_names: Sequence[str], labels: Mapping[str, Labels],
              images: Sequence[ImageInfo], void: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write `SegmentationClass/<stem>.png`, `SegmentationObject/<stem>.png` and `class_names.txt` into
    `folder`, atomically each; class value = class index, instance value = 1 + row in Labels, void = 255.
    An instance without a mask is drawn from its polygons (labelme's PIL rasterisation); one with neither is
    an error. Returns the folder."""
    folder = Path(folder)
    check_classes(labels, class_names, folder)
    if len(class_names) > VOID:
        raise DataError(f"cannot write {folder}: {len(class_names)} classes, VOC PNGs hold at most {VOID}",
                        "write COCO instead")
    palette = voc_colormap().ravel().tolist()
    for image in images_by_name(images, labels, folder):
        lab = labels[image.name]
        if len(lab) >= VOID:
            raise DataError(f"cannot write {folder}: image {image.name} has {len(lab)} instances, VOC PNGs hold "
                            f"at most {VOID - 1}", "write COCO instead")
        cls = np.zeros((image.height, image.width), dtype=np.uint8)
        obj = np.zeros_like(cls)
        for i, mask in enumerate(_instance_masks(lab, image)):
            cls[mask], obj[mask] = lab.classes[i], i + 1
        if void is not None and image.name in void:
            cls[void[image.name]] = obj[void[image.name]] = VOID
        stem = Path(image.name).stem
        for sub, values in ((CLASS_DIR, cls), (OBJECT_DIR, obj)):
            png = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
            png.putpalette(palette)
            atomic_write(folder / sub / f"{stem}.png", lambda f, png=png: png.save(f, format="PNG"))
    text = "\n".join(class_names)
    atomic_write(folder / "class_names.txt", lambda f: f.write(text), mode="w")
    return folder


def _instance_masks(lab: Labels, image: ImageInfo) -> list[np.ndarray]:
    out = []
    for i, polygons in enumerate(lab.polygons(j) for j in range(len(lab))):
        mask = lab.masks[i] if lab.masks is not None else None
        if (mask is None or not mask.any()) and polygons:
            mask = np.zeros((image.height, image.width), dtype=bool)
            for p in polygons:
                mask |= shape_mask(mask.shape, p.tolist(), "polygon")
        if mask is None or not mask.any():
            raise DataError(f"cannot write VOC masks for image {image.name}: instance {i} has only a box",
                            "write COCO or YOLO for box labels, or give every instance a mask")
        out.append(mask)
    return out
