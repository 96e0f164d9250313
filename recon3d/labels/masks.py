"""The pixels of chosen label classes (objects that move: people, cars), for stages that leave them out."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from recon3d.errors import StageError
from recon3d.scene import Scene


def class_masks(scene: Scene, classes: Sequence[str], dilate_px: int, stage: str) -> dict[str, np.ndarray]:
    """image name -> (H, W) bool pixels covered by the labeled instances of `classes` (masks, else polygons,
    else boxes: `Labels.region`), grown by `dilate_px`, for the images that show such a class. StageError
    naming the classes the scene does not have."""
    unknown = [c for c in classes if c not in scene.class_names]
    if unknown:
        raise StageError(f"{stage}: mask_classes {', '.join(unknown)} not among the scene's classes "
                         f"({', '.join(scene.class_names) or 'none: the scene has no labels'})",
                         "name classes of the scene's labels (ingest labels, or run detect/segment first)")
    ids = [scene.class_names.index(c) for c in classes]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1,) * 2)
    out: dict[str, np.ndarray] = {}
    for im in scene.images:
        labels = scene.labels.get(im.name)
        sel = [] if labels is None else np.flatnonzero(np.isin(labels.classes, ids))
        if len(sel) == 0:
            continue
        mask = np.zeros((im.height, im.width), np.uint8)
        for i in sel:
            mask[labels.region(i, im.height, im.width)] = 1
        out[im.name] = (cv2.dilate(mask, kernel) if dilate_px else mask).astype(bool)
    return out
