"""Instance masks and outline polygons of `Labels`, one from the other, in COLMAP's pixel convention.

A polygon vertex (x, y) is in continuous pixel coordinates whose pixel (row r, column c) spans [c, c + 1) x
[r, r + 1); OpenCV traces with pixel centres at integers, so vertices shift by 0.5 at its boundary. A pixel
belongs to a rasterised polygon (`io.labels_coco.polygon_mask`, COCO's rule) when its centre is inside.
Traced outlines follow the pixels' outer edges to within 1 / (2 * TRACE_UPSAMPLE) px (OpenCV's contours run
through the centres of the boundary pixels, so the mask is traced at TRACE_UPSAMPLE x its resolution), so a
polygon's extent is its mask's box.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from recon3d.io.labels_coco import polygon_mask
from recon3d.io.labels_common import flat_polygons
from recon3d.scene import Labels

TRACE_UPSAMPLE = 4


def has_shape(labels: Labels) -> np.ndarray:
    """(N,) bool: instances with a non-empty mask or at least one polygon."""
    out = np.zeros(len(labels), dtype=bool)
    if labels.masks is not None:
        out |= labels.masks.reshape(len(labels), -1).any(axis=1)
    if labels.polygon_instance is not None:
        out[np.asarray(labels.polygon_instance, np.int64)] = True
    return out


def trace(mask: np.ndarray, tolerance_px: float = 0.5) -> list[np.ndarray]:
    """The outer outlines of a (H, W) bool mask's connected parts, each (K, 2) float64 xy with K >= 3,
    simplified (Douglas-Peucker) to `tolerance_px`; [] for an empty mask. Holes are not kept."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return []
    r0, c0 = rows.min(), cols.min()
    crop = mask[r0:rows.max() + 1, c0:cols.max() + 1].astype(np.uint8)
    up = np.pad(np.kron(crop, np.ones((TRACE_UPSAMPLE, TRACE_UPSAMPLE), np.uint8)), 1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, tolerance_px * TRACE_UPSAMPLE, True)
        if len(contour) < 3:
            continue
        up_xy = contour.reshape(-1, 2).astype(np.float64) - 1.0  # undo the pad
        out.append((up_xy + 0.5) / TRACE_UPSAMPLE + np.array([c0, r0], np.float64))
    return out


def with_masks(labels: Labels, height: int, width: int) -> Labels:
    """`labels` with masks (N, H, W): an instance without a mask gets its polygons rasterised (stays empty
    without polygons)."""
    masks = np.zeros((len(labels), height, width), bool) if labels.masks is None else labels.masks.copy()
    for i in range(len(labels)):
        polygons = labels.polygons(i)
        if polygons and not masks[i].any():
            masks[i] = polygon_mask(polygons, height, width)
    return dataclasses.replace(labels, masks=masks)


def with_polygons(labels: Labels) -> Labels:
    """`labels` where every instance with a mask but no polygon gets the mask's traced outlines."""
    if labels.masks is None:
        return labels
    owned = [(i, p) for i in range(len(labels)) for p in labels.polygons(i) or trace(labels.masks[i])]
    return dataclasses.replace(labels, **flat_polygons(owned)) if owned else labels
