"""The `.splat` layout of antimatter15's web viewer, which most web splat viewers (and SuperSplat) open.

No header; one 32-byte record per Gaussian, little-endian, most important first (largest
`exp(sum of log-scales) x opacity`): position float32 x 3, scale float32 x 3 (standard deviations, not
logs), colour uint8 x 4 (RGB = 0.5 + C0 x SH DC, alpha = opacity, each x 255 and clipped), rotation uint8 x 4
(the unit (w, x, y, z) quaternion x 128 + 128, clipped). View-dependent colour (SH degree >= 1) is dropped,
and colour, opacity and rotation are quantised to 8 bits: a lossy viewing copy of `point_cloud.ply`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import atomic_write

C0 = 0.28209479177387814  # SH band 0 (recon3d.radiance.sh.C0; the io layer does not import torch code)
RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def _unit8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def encode_rotations(quats: np.ndarray) -> np.ndarray:
    """(N, 4) unit (w, x, y, z) quaternions -> (N, 4) uint8, `q * 128 + 128` rounded and clipped."""
    return np.clip(np.rint(np.asarray(quats, np.float64) * 128 + 128), 0, 255).astype(np.uint8)


def decode_rotations(rot: np.ndarray) -> np.ndarray:
    """(N, 4) uint8 rotations of `.splat` records -> (N, 4) float64 unit (w, x, y, z) quaternions."""
    quats = (rot.astype(np.float64) - 128) / 128
    return quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)


def write_dot_splat(path: str | Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write Gaussians given as recon3d's raw parameters (numpy): means (N, 3), scales (N, 3) log,
    quats (N, 4) wxyz, opacities (N,) logits, sh0 (N, 1, 3); shN is not stored."""
    records = dot_splat_records(tensors)
    return atomic_write(Path(path), lambda f: f.write(records.tobytes()))


def dot_splat_records(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The (N,) RECORD array of `write_dot_splat`, most important first."""
    log_scales = np.asarray(tensors["scales"], np.float64)
    opacity = 1 / (1 + np.exp(-np.asarray(tensors["opacities"], np.float64)))
    order = np.argsort(-np.exp(log_scales.sum(1)) * opacity, kind="stable")
    quats = np.asarray(tensors["quats"], np.float64)
    quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    records = np.empty(len(order), RECORD)
    records["position"] = np.asarray(tensors["means"], np.float32)[order]
    records["scale"] = np.exp(log_scales)[order]
    rgb = 0.5 + C0 * np.asarray(tensors["sh0"], np.float64).reshape(-1, 3)
    records["rgba"] = _unit8(np.concatenate([rgb, opacity[:, None]], 1))[order]
    records["rot"] = encode_rotations(quats)[order]
    return records


def read_dot_splat(path: str | Path) -> dict[str, np.ndarray]:
    """Read a `.splat` back as raw parameters (float32; shN empty: degree 0). DataError naming the file
    when it is no whole number of records or holds non-finite values."""
    path = Path(path)
    data = path.read_bytes()
    if not data or len(data) % RECORD.itemsize:
        raise DataError(f"{path} is not a .splat file: {len(data)} bytes is no whole number of 32-byte records",
                        "give a .splat written by recon3d or antimatter15's converter")
    records = np.frombuffer(data, RECORD)
    if not (np.isfinite(records["position"]).all() and np.isfinite(records["scale"]).all()
            and (records["scale"] > 0).all()):
        raise DataError(f"{path} holds non-finite positions or non-positive scales", "re-export the model")
    rgba = records["rgba"].astype(np.float64) / 255
    opacity = np.clip(rgba[:, 3], 1e-6, 1 - 1e-6)
    quats = decode_rotations(records["rot"])
    n = len(records)
    return {"means": records["position"].astype(np.float32),
            "scales": np.log(records["scale"]).astype(np.float32),
            "quats": quats.astype(np.float32),
            "opacities": np.log(opacity / (1 - opacity)).astype(np.float32),
            "sh0": ((rgba[:, :3] - 0.5) / C0).astype(np.float32).reshape(n, 1, 3),
            "shN": np.zeros((n, 0, 3), np.float32)}
