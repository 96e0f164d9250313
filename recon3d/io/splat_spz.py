"""Niantic's `.spz`: gzip-compressed Gaussians, about a tenth of the 3DGS `.ply`, view-dependent colour kept.

Written as version 2 (the version every spz reader opens; 3 only changes the rotation to "smallest three"),
read in versions 2 and 3. After the gzip stream's 16-byte header (little-endian: magic 0x5053474e "NGSP",
version, number of Gaussians, SH degree, fractional bits, flags, a reserved byte) come, attribute by
attribute: positions as 24-bit signed fixed point (`fractional bits` of fraction), alphas (sigmoid x 255),
colours (SH DC x 0.15 x 255 + 127.5: room for colours that the higher bands bring back into range), scales
((log + 10) x 16), rotations (v2: x, y, z of the unit quaternion with w >= 0, x 127.5 + 127.5; v3: the
smallest three, 9 bits each, and the largest one's index) and the SH bands 1..3 (x 128 + 128, coefficient
by coefficient with the colour innermost, band 1 kept to 5 bits and the others to 4, as spz's defaults).

Axes: spz stores right-up-back (three.js); a 3DGS `.ply` is read as right-down-front, so y and z flip
(positions, the quaternion's y and z, and the SH coefficients odd in y or z), as spz's own PLY converter does.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import atomic_write

MAGIC, VERSION = 0x5053474E, 2
COLOR_SCALE = 0.15
HEADER = struct.Struct("<IIIBBBB")
# sign of each SH coefficient (bands 1..3, 3DGS order) under (x, y, z) -> (x, -y, -z)
SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float64)
BUCKET_BAND1, BUCKET_REST = 8, 16  # 5 and 4 bits


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def write_spz(path: str | Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write Gaussians given as recon3d's raw parameters (numpy): means (N, 3), scales (N, 3) log, quats (N, 4)
    wxyz, opacities (N,) logits, sh0 (N, 1, 3), shN (N, K - 1, 3) with K = (degree + 1)^2, degree <= 3."""
    means = np.asarray(tensors["means"], np.float64) * [1, -1, -1]
    n, rest = len(means), np.asarray(tensors["shN"], np.float64)
    degree = round(math.sqrt(rest.shape[1] + 1)) - 1
    if (degree + 1) ** 2 != rest.shape[1] + 1 or degree > 3:
        raise ValueError(f"shN holds {rest.shape[1]} coefficients per Gaussian: no SH degree 0..3")
    reach = float(np.abs(means).max()) if n else 0.0
    bits = min(12, 23 - max(0, math.ceil(math.log2(reach + 1))))  # 24-bit signed: |x| < 2^(23 - bits)
    if bits < 0:
        raise DataError(f"Gaussians reach {reach:.3g} from the origin; .spz positions stop at 2^23",
                        "export as ply or splat instead")
    fixed = np.rint(means * (1 << bits)).astype(np.int64).reshape(-1) & 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, fixed >> 16], -1).astype(np.uint8)
    alphas = _u8(255 / (1 + np.exp(-np.asarray(tensors["opacities"], np.float64).reshape(-1))))
    colours = _u8(np.asarray(tensors["sh0"], np.float64).reshape(n, 3) * (COLOR_SCALE * 255) + 127.5)
    scales = _u8((np.asarray(tensors["scales"], np.float64) + 10) * 16)
    q = np.asarray(tensors["quats"], np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    xyz = q[:, 1:] * [1, -1, -1] * np.where(q[:, :1] < 0, -1.0, 1.0)
    rotations = _u8(xyz * 127.5 + 127.5)
    sh = rest * SH_FLIP[: rest.shape[1], None]
    q_sh = np.rint(sh * 128) + 128
    bucket = np.where(np.arange(rest.shape[1]) < 3, BUCKET_BAND1, BUCKET_REST)[None, :, None]
    q_sh = np.clip((q_sh + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)
    body = b"".join([HEADER.pack(MAGIC, VERSION, n, degree, bits, 0, 0), positions.tobytes(), alphas.tobytes(),
                     colours.tobytes(), scales.tobytes(), rotations.tobytes(), q_sh.tobytes()])
    return atomic_write(path, lambda f: f.write(gzip.compress(body, compresslevel=9, mtime=0)))


def read_spz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a `.spz` (version 2 or 3) into recon3d's raw parameters (see `write_spz`)."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} is not a gzip-compressed .spz ({exc})", "pass a .spz written by spz or recon3d") \
            from exc
    if len(data) < HEADER.size:
        raise DataError(f"{path}: {len(data)} bytes, shorter than the .spz header", "the file is cut short")
    magic, version, n, degree, bits, flags, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version not in (2, 3) or degree > 3 or bits > 23:
        raise DataError(f"{path}: not a .spz this reader opens (magic {magic:#x}, version {version}, SH degree "
                        f"{degree}, {bits} fractional bits)", "versions 2 and 3, SH degree 0..3")
    if flags & 0x2:
        raise DataError(f"{path} carries spz extensions, which this reader does not open", "write it without")
    k = (degree + 1) ** 2 - 1
    rot_bytes = 4 if version == 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * k * n]
    if len(data) != HEADER.size + sum(sizes):
        raise DataError(f"{path}: {len(data) - HEADER.size} bytes of Gaussians, {sum(sizes)} expected for {n} "
                        f"of SH degree {degree}", "the file is damaged or cut short")
    offsets = np.cumsum([HEADER.size] + sizes)
    part = [np.frombuffer(data, np.uint8, size, int(o)) for o, size in zip(offsets[:-1], sizes, strict=True)]
    p = part[0].reshape(-1, 3).astype(np.int64)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.reshape(n, 3) / float(1 << bits) * [1, -1, -1]
    alpha = np.clip(part[1] / 255.0, 1e-6, 1 - 1e-6)
    quats = _rotations_v3(part[4], n) if version == 3 else _rotations_v2(part[4], n)
    quats[:, 2:] *= -1
    sh = (part[5].reshape(n, k, 3).astype(np.float64) - 128) / 128 * SH_FLIP[:k, None]
    return {"means": means.astype(np.float32), "scales": (part[3].reshape(n, 3) / 16 - 10).astype(np.float32),
            "quats": quats.astype(np.float32), "opacities": np.log(alpha / (1 - alpha)).astype(np.float32),
            "sh0": ((part[2].reshape(n, 1, 3) / 255 - 0.5) / COLOR_SCALE).astype(np.float32),
            "shN": sh.astype(np.float32)}


def _rotations_v2(raw: np.ndarray, n: int) -> np.ndarray:
    xyz = raw.reshape(n, 3) / 127.5 - 1
    w = np.sqrt(np.maximum(0.0, 1 - (xyz**2).sum(1)))
    return np.concatenate([w[:, None], xyz], 1)


def _rotations_v3(raw: np.ndarray, n: int) -> np.ndarray:
    """Smallest three: 2 bits of the largest component's index (x, y, z, w), then the other three from the last
    (9 bits of magnitude / sqrt(1/2) and a sign bit each)."""
    comp = raw.reshape(n, 4).astype(np.uint64) @ (np.uint64(1) << np.arange(0, 32, 8, dtype=np.uint64))
    largest = (comp >> np.uint64(30)).astype(np.int64)
    xyzw = np.zeros((n, 4))
    for i in range(3, -1, -1):
        mag = (comp & np.uint64(511)).astype(np.float64) / 511 * math.sqrt(0.5)
        value = np.where((comp >> np.uint64(9)) & np.uint64(1), -mag, mag)
        take = largest != i
        xyzw[take, i] = value[take]
        comp = np.where(take, comp >> np.uint64(10), comp)
    rows = np.arange(n)
    xyzw[rows, largest] = np.sqrt(np.maximum(0.0, 1 - (xyzw**2).sum(1)))
    return xyzw[:, [3, 0, 1, 2]]
