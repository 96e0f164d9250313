"""The pixels of chosen label classes (objects that move: people, cars), for stages that leave them out; labels
carried into an undistorted twin of their image (radiance models train on those)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from recon3d.calib.undistort import undistort_pixels
from recon3d.errors import StageError
from recon3d.geometry import camera_models
from recon3d.scene import Camera, Labels, Scene


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


def undistort_mask(mask: np.ndarray, cam: Camera) -> np.ndarray:
    """(H, W) bool pixels of an image seen by `cam` -> the same pixels in its PINHOLE twin (`calib.undistort`:
    same focal lengths and principal point); unchanged for a pinhole camera."""
    if cam.model in camera_models.PINHOLE_MODELS:
        return mask
    return undistort_pixels(mask.astype(np.uint8) * 255, cam) >= 128


def undistort_labels(labels: Labels, cam: Camera, height: int, width: int) -> Labels:
    """One image's labels in its PINHOLE twin: each instance's region (mask, else polygons, else box) undistorted
    as a mask, its box the mask's bounds (the box as given when no pixel of it stays in the frame); classes
    and scores kept. Unchanged for a pinhole camera."""
    if cam.model in camera_models.PINHOLE_MODELS or len(labels) == 0:
        return labels
    masks = np.array([undistort_mask(labels.region(i, height, width), cam) for i in range(len(labels))])
    boxes = np.array(labels.boxes, np.float64)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows):
            boxes[i] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return Labels(boxes, labels.classes, labels.scores, masks)
