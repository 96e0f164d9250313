"""Triangle meshes as files MeshLab, Blender and game engines open: binary PLY and OBJ with vertex colours,
and glTF binary (`.glb`, COLOR_0 vertex colours), written through trimesh, each atomically.

Coordinates are written as they are (recon3d's world frame, whatever units the reconstruction has); glTF
readers assume y up, so a z-up world lies on its back in Blender, as a COLMAP model's points do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import atomic_write

FORMATS = ("ply", "obj", "glb")


def write_mesh(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write a mesh; the format is the file's suffix (one of FORMATS).

    vertices: (V, 3) float64 world; triangles: (F, 3) int indices, counter-clockwise seen from outside;
    colors: (V, 3) float in [0, 1] or None.
    """
    import trimesh

    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind not in FORMATS:
        raise DataError(f"cannot write a mesh as {path.name}", f"use one of: {', '.join('.' + f for f in FORMATS)}")
    rgba = None
    if colors is not None and len(colors):
        rgba = np.column_stack([(np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8),
                                np.full(len(colors), 255, np.uint8)])
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(triangles, np.int64), vertex_colors=rgba,
                           process=False)
    return atomic_write(path, lambda f: mesh.export(file_obj=f, file_type=kind))


def write_o3d_mesh(path: str | Path, mesh) -> Path:
    """`write_mesh` of an Open3D TriangleMesh (its vertex colours, when it has them)."""
    colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
    return write_mesh(path, np.asarray(mesh.vertices), np.asarray(mesh.triangles), colors)


def read_mesh(path: str | Path):
    """An Open3D TriangleMesh from a PLY / OBJ / GLB file; DataError naming the file when it holds no triangles."""
    import open3d as o3d

    path = Path(path)
    if not path.is_file():
        raise DataError(f"mesh file {path} does not exist", "pass the mesh.ply that `recon3d mesh` wrote")
    mesh = o3d.io.read_triangle_mesh(str(path))
    if not len(mesh.triangles):
        raise DataError(f"{path} holds no triangles (damaged, or not a mesh)", "re-run `recon3d mesh` on the run")
    return mesh
