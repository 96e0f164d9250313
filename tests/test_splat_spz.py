"""`.spz` (Niantic's compressed splats): the layout as spz's spec gives it, quantisation bounds, the axis flip,
reading version 3's smallest-three rotations, a render round trip and damaged files."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from recon3d.errors import DataError
from recon3d.io.splat_spz import HEADER, MAGIC, read_spz, write_spz
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.rasterize import rasterize
from recon3d.radiance.metrics import psnr


def gaussians(n: int, degree: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"means": rng.uniform(-1, 1, (n, 3)), "scales": np.log(rng.uniform(0.02, 0.08, (n, 3))),
            "quats": rng.normal(size=(n, 4)), "opacities": rng.normal(0, 2, n),
            "sh0": rng.normal(0, 0.8, (n, 1, 3)), "shN": rng.normal(0, 0.15, (n, (degree + 1) ** 2 - 1, 3))}


def test_header_and_sizes_follow_the_spec(tmp_path):
    g = gaussians(100, degree=2)
    data = gzip.decompress(write_spz(tmp_path / "m.spz", g).read_bytes())
    magic, version, n, degree, bits, flags, reserved = HEADER.unpack_from(data)
    assert (magic, version, n, degree, bits, flags, reserved) == (MAGIC, 2, 100, 2, 12, 0, 0)
    assert data[:4] == b"NGSP"
    assert len(data) == 16 + 100 * (9 + 1 + 3 + 3 + 3 + 8 * 3)  # positions, alpha, colour, scale, rotation, SH
    first_x = int.from_bytes(data[16:19], "little", signed=True)  # 24-bit fixed point, 12 fractional bits
    assert first_x == round(g["means"][0, 0] * 4096)
    alpha = data[16 + 900]
    assert alpha == round(255 / (1 + math.exp(-g["opacities"][0])))


def test_round_trip_within_the_quantisation(tmp_path):
    g = gaussians(500)
    back = read_spz(write_spz(tmp_path / "m.spz", g))
    assert np.abs(back["means"] - g["means"]).max() <= 0.5 / 4096 + 1e-6
    assert np.abs(back["scales"] - g["scales"]).max() <= 0.5 / 16 + 1e-6
    alpha, back_alpha = (1 / (1 + np.exp(-x)) for x in (g["opacities"], back["opacities"].astype(np.float64)))
    assert np.abs(back_alpha - np.clip(alpha, 1e-6, 1)).max() <= 0.5 / 255 + 1e-6
    assert np.abs(back["sh0"] - g["sh0"]).max() <= 0.5 / (0.15 * 255) + 1e-6
    unit = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    assert np.abs((back["quats"] * unit).sum(1)).min() > 0.995  # 8 bits per component; q and -q are one rotation
    band1, rest = np.abs(back["shN"] - g["shN"])[:, :3], np.abs(back["shN"] - g["shN"])[:, 3:]
    assert band1.max() <= 4.5 / 128 and rest.max() <= 8.5 / 128  # 5 and 4 bits


def test_stored_axes_are_right_up_back(tmp_path):
    """A 3DGS .ply is right-down-front; spz stores right-up-back: y and z of the position flip on disk."""
    g = gaussians(1)
    g["means"] = np.array([[0.5, 0.25, -0.75]])
    data = gzip.decompress(write_spz(tmp_path / "m.spz", g).read_bytes())
    stored = [int.from_bytes(data[16 + 3 * i:19 + 3 * i], "little", signed=True) / 4096 for i in range(3)]
    assert stored == [0.5, -0.25, 0.75]


def _smallest_three(q_xyzw: np.ndarray) -> bytes:
    """spz version 3's rotation, encoded as its spec gives it (a test-side reference)."""
    q = q_xyzw / np.linalg.norm(q_xyzw)
    largest = int(np.argmax(np.abs(q)))
    negate = q[largest] < 0
    comp = largest
    for i in range(4):
        if i != largest:
            negbit = int((q[i] < 0) ^ negate)
            comp = (comp << 10) | (negbit << 9) | int(511 * abs(q[i]) / math.sqrt(0.5) + 0.5)
    return comp.to_bytes(4, "little")


def test_version_3_rotations_are_read(tmp_path):
    g = gaussians(50, degree=0)
    data = bytearray(gzip.decompress(write_spz(tmp_path / "v2.spz", g).read_bytes()))
    n = 50
    before = 16 + n * (9 + 1 + 3 + 3)
    unit = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    stored = unit[:, [1, 2, 3, 0]] * [1, -1, -1, 1]  # xyzw, right-up-back
    rotations = b"".join(_smallest_three(q) for q in stored)
    v3 = bytes(data[:4]) + struct.pack("<I", 3) + bytes(data[8:before]) + rotations
    (tmp_path / "v3.spz").write_bytes(gzip.compress(v3))
    back = read_spz(tmp_path / "v3.spz")
    assert np.abs((back["quats"] * unit).sum(1)).min() > 0.9995  # 9 bits per component


def render(tensors: dict[str, np.ndarray], degree: int) -> torch.Tensor:
    model = GaussianModel.from_tensors({k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()},
                                       degree)
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 3.0
    K = torch.tensor([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]])
    with torch.no_grad():
        rgb, *_ = rasterize(model.means, model.quats, model.scales, model.opacities, model.sh, cam_from_world, K,
                            160, 120, sh_degree=degree, background=torch.ones(3))
    return rgb.clamp(0, 1)


def test_a_model_renders_the_same_from_its_spz_file_view_dependent_colour_included(tmp_path):
    g = gaussians(2000, degree=3, seed=1)
    before = render(g, 3)
    after = render(read_spz(write_spz(tmp_path / "m.spz", g)), 3)
    assert psnr(after, before) > 35
    assert psnr(render({**g, "shN": g["shN"][:, :0]}, 0), before) < psnr(after, before) - 5  # the SH matter here


@pytest.mark.parametrize("data", [b"", b"not gzip", gzip.compress(b"NGSP"), gzip.compress(b"\0" * 40),
                                  gzip.compress(HEADER.pack(MAGIC, 2, 10, 0, 12, 0, 0) + b"\0" * 10)])
def test_a_damaged_spz_file_is_named(tmp_path, data):
    path = tmp_path / "bad.spz"
    path.write_bytes(data)
    with pytest.raises(DataError, match="bad.spz"):
        read_spz(path)
