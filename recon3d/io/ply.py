"""PLY point clouds (plyfile): positions in float64, colours in uint8, optional per-point scalars.

Binary little-endian, the layout COLMAP's `points3D.ply`, Open3D, MeshLab and CloudCompare read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from recon3d.errors import DataError
from recon3d.io.files import atomic_write


def write_points(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None,
                 scalars: dict[str, np.ndarray] | None = None) -> Path:
    """Write N points to `path` atomically.

    xyz: (N, 3) float64; rgb: (N, 3) uint8 or None; scalars: name -> (N,) values stored as vertex
    properties, int32 for integer arrays (`track_length`, `class`), float32 otherwise (`error`).
    Returns `path`.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    fields = [("x", "f8"), ("y", "f8"), ("z", "f8")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    scalars = scalars or {}
    scalars = {name: np.asarray(values) for name, values in scalars.items()}
    fields += [(name, "i4" if np.issubdtype(v.dtype, np.integer) else "f4") for name, v in scalars.items()]
    vertex = np.empty(len(xyz), dtype=fields)
    for i, k in enumerate("xyz"):
        vertex[k] = xyz[:, i]
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        for i, k in enumerate(("red", "green", "blue")):
            vertex[k] = rgb[:, i]
    for name, values in scalars.items():
        vertex[name] = values
    return atomic_write(Path(path), PlyData([PlyElement.describe(vertex, "vertex")]).write)


def read_vertices(path: str | Path, what: str, fix: str) -> np.ndarray:
    """The `vertex` element of a PLY file of `what` as a structured array with at least x, y, z; any file
    plyfile cannot parse into that is a DataError naming it (with `fix`)."""
    try:
        vertex = PlyData.read(str(path))["vertex"].data
        names = vertex.dtype.names or ()
    except Exception as exc:  # noqa: BLE001 - whatever the parser trips on in a user's file is a data error
        raise DataError(f"cannot read {what} from {path} ({type(exc).__name__}: {exc})", fix) from None
    missing = [k for k in "xyz" if k not in names]
    if missing:
        raise DataError(f"{path}: its vertices have no {', '.join(missing)}", fix)
    return vertex


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(xyz (N, 3) float64, rgb (N, 3) uint8 or None, other vertex properties by name) of a PLY file."""
    vertex = read_vertices(path, "a point cloud",
                           "pass a PLY file with a vertex element (x, y, z; red, green, blue optional)")
    names = vertex.dtype.names
    xyz = np.column_stack([vertex[k] for k in "xyz"]).astype(np.float64)
    colour = ("red", "green", "blue")
    rgb = np.column_stack([vertex[k] for k in colour]).astype(np.uint8) if set(colour) <= set(names) else None
    rest = {n: np.asarray(vertex[n]) for n in names if n not in ("x", "y", "z", *colour)}
    return xyz, rgb, rest
