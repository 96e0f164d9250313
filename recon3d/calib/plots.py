"""Pictures for the calibration report: per-image errors, residual vectors, a disparity map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon3d.io.files import atomic_write


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight", dpi=90))
    plt.close(fig)
    return path


def per_image_errors(rms: dict[str, float], rejected: dict[str, float], path: Path) -> Path:
    """Bar chart of per-image RMS: used images in blue, rejected ones in red."""
    plt = _figure()
    names = list(rms) + list(rejected)
    values = list(rms.values()) + list(rejected.values())
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(names)), 3))
    ax.bar(range(len(names)), values, color=["tab:blue"] * len(rms) + ["tab:red"] * len(rejected))
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("RMS reprojection error (px)")
    ax.set_title("per-image error (red: rejected)")
    return _save(plt, fig, path)


def residual_vectors(points: np.ndarray, residuals: np.ndarray, size: tuple[int, int], path: Path,
                     scale: float = 100.0) -> Path:
    """Residuals (N, 2) drawn at their corners (N, 2) over the image frame, magnified `scale` times."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 6 * size[1] / size[0]))
    ax.quiver(points[:, 0], points[:, 1], residuals[:, 0] * scale, residuals[:, 1] * scale,
              angles="xy", scale_units="xy", scale=1, width=0.002, color="tab:red")
    ax.set_xlim(0, size[0])
    ax.set_ylim(size[1], 0)
    ax.set_aspect("equal")
    ax.set_title(f"corner residuals x{scale:g} (observed - projected)")
    return _save(plt, fig, path)


def disparity_map(left: np.ndarray, disparity: np.ndarray, path: Path) -> Path:
    """The rectified left image beside its disparity (NaN = failed left-right check)."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].imshow(left)
    axes[0].set_title("rectified left")
    im = axes[1].imshow(disparity, cmap="turbo")
    axes[1].set_title("disparity (px), SGBM + left-right check")
    fig.colorbar(im, ax=axes[1], fraction=0.035)
    for ax in axes:
        ax.axis("off")
    return _save(plt, fig, path)
