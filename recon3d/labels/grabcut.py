"""Instance masks from boxes with OpenCV's GrabCut (Rother et al., "GrabCut", SIGGRAPH 2004).

Each box is segmented on its own: GrabCut runs in `GC_INIT_WITH_RECT` mode on a crop of the image, the box
plus `margin_px` of context on every side (the whole image with `margin_px=None`), so its background colour
model is learned from the pixels round the object (outside the rectangle is definite background, inside is
probable foreground) and a box costs time in proportion to its size, not the image's.

Pixels: a box is (x0, y0, x1, y1) pixel corners (`Labels.boxes`, COCO's convention), so pixel column c spans
[c, c + 1). Its OpenCV rectangle holds the pixels the box touches: columns floor(x0) .. ceil(x1) - 1, rows
likewise, after clipping to the image; the box (c, r, c + 1, r + 1) of one pixel is the rect (c, r, 1, 1).

Boxes GrabCut cannot work on fall back to the box itself as the mask (the pixels of its rectangle; none for
a box wholly outside the image), and `BoxMasks.fallback` says which and why, for the stage's report:
boxes under `min_size_px` on a side, boxes that leave no background pixel in their crop (a box covering the
whole image), boxes in which GrabCut finds no foreground, and boxes on which OpenCV raises.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

MIN_SIZE_PX = 4  # below this width or height (pixels) GrabCut has too few samples for its colour models


class BoxMasks(NamedTuple):
    masks: np.ndarray  # (N, H, W) bool, one per box
    fallback: dict[int, str]  # box index -> why its mask is the box itself rather than GrabCut's


def box_rect(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """box (4,) xyxy pixel corners -> OpenCV (x, y, w, h) integer rect of the pixels it touches, clipped to
    the image (w or h 0 when nothing of it is inside)."""
    x0, y0 = (int(np.clip(np.floor(v), 0, n)) for v, n in ((box[0], width), (box[1], height)))
    x1, y1 = (int(np.clip(np.ceil(v), 0, n)) for v, n in ((box[2], width), (box[3], height)))
    return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


def masks_from_boxes(image_rgb: np.ndarray, boxes: np.ndarray, iterations: int = 5, margin_px: int | None = 20,
                     min_size_px: int = MIN_SIZE_PX, seed: int = 0) -> BoxMasks:
    """One GrabCut mask per box.

    image_rgb: (H, W, 3) uint8 RGB.
    boxes: (N, 4) float64 xyxy pixel corners; they may reach outside the image (they are clipped).
    iterations: GrabCut's EM iterations.
    margin_px: context round each box that GrabCut sees, in pixels (>= 1; None: the whole image).
    min_size_px: boxes smaller than this on a side are their own mask.
    seed: OpenCV's RNG seed, set before each box, so a box's mask does not depend on the others.
    Returns BoxMasks(masks (N, H, W) bool, fallback {box index: reason}).
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"masks_from_boxes: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise ValueError(f"masks_from_boxes: boxes must be finite, got {boxes[~np.isfinite(boxes).all(1)][0]}")
    if iterations < 1 or (margin_px is not None and margin_px < 1):
        raise ValueError(f"masks_from_boxes: need iterations >= 1 and margin_px >= 1 or None, got {iterations}, "
                         f"{margin_px}")
    # GrabCut's colour models are symmetric in the channels, so RGB goes in as it is (no BGR swap needed)
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    masks = np.zeros((len(boxes), height, width), bool)
    fallback: dict[int, str] = {}
    for i, box in enumerate(boxes):
        x, y, w, h = box_rect(box, width, height)
        masks[i, y:y + h, x:x + w] = True  # the box itself, unless GrabCut does better below
        if w == 0 or h == 0:
            fallback[i] = "box outside the image or empty"
            continue
        if min(w, h) < min_size_px:
            fallback[i] = f"box {w} x {h} px, under {min_size_px} px on a side"
            continue
        m = max(width, height) if margin_px is None else margin_px
        cx0, cy0, cx1, cy1 = max(x - m, 0), max(y - m, 0), min(x + w + m, width), min(y + h + m, height)
        if (cx0, cy0, cx1, cy1) == (x, y, x + w, y + h):
            fallback[i] = "box covers the whole image: no background to learn from"
            continue
        try:
            fg = _grabcut(image[cy0:cy1, cx0:cx1], (x - cx0, y - cy0, w, h), iterations, seed)
        except cv2.error as e:  # e.g. k-means with fewer samples than GMM components
            fallback[i] = f"GrabCut failed: {str(e).strip().splitlines()[-1]}"
            continue
        if not fg.any():
            fallback[i] = "GrabCut found no foreground in the box"
        else:
            masks[i] = False
            masks[i, cy0:cy1, cx0:cx1] = fg
    return BoxMasks(masks, fallback)


def _grabcut(crop: np.ndarray, rect: tuple[int, int, int, int], iterations: int, seed: int) -> np.ndarray:
    """GrabCut of crop (h, w, 3) uint8 from rect (x, y, w, h) -> (h, w) bool foreground."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)  # GrabCut's k-means initialisation draws from OpenCV's RNG
    cv2.grabCut(crop, mask, rect, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
