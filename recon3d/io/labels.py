"""Image labels in the ecosystem's formats, read into and written from recon3d's `Labels`.

Formats: YOLO txt + ultralytics data yaml (`labels_yolo`), COCO JSON (`labels_coco`). Every reader takes the
scene's `ImageInfo`s and matches each label file's image to one of them by name: the exact name, else the
one sharing the most trailing path components, extensions aside (a unique basename or stem will do). It
returns a `LabelSet`: the class table, labels per scene image name, and `fixes`, one line per repair (a box
clipped to the image, an instance dropped, an unknown image skipped).
"""

from __future__ import annotations

from recon3d.io import labels_coco, labels_yolo
from recon3d.io.labels_coco import coco_dict, read_coco, write_coco
from recon3d.io.labels_common import LabelSet, UnknownImages
from recon3d.io.labels_yolo import read_yolo, write_yolo, write_yolo_dataset

__all__ = ["LabelSet", "UnknownImages", "coco_dict", "labels_coco", "labels_yolo", "read_coco", "read_yolo",
           "write_coco", "write_yolo", "write_yolo_dataset"]
