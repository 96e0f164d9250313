"""Label I/O against the ecosystem's own exports (recon3d.io.labels). Prints figures; not a test.

    .venv/bin/python benchmarks/labels_io.py [--data ../shared/data]

1. labelme_voc_instance_seg: `labelme_to_coco(data_annotated)` against labelme2coco's own
   data_dataset_coco/annotations.json, field by field (polygons exactly, boxes, areas, categories); then the
   VOC PNGs (data_dataset_voc, labelme2voc's export) read as instance masks against the COCO masks: IoU per
   instance, with the COCO polygons rasterised by pycocotools and by labelme (PIL).
2. coco8: the YOLO labels through coco8.yaml against annotations_coco_boxes_derived.json: the largest box
   difference in pixels and the class agreement; then YOLO -> COCO -> YOLO on the same boxes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from recon3d.io.images import image_size, list_images
from recon3d.io.labels import (
    coco_dict,
    labelme_to_coco,
    read_coco,
    read_labelme,
    read_voc,
    read_yolo,
    write_coco,
    write_yolo_dataset,
)
from recon3d.io.labels_labelme import shape_mask
from recon3d.scene import ImageInfo


def scene_images(folder: Path) -> list[ImageInfo]:
    """The images under `folder` as a scene would hold them: names relative to it, sizes from the files."""
    return [ImageInfo(p.relative_to(folder).as_posix(), str(p), 1, *image_size(p)) for p in list_images(folder)]


def agreement(name: str, same: list[bool]) -> None:
    print(f"  {name:<14} {sum(same)}/{len(same)} equal")


def labelme_part(root: Path) -> None:
    print(f"1. labelme -> COCO against labelme2coco ({root.name})")
    reference = json.loads((root / "data_dataset_coco/annotations.json").read_text())
    fixes: list[str] = []
    ours = labelme_to_coco(root / "data_annotated", root / "labels.txt", fixes)
    print(f"  categories     {'equal' if ours['categories'] == reference['categories'] else 'DIFFER'} "
          f"({len(ours['categories'])}, id 0 = {ours['categories'][0]['name']})")
    key = ("file_name", "height", "width")
    same_images = (sorted(tuple(im[k] for k in key) for im in ours["images"])
                   == sorted(tuple(im[k] for k in key) for im in reference["images"]))
    print(f"  images         {'equal' if same_images else 'DIFFER'} (file_name, height, width of "
          f"{len(ours['images'])})")

    def by_image(coco: dict) -> dict[str, list[dict]]:
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        out: dict[str, list[dict]] = {}
        for ann in coco["annotations"]:  # in file order: labelme2coco's instance order within an image
            out.setdefault(names[ann["image_id"]], []).append(ann)
        return out

    ref_anns, our_anns = by_image(reference), by_image(ours)
    pairs = [(a, b) for name in ref_anns for a, b in zip(ref_anns[name], our_anns.get(name, []), strict=False)]
    print(f"  annotations    {sum(map(len, our_anns.values()))} ours, {sum(map(len, ref_anns.values()))} "
          f"labelme2coco, {len(pairs)} paired by image and order; fixes: {fixes or 'none'}")
    for field in ("category_id", "segmentation", "bbox", "area", "iscrowd"):
        agreement(field, [a[field] == b[field] for a, b in pairs])

    images = scene_images(root / "data_annotated")
    coco_images = [ImageInfo(f"JPEGImages/{Path(im.name).stem}.jpg", im.path, 1, im.width, im.height)
                   for im in images]
    from_coco = read_coco(root / "data_dataset_coco/annotations.json", coco_images)
    from_labelme = read_labelme(root / "data_annotated", images)
    from_voc = read_voc(root / "data_dataset_voc", images)
    via_labels = coco_dict(from_labelme.class_names, {f"JPEGImages/{Path(k).stem}.jpg": v
                                                      for k, v in from_labelme.labels.items()},
                           coco_images, category_ids=range(len(from_labelme.class_names)))
    via_anns = by_image(via_labels)
    pairs = [(a, b) for name in ref_anns for a, b in zip(ref_anns[name], via_anns.get(name, []), strict=False)]
    print(f"  read_labelme -> coco_dict (through Labels): {len(pairs)} paired; "
          + ", ".join(f"{field} {sum(a[field] == b[field] for a, b in pairs)}/{len(pairs)}"
                      for field in ("category_id", "segmentation", "bbox", "area")))
    boxes_same = all(np.array_equal(from_coco.labels["JPEGImages/" + name].boxes, lab.boxes)
                     for name, lab in from_labelme.labels.items())
    print(f"  read_coco(annotations.json) vs read_labelme: class tables equal "
          f"{from_coco.class_names == from_labelme.class_names}, boxes equal {boxes_same}")
    print(f"  VOC ({from_voc.fixes or 'no fixes'}; void pixels "
          f"{ {k: int(v.sum()) for k, v in from_voc.void.items()} }) vs COCO masks, IoU per instance:")
    for reference_name, labels_of in (("pycocotools", lambda n: from_coco.labels["JPEGImages/" + n]),
                                      ("labelme/PIL", lambda n: from_labelme.labels[n])):
        ious, classes_same = [], []
        for name, voc in from_voc.labels.items():
            ref = labels_of(name)
            for i in range(len(ref)):
                inter = (voc.masks & ref.masks[i]).sum(axis=(1, 2))
                union = (voc.masks | ref.masks[i]).sum(axis=(1, 2))
                j = int(np.argmax(inter / union))
                ious.append(inter[j] / union[j])
                classes_same.append(voc.classes[j] == ref.classes[i])
        ious = np.array(ious)
        print(f"    {reference_name:<12} mean {ious.mean():.4f}  min {ious.min():.4f}  median {np.median(ious):.4f}"
              f"  ({len(ious)} instances, best VOC match has the same class: {sum(classes_same)}/{len(ious)}; "
              f"VOC masks lose what later shapes or __ignore__ cover)")
        print("    " + " ".join(f"{v:.3f}" for v in ious))
    index_of = {name: i for i, name in enumerate(from_labelme.class_names)}
    differ = {}
    for file in sorted((root / "data_annotated").glob("*.json")):
        cls, ins = labelme2voc_replay(file, index_of)
        png = {sub: np.asarray(Image.open(root / "data_dataset_voc" / sub / f"{file.stem}.png"))
               for sub in ("SegmentationClass", "SegmentationObject")}
        voc = from_voc.labels[f"{file.stem}.jpg"]
        replayed = np.stack([(ins == v) for v in np.unique(ins[ins > 0])])
        differ[file.stem] = (int((cls != png["SegmentationClass"]).sum()),
                             int((ins != png["SegmentationObject"]).sum()),
                             int((voc.masks != replayed).sum()) if voc.masks.shape == replayed.shape else -1)
    print("  labelme2voc replayed from the labelme shapes (PIL, later shapes on top, __ignore__ void), pixels that "
          "differ (class PNG, object PNG, read_voc masks): "
          + ", ".join(f"{stem} {d}" for stem, d in differ.items()))


def labelme2voc_replay(file: Path, index_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance) index images as labelme2voc paints them: shape by shape in file order, later shapes
    over earlier ones, `__ignore__` as class 255 and instance 0 (instance ids count it all the same)."""
    data = json.loads(file.read_text())
    cls = np.zeros((data["imageHeight"], data["imageWidth"]), dtype=np.uint8)
    ins = np.zeros_like(cls)
    instances: list[tuple] = []
    for k, shape in enumerate(data["shapes"]):
        key = (shape["label"], ("shape", k) if shape.get("group_id") is None else shape["group_id"])
        if key not in instances:
            instances.append(key)
        mask = shape_mask(cls.shape, shape["points"], shape.get("shape_type") or "polygon")
        cls[mask] = index_of.get(shape["label"], 255)
        ins[mask] = instances.index(key) + 1
    ins[cls == 255] = 0
    return cls, ins


