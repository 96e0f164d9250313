"""Figures of the run report as PNG bytes (matplotlib's object API and the Agg canvas: no pyplot state).

Comparisons: time-to-PSNR curves per method and seed; test views side by side (target, each method's
render, each method's error map). SfM: the histogram of per-point reprojection errors.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

ERROR_GAIN = 4.0  # error maps show min(1, 4 |render - target|) averaged over RGB, so 0.25 is full scale


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def curves_png(curves: Mapping[str, dict]) -> bytes | None:
    """PSNR against training seconds; `curves`: node -> {"method", "seed", "curve": [{"seconds", "psnr"}]}."""
    if not any(c["curve"] for c in curves.values()):
        return None
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    colours = {}
    for entry in curves.values():
        pts = entry["curve"]
        if not pts:
            continue
        colour = colours.setdefault(entry["method"], f"C{len(colours)}")
        ax.plot([p["seconds"] / 60 for p in pts], [p["psnr"] for p in pts], marker="o", ms=3, color=colour,
                label=f"{entry['method']} (seed {entry['seed']})")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("test PSNR (dB), curve views")
    ax.set_title("time to PSNR")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def side_by_side_png(view: str, target: np.ndarray, renders: Mapping[str, np.ndarray]) -> bytes:
    """One test view: the target, then each method's render, then each method's error map.
    target and renders: (H, W, 3) float in [0, 1], the same size."""
    n = 1 + 2 * len(renders)
    h, w = target.shape[:2]
    fig = _figure(max(2.0, 2.2 * w / h) * n, 2.6)
    panels = [("target", target)] + [(m, r) for m, r in renders.items()]
    panels += [(f"{m} error x{ERROR_GAIN:g}", np.minimum(1.0, ERROR_GAIN * np.abs(r - target).mean(axis=-1)))
               for m, r in renders.items()]
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(np.clip(img, 0, 1), cmap="magma" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(view, fontsize=9)
    return _png(fig)


def reprojection_histogram_png(errors: np.ndarray) -> bytes | None:
    """Histogram of per-point mean reprojection errors (px); None without points."""
    if errors is None or len(errors) == 0:
        return None
    fig = _figure(5, 3)
    ax = fig.add_subplot()
    ax.hist(errors, bins=50, range=(0, max(float(np.percentile(errors, 99.5)), 1e-6)), color="C0")
    ax.set_xlabel("mean reprojection error of a point (px)")
    ax.set_ylabel("points")
    ax.set_title(f"{len(errors)} points, mean {errors.mean():.3f} px, median {np.median(errors):.3f} px")
    return _png(fig)


MAX_PLOTTED_POINTS = 30000  # a scatter of more says no more and slows the report down


def scene_views_png(cam_from_world: np.ndarray, xyz: np.ndarray | None, rgb: np.ndarray | None,
                    up: np.ndarray) -> bytes:
    """The cameras (red) and points (their colours) from above (looking down `up`) and in perspective.
    cam_from_world (N, 4, 4); xyz (M, 3) and rgb (M, 3) uint8 or None; up (3,) unit."""
    from recon3d.geometry.rotation import camera_center

    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    frame = np.stack([e1, np.cross(up, e1), up])  # rows: two horizontal axes and up
    centres = camera_center(cam_from_world) @ frame.T
    fig = _figure(11, 5)
    top, persp = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2, projection="3d")
    if xyz is not None and len(xyz):
        keep = np.random.default_rng(0).permutation(len(xyz))[:MAX_PLOTTED_POINTS]
        p, colours = xyz[keep] @ frame.T, rgb[keep] / 255.0
        lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)  # outliers off the axes' range
        inside = np.all((p >= lo - (hi - lo)) & (p <= hi + (hi - lo)), axis=1)
        top.scatter(p[inside, 0], p[inside, 1], s=1, c=colours[inside], linewidths=0)
        persp.scatter(p[inside, 0], p[inside, 1], p[inside, 2], s=1, c=colours[inside], linewidths=0,
                      depthshade=False)
    shown = np.concatenate([centres] + ([p[inside]] if xyz is not None and len(xyz) else []))
    persp.set_box_aspect(np.maximum(np.ptp(shown, axis=0), 1e-3 * np.ptp(shown, axis=0).max() + 1e-12))
    for ax in (top, persp):
        args = (centres[:, 0], centres[:, 1]) + ((centres[:, 2],) if ax is persp else ())
        ax.scatter(*args, marker="^", c="crimson", s=18, label=f"{len(centres)} cameras")
    top.set_aspect("equal")
    top.set_title("from above")
    top.legend(loc="upper right", fontsize=8)
    persp.view_init(elev=25, azim=-60)
    persp.set_title("in perspective")
    for ax in (top, persp):
        ax.tick_params(labelsize=7)
    return _png(fig)
