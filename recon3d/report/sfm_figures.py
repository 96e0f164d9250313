"""The sparse model's report figures without a plotting library: the cameras and points drawn with OpenCV (a
PNG), the reprojection-error histogram as SVG text.

Every `recon3d run sfm` writes them, and importing and driving matplotlib for them took 0.45 s of a run that
takes 8 s on lego; drawn here they take 0.03 s (monstree, 11k points). World units are arbitrary in a sparse
model, so the views carry no axes, only what is seen from where.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from recon3d.geometry.rotation import camera_center, horizontal_axes, look_at

PANEL = (480, 400)  # width, height of each view in pixels
MAX_DRAWN_POINTS = 30000  # more says no more and slows the report down
CAMERA_BGR = (60, 20, 220)  # crimson


def scene_views_png(cam_from_world: np.ndarray, xyz: np.ndarray | None, rgb: np.ndarray | None,
                    up: np.ndarray) -> bytes:
    """The cameras (red triangles) and the points (their colours) from above, looking down `up`, and in
    perspective from 25 degrees above the horizon, side by side.

    cam_from_world (N, 4, 4); xyz (M, 3) float and rgb (M, 3) uint8, or None; up (3,) unit, world frame.
    Returns PNG bytes.
    """
    frame = np.stack([*horizontal_axes(up), up])  # rows: two horizontal axes and up
    centres = camera_center(cam_from_world) @ frame.T  # (N, 3) in the frame
    points, colours = np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    if xyz is not None and len(xyz):
        keep = np.random.default_rng(0).permutation(len(xyz))[:MAX_DRAWN_POINTS]
        points, colours = xyz[keep] @ frame.T, rgb[keep]
        lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)  # outliers out of view
        inside = np.all((points >= lo - (hi - lo)) & (points <= hi + (hi - lo)), axis=1)
        points, colours = points[inside], colours[inside]
    shown = np.concatenate([centres, points])
    top = _panel("from above", f"{len(centres)} cameras")
    _draw(top, points[:, :2], colours, centres[:, :2], _fit(shown[:, :2]))
    persp = _panel("in perspective", "")
    _draw_perspective(persp, points, colours, centres, shown)
    _, png = cv2.imencode(".png", np.concatenate([top, persp], axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return png.tobytes()


def _panel(title: str, legend: str) -> np.ndarray:
    """A white (H, W, 3) uint8 BGR panel with a title and an optional camera legend."""
    w, h = PANEL
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), (210, 210, 210), 1)
    cv2.putText(img, title, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 40), 1, cv2.LINE_AA)
    if legend:
        _triangle(img, np.array([[w - 128.0, 17.0]]), 6)
        cv2.putText(img, legend, (w - 118, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return img


def _fit(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """(origin (2,), pixels per unit) that fit the (K, 2) coordinates into a panel (y up), 36 px margins."""
    w, h = PANEL
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    scale = min((w - 72) / max(hi[0] - lo[0], 1e-9), (h - 72) / max(hi[1] - lo[1], 1e-9))
    return (lo + hi) / 2, scale


def _to_pixels(xy: np.ndarray, fit: tuple[np.ndarray, float]) -> np.ndarray:
    """(K, 2) coordinates -> (K, 2) pixel positions, y flipped so that up is up, centred in the panel."""
    origin, scale = fit
    w, h = PANEL
    return np.c_[w / 2 + (xy[:, 0] - origin[0]) * scale, h / 2 + 8 - (xy[:, 1] - origin[1]) * scale]


def _draw(img: np.ndarray, points: np.ndarray, colours: np.ndarray, cameras: np.ndarray,
          fit: tuple[np.ndarray, float]) -> None:
    """Points as 2x2 dots (in the given order: later over earlier), then the cameras over them."""
    if len(points):
        px = np.rint(_to_pixels(points, fit)).astype(int)
        h, w = img.shape[:2]
        for dx in (0, 1):
            for dy in (0, 1):
                x, y = px[:, 0] + dx, px[:, 1] + dy
                ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                img[y[ok], x[ok]] = colours[ok, ::-1]
    _triangle(img, _to_pixels(cameras, fit), 5)


def _draw_perspective(img: np.ndarray, points: np.ndarray, colours: np.ndarray, cameras: np.ndarray,
                      shown: np.ndarray) -> None:
    """The frame's coordinates seen by a pinhole 25 degrees above the horizon, azimuth -60 degrees, far
    points drawn first."""
    centre = (shown.min(axis=0) + shown.max(axis=0)) / 2
    radius = max(float(np.linalg.norm(shown - centre, axis=1).max()), 1e-9)
    elev, azim = math.radians(25), math.radians(-60)
    eye = centre + 3 * radius * np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim),
                                          math.sin(elev)])
    view = look_at(eye, centre, np.array([0.0, 0.0, 1.0]))  # (4, 4) cam_from_world, OpenCV axes

    def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = p @ view[:3, :3].T + view[:3, 3]
        return cam[:, :2] / cam[:, 2:3] * np.array([1.0, -1.0]), cam[:, 2]  # y up for _fit

    flat_cameras, _ = project(cameras)
    flat_points, depth = project(points)
    fit = _fit(np.concatenate([flat_cameras, flat_points]))
    order = np.argsort(-depth, kind="stable")
    _draw(img, flat_points[order], colours[order], flat_cameras, fit)


def _triangle(img: np.ndarray, at: np.ndarray, size: int) -> None:
    """Filled upward triangles of half-width `size` px at the (K, 2) pixel positions."""
    shape = np.array([[0, -size], [-size, size - 1], [size, size - 1]])
    for x, y in np.rint(at).astype(int):  # one call each: polygons filled together leave holes where they overlap
        cv2.fillPoly(img, [shape + (x, y)], CAMERA_BGR, cv2.LINE_AA)


def reprojection_histogram_svg(errors: np.ndarray, bins: int = 50) -> str | None:
    """A histogram of per-point mean reprojection errors (px), 0 to their 99.5th percentile (the tail beyond is
    left out), as SVG text; None without points. errors: (M,) float."""
    if errors is None or len(errors) == 0:
        return None
    top = max(float(np.percentile(errors, 99.5)), 1e-6)
    counts, _ = np.histogram(errors, bins=bins, range=(0, top))
    w, h, left, bottom = 460, 240, 52, 40
    plot_w, plot_h = w - left - 12, h - bottom - 30
    bar = plot_w / bins
    tallest = max(int(counts.max()), 1)
    rects = "".join(
        f'<rect x="{left + i * bar:.1f}" y="{30 + plot_h * (1 - c / tallest):.1f}" width="{bar:.1f}" '
        f'height="{plot_h * c / tallest:.1f}" fill="#1f77b4"><title>{i * top / bins:.3g}-{(i + 1) * top / bins:.3g}'
        f' px: {c} points</title></rect>' for i, c in enumerate(counts) if c)
    ticks = "".join(
        f'<text x="{left + plot_w * t:.1f}" y="{30 + plot_h + 16}" text-anchor="middle">{top * t:.2g}</text>'
        for t in (0, 0.25, 0.5, 0.75, 1))
    title = f"{len(errors)} points, mean {errors.mean():.3f} px, median {np.median(errors):.3f} px"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
            f'font-size="11">'
            f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="12">{title}</text>{rects}'
            f'<line x1="{left}" y1="{30 + plot_h}" x2="{left + plot_w}" y2="{30 + plot_h}" stroke="#333"/>'
            f'<line x1="{left}" y1="30" x2="{left}" y2="{30 + plot_h}" stroke="#333"/>'
            f'<text x="{left - 6}" y="34" text-anchor="end">{tallest}</text>'
            f'<text x="{left - 6}" y="{30 + plot_h}" text-anchor="end">0</text>{ticks}'
            f'<text x="{left + plot_w / 2}" y="{h - 4}" text-anchor="middle">mean reprojection error of a point (px)'
            f'</text></svg>')