def coco8_part(root: Path) -> None:
    print(f"2. YOLO labels + {root.name}.yaml against annotations_coco_boxes_derived.json ({root.name})")
    images = scene_images(root)
    yolo = read_yolo(root / f"{root.name}.yaml", images)
    coco = read_coco(root / "annotations_coco_boxes_derived.json", images)
    print(f"  classes        {len(yolo.class_names)} from the yaml, table equal to COCO's: "
          f"{yolo.class_names == coco.class_names}; COCO category ids 0..{max(coco.category_ids)}")
    print(f"  images         {len(yolo.labels)} YOLO, {len(coco.labels)} COCO; instances "
          f"{sum(map(len, yolo.labels.values()))} YOLO, {sum(map(len, coco.labels.values()))} COCO; "
          f"fixes: {yolo.fixes + coco.fixes or 'none'}")
    diffs, same = [], []
    for name, y in yolo.labels.items():
        c = coco.labels[name]
        diffs.append(np.abs(y.boxes - c.boxes).max(initial=0.0))
        same += (y.classes == c.classes).tolist()
    print(f"  boxes          max |YOLO - COCO| = {max(diffs):.4f} px")
    print(f"  classes        {sum(same)}/{len(same)} equal")
    with tempfile.TemporaryDirectory() as tmp:
        write_coco(Path(tmp) / "c.json", yolo.class_names, yolo.labels, images, coco.category_ids)
        again = read_coco(Path(tmp) / "c.json", images)
        data = write_yolo_dataset(Path(tmp) / "yolo", again.class_names, again.labels, images)
        back = read_yolo(data, images)
    err = max(np.abs(back.labels[n].boxes - yolo.labels[n].boxes).max(initial=0.0) for n in yolo.labels)
    kept = all(np.array_equal(back.labels[n].classes, yolo.labels[n].classes) for n in yolo.labels)
    print(f"  YOLO -> COCO -> YOLO: max box change {err:.2e} px, classes kept {kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data")
    args = parser.parse_args()
    labelme_part(args.data / "labelme_voc_instance_seg")
    coco8_part(args.data / "coco8")


if __name__ == "__main__":
    main()
