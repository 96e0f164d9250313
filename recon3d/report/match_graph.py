"""The match graph as a picture: an image-by-image matrix of match (and inlier) counts, written as a PNG.

matplotlib's object API with the Agg canvas: no pyplot, no global backend switch, safe in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recon3d.io.files import atomic_write


def count_matrix(names: Sequence[str], counts: Mapping[tuple[str, str], int]) -> np.ndarray:
    """(N, N) float64 symmetric matrix of `counts[(a, b)]` over `names`; NaN where a pair has no count."""
    index = {n: i for i, n in enumerate(names)}
    mat = np.full((len(names), len(names)), np.nan)
    for (a, b), value in counts.items():
        if a in index and b in index:
            mat[index[a], index[b]] = mat[index[b], index[a]] = value
    return mat


def write_match_graph(path: str | Path, names: Sequence[str], upper: Mapping[tuple[str, str], int],
                      lower: Mapping[tuple[str, str], int] | None = None, title: str = "",
                      upper_label: str = "matches", lower_label: str = "") -> Path:
    """Write the matrix of `upper` counts (above the diagonal) and `lower` counts (below it, when given)
    as a PNG at `path`, atomically; empty cells are pairs without a count. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    up = count_matrix(names, upper)
    mat = np.triu(np.nan_to_num(up, nan=-1.0), 1)
    if lower is not None:
        mat += np.tril(np.nan_to_num(count_matrix(names, lower), nan=-1.0), -1)
    else:
        mat += np.tril(np.nan_to_num(up, nan=-1.0), -1)
    mat = np.where(mat < 0, np.nan, mat)
    np.fill_diagonal(mat, np.nan)
    labelled = len(names) <= 40  # beyond that the names are unreadable and the matrix alone needs less room
    size = 3.0 + 0.15 * len(names) if labelled else min(12.0, 3.0 + 0.04 * len(names))  # 100 images: 7 inches
    fig = Figure(figsize=(size + 1.5, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = ax.imshow(mat, cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="count")
    if labelled:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
    parts = [title] if title else []
    parts.append(f"upper: {upper_label}" + (f", lower: {lower_label}" if lower is not None and lower_label else ""))
    ax.set_title("\n".join(parts), fontsize=9)
    if labelled:
        fig.tight_layout()  # room for the names (the default margins fit the title and the colour bar)
    path = Path(path)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
