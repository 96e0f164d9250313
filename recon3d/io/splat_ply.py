"""The 3D Gaussian Splatting `.ply` layout (INRIA's `point_cloud.ply`), which splat viewers load.

One binary little-endian `vertex` element, float32 properties in this order:
`x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`, where opacity is a logit, scales
are log standard deviations, rot is a (w, x, y, z) quaternion and `f_rest` is channel-major: coefficient k
(1..K-1) of channel c is `f_rest_{c (K-1) + k - 1}`. Normals are written as zeros. World frame as the Scene.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from recon3d.errors import DataError
from recon3d.io.files import atomic_write
from recon3d.io.ply import read_vertices


def write_splats(path: str | Path, tensors: dict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write Gaussians given as recon3d's raw parameters (numpy): means (N, 3), scales (N, 3) log,
    quats (N, 4) wxyz, opacities (N,) logits, sh0 (N, 1, 3), shN (N, K-1, 3); `extra` (N,) arrays become
    further properties after the layout's own (int32 for integer arrays, such as lift_labels' `class`)."""
    means = np.asarray(tensors["means"], np.float32)
    n = len(means)
    sh_rest = np.asarray(tensors["shN"], np.float32).reshape(n, -1, 3)
    rest = sh_rest.transpose(0, 2, 1).reshape(n, -1)  # channel-major
    columns = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2],
               "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n)}
    dc = np.asarray(tensors["sh0"], np.float32).reshape(n, 3)
    columns.update({f"f_dc_{i}": dc[:, i] for i in range(3)})
    columns.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
    columns["opacity"] = np.asarray(tensors["opacities"], np.float32).reshape(n)
    scales = np.asarray(tensors["scales"], np.float32)
    columns.update({f"scale_{i}": scales[:, i] for i in range(3)})
    quats = np.asarray(tensors["quats"], np.float32)
    columns.update({f"rot_{i}": quats[:, i] for i in range(4)})
    columns.update(extra or {})
    vertex = np.empty(n, dtype=[(name, "i4" if np.issubdtype(np.asarray(v).dtype, np.integer) else "f4")
                                for name, v in columns.items()])
    for name, values in columns.items():
        vertex[name] = values
    data = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    return atomic_write(path, data.write)


def read_splats(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Read a 3DGS `.ply` into recon3d's raw parameters (see `write_splats`) and the SH degree."""
    path = Path(path)
    vertex = read_vertices(path, "Gaussians", "pass a 3DGS point_cloud.ply")
    names = set(vertex.dtype.names)
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [f"scale_{i}" for i in range(3)] + \
        [f"rot_{i}" for i in range(4)]
    missing = [k for k in need if k not in names]
    if missing:
        raise DataError(f"{path} is not in the 3DGS layout: no {', '.join(missing)}",
                        "export it with a 3DGS trainer (INRIA, gsplat, nerfstudio splatfacto) or recon3d")
    n_rest = sum(1 for k in names if k.startswith("f_rest_"))
    k = n_rest // 3 + 1
    degree = round(math.sqrt(k)) - 1
    if n_rest % 3 or (degree + 1) ** 2 != k or degree > 3 or not {f"f_rest_{i}" for i in range(n_rest)} <= names:
        raise DataError(f"{path} has {n_rest} f_rest properties, which is no SH degree 0..3",
                        "expected 0, 9, 24 or 45 f_rest_* properties")
    odd = [name for name in need + [f"f_rest_{i}" for i in range(n_rest)] if vertex.dtype[name].kind not in "fiu"]
    if odd:
        raise DataError(f"{path}: property {odd[0]} is not a number per vertex", "pass a 3DGS point_cloud.ply")
    n = len(vertex)
    col = lambda name: np.asarray(vertex[name], np.float32)  # noqa: E731
    rest = np.stack([col(f"f_rest_{i}") for i in range(n_rest)], -1) if n_rest else np.zeros((n, 0), np.float32)
    tensors = {
        "means": np.stack([col("x"), col("y"), col("z")], -1),
        "scales": np.stack([col(f"scale_{i}") for i in range(3)], -1),
        "quats": np.stack([col(f"rot_{i}") for i in range(4)], -1),
        "opacities": col("opacity"),
        "sh0": np.stack([col(f"f_dc_{i}") for i in range(3)], -1)[:, None, :],
        "shN": rest.reshape(n, 3, k - 1).transpose(0, 2, 1).copy(),
    }
    return tensors, degree
