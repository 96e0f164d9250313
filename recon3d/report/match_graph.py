"""The match graph as a picture: an image-by-image matrix of match (and inlier) counts, written as an SVG.

Plain SVG text, no plotting library: the match and verification nodes draw it on every run, and importing
matplotlib there cost as much as a stage on small scenes. The report inlines it, so hovering a cell names the
pair and its counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import numpy as np

from recon3d.io.files import atomic_write

# viridis (matplotlib's default colour map) at 9 evenly spaced stops, interpolated linearly in between
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
LABELLED_MAX = 40  # beyond this many images the names are unreadable and the matrix alone is drawn
HOVER_MAX = 200  # beyond this many images cells carry no hover text (the file would grow by megabytes)


def count_matrix(names: Sequence[str], counts: Mapping[tuple[str, str], int]) -> np.ndarray:
    """(N, N) float64 symmetric matrix of `counts[(a, b)]` over `names`; NaN where a pair has no count."""
    index = {n: i for i, n in enumerate(names)}
    mat = np.full((len(names), len(names)), np.nan)
    for (a, b), value in counts.items():
        if a in index and b in index:
            mat[index[a], index[b]] = mat[index[b], index[a]] = value
    return mat


def viridis(t: np.ndarray) -> list[str]:
    """Hex colours of viridis at `t` in [0, 1] (clipped). t: (K,). Returns K strings '#rrggbb'."""
    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in VIRIDIS], dtype=np.float64)  # (9, 3)
    x = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * (len(VIRIDIS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(VIRIDIS) - 2)
    rgb = np.rint(stops[lo] + (x - lo)[:, None] * (stops[lo + 1] - stops[lo])).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def write_match_graph(path: str | Path, names: Sequence[str], upper: Mapping[tuple[str, str], int],
                      lower: Mapping[tuple[str, str], int] | None = None, title: str = "",
                      upper_label: str = "matches", lower_label: str = "") -> Path:
    """Write the matrix of `upper` counts (above the diagonal) and `lower` counts (below it, when given; else
    `upper` mirrored) as an SVG at `path`, atomically; empty cells are pairs without a count. Returns the path."""
    n = len(names)
    up = count_matrix(names, upper)
    low = up if lower is None else count_matrix(names, lower)
    labelled = n <= LABELLED_MAX
    cell = float(np.clip(560.0 / max(n, 1), 1.0, 28.0))
    label_room = 7.0 * max((len(s) for s in names), default=0) + 8.0 if labelled else 0.0
    head = 34.0 + (14.0 if lower is not None and lower_label else 0.0)
    left, top = 10.0 + label_room, head
    side = cell * n
    width, height = left + side + 90.0, top + side + label_room + 10.0
    rows, cols = np.nonzero(np.triu(np.isfinite(up), 1) | np.tril(np.isfinite(low), -1))
    values = np.where(cols > rows, up[rows, cols], low[rows, cols])
    top_value = float(values.max()) if len(values) else 1.0
    colours = viridis(values / max(top_value, 1.0))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="9">',
           f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
           f'<text x="{left:.1f}" y="14" font-size="11">{escape(title)}</text>',
           f'<text x="{left:.1f}" y="28">upper: {escape(upper_label)}</text>']
    if lower is not None and lower_label:
        out.append(f'<text x="{left:.1f}" y="42">lower: {escape(lower_label)}</text>')
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{side:.1f}" height="{side:.1f}" fill="#f4f4f4" '
               'stroke="#999" stroke-width="0.5"/>')
    hover = n <= HOVER_MAX
    for r, c, v, colour in zip(rows.tolist(), cols.tolist(), values.tolist(), colours, strict=True):
        rect = (f'<rect x="{left + c * cell:.1f}" y="{top + r * cell:.1f}" width="{cell:.1f}" '
                f'height="{cell:.1f}" fill="{colour}"')
        if hover:
            label = upper_label if c > r else (lower_label or upper_label)
            a, b = sorted((names[r], names[c]))
            out.append(f"{rect}><title>{escape(a)} | {escape(b)}: {v:.0f} {escape(label)}</title></rect>")
        else:
            out.append(rect + "/>")
    if labelled:
        for i, name in enumerate(names):
            mid = i * cell + cell / 2 + 3
            out.append(f'<text x="{left - 4:.1f}" y="{top + mid:.1f}" text-anchor="end">{escape(name)}</text>')
            x, y = left + mid - 6, top + side + 4
            out.append(f'<text transform="translate({x:.1f},{y:.1f}) rotate(90)">{escape(name)}</text>')
    bar_x, bar_h = left + side + 20.0, min(side, 200.0)
    stops = "".join(f'<stop offset="{k / (len(VIRIDIS) - 1):.3f}" stop-color="{c}"/>'
                    for k, c in enumerate(reversed(VIRIDIS)))
    out += [f'<defs><linearGradient id="bar" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>',
            f'<rect x="{bar_x:.1f}" y="{top:.1f}" width="12" height="{bar_h:.1f}" fill="url(#bar)"/>',
            f'<text x="{bar_x + 16:.1f}" y="{top + 8:.1f}">{top_value:.0f}</text>',
            f'<text x="{bar_x + 16:.1f}" y="{top + bar_h:.1f}">0</text>',
            f'<text x="{bar_x + 16:.1f}" y="{top + bar_h / 2:.1f}">count</text>', "</svg>"]
    return atomic_write(Path(path), lambda f: f.write("\n".join(out)), mode="w")
