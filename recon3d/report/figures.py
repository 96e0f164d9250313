"""Figures of the run report as PNG bytes (matplotlib's object API and the Agg canvas: no pyplot state).

Comparisons: time-to-PSNR curves per method and seed; test views side by side (target, each method's
render, each method's error map). The sparse model's figures are drawn without matplotlib
(`recon3d.report.sfm_figures`): every SfM run writes them.
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
    ax.set_ylabel("held-out PSNR (dB)")
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
