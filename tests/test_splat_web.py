"""The `.splat` viewing copy: its 32-byte records, quantisation bounds, render round trip, bad files; the
report's view reading it."""

import os

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon3d.errors import DataError
from recon3d.io.splat_ply import write_splats
from recon3d.io.splat_web import C0, RECORD, decode_rotations, dot_splat_records, read_dot_splat, write_dot_splat
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.rasterize import rasterize
from recon3d.radiance.metrics import psnr
from recon3d.radiance.sh import C0 as SH_C0
from recon3d.report.web_splat import in_viewer_frame, model_records, viewer_frame
from recon3d.scene import Scene
from recon3d.synthetic.rigs import orbit


def random_gaussians(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    quats = rng.normal(size=(n, 4))
    return {"means": rng.uniform(-1, 1, (n, 3)), "scales": np.log(rng.uniform(0.02, 0.08, (n, 3))),
            "quats": quats, "opacities": rng.normal(0, 2, n), "sh0": rng.normal(0, 1, (n, 1, 3)),
            "shN": np.zeros((n, 0, 3))}


def render(tensors: dict[str, np.ndarray]) -> torch.Tensor:
    model = GaussianModel.from_tensors({k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}, 0)
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 3.0  # the cube 2 to 4 units in front of the camera
    K = torch.tensor([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]])
    with torch.no_grad():
        rgb, *_ = rasterize(model.means, model.quats, model.scales, model.opacities, model.sh, cam_from_world, K,
                            160, 120, sh_degree=0, background=torch.ones(3))
    return rgb.clamp(0, 1)


def test_records_are_32_bytes_most_important_first_within_8_bit_steps(tmp_path):
    assert C0 == SH_C0 and RECORD.itemsize == 32
    g = random_gaussians(500)
    path = write_dot_splat(tmp_path / "m.splat", g)
    assert path.stat().st_size == 500 * 32
    back = read_dot_splat(path)
    opacity = 1 / (1 + np.exp(-g["opacities"]))
    order = np.argsort(-np.exp(g["scales"].sum(1)) * opacity, kind="stable")
    np.testing.assert_array_equal(back["means"], g["means"].astype(np.float32)[order])
    np.testing.assert_allclose(back["scales"], g["scales"][order], atol=1e-6)
    back_opacity = 1 / (1 + np.exp(-back["opacities"].astype(np.float64)))
    assert np.abs(back_opacity - np.clip(opacity[order], 1e-6, 1)).max() <= 0.5 / 255 + 1e-6
    rgb = np.clip(0.5 + C0 * g["sh0"][order, 0], 0, 1)
    assert np.abs(0.5 + C0 * back["sh0"][:, 0] - rgb).max() <= 0.5 / 255 + 1e-6
    unit = g["quats"][order] / np.linalg.norm(g["quats"][order], axis=1, keepdims=True)
    cos = np.abs((back["quats"] * unit).sum(1))  # q and -q are one rotation
    assert cos.min() > 0.999
    assert back["shN"].shape == (500, 0, 3)


def test_a_model_renders_the_same_from_its_splat_file(tmp_path):
    g = random_gaussians(2000, seed=1)
    g["sh0"] = np.clip(g["sh0"], -1.7, 1.7)  # colours in [0, 1]: what 8 bits can hold
    before = render(g)
    after = render(read_dot_splat(write_dot_splat(tmp_path / "m.splat", g)))
    assert psnr(after, before) > 40  # 8-bit colour, opacity and rotation


@pytest.mark.parametrize("data", [b"", b"\0" * 33, np.full(8, np.nan, np.float32).tobytes()])
def test_a_damaged_splat_file_is_named(tmp_path, data):
    path = tmp_path / "bad.splat"
    path.write_bytes(data)
    with pytest.raises(DataError, match="bad.splat"):
        read_dot_splat(path)


def test_the_reports_view_reads_the_splat_prefix_the_same_as_the_ply(tmp_path):
    """The report takes the most important Gaussians from the first records of `point_cloud.splat` (a prefix,
    whatever the model's size); they equal the PLY's, which it reads when no `.splat` (or only an older one) is
    beside it. In the viewer's frame, colours stay and rotations match the unquantised ones within 8-bit steps."""
    g = {k: v.astype(np.float32) for k, v in random_gaussians(300, seed=3).items()}
    write_splats(tmp_path / "point_cloud.ply", g)
    from_ply, total = model_records(tmp_path, limit=100)  # no .splat yet
    assert total == 300 and len(from_ply) == 100
    write_dot_splat(tmp_path / "point_cloud.splat", g)
    from_splat, total = model_records(tmp_path, limit=100)
    assert total == 300 and from_splat.tobytes() == from_ply.tobytes() == dot_splat_records(g)[:100].tobytes()
    (tmp_path / "point_cloud.splat").write_bytes(b"\0" * 64)  # a stale .splat, older than the PLY: not read
    ply_stat = (tmp_path / "point_cloud.ply").stat()
    os.utime(tmp_path / "point_cloud.splat", (ply_stat.st_atime, ply_stat.st_mtime - 10))
    assert model_records(tmp_path, limit=100)[0].tobytes() == from_ply.tobytes()

    scene = Scene(poses={f"c{i}": pose for i, pose in enumerate(orbit(6))})
    moved = in_viewer_frame(from_splat, scene)
    assert np.array_equal(moved["rgba"], from_splat["rgba"])
    rotation, scale = viewer_frame(scene, np.median(from_splat["position"], 0).astype(np.float64))
    np.testing.assert_allclose(moved["scale"], from_splat["scale"] * scale, rtol=1e-6)
    order = np.argsort(-np.exp(g["scales"].astype(np.float64).sum(1)) / (1 + np.exp(-g["opacities"])),
                       kind="stable")[:100]
    exact = (Rotation.from_matrix(rotation) * Rotation.from_quat(g["quats"][order], scalar_first=True))
    got = Rotation.from_quat(decode_rotations(moved["rot"]), scalar_first=True)
    assert np.degrees((got.inv() * exact).magnitude()).max() < 3.0  # two 8-bit quantisations


def test_the_gaussians_of_a_run_are_found_under_their_node(tmp_path):
    """A splat run publishes OUT/gaussians/, a compare run OUT/gaussians-s0/ (and -s1 ...): export, the viewer
    and the report find either; a NeRF alone, or a Gaussians node whose files are gone, is no Gaussians."""
    from recon3d.report.web_splat import gaussians_folder
    from recon3d.scene import RadianceModel, Scene

    compare = Scene(radiance={"gaussians-s0": RadianceModel("gaussians", "a"), "nerf-s0": RadianceModel("nerf", "b"),
                              "gaussians-s1": RadianceModel("gaussians", "c")})
    assert gaussians_folder(tmp_path, compare) is None  # nothing published
    for node in ("gaussians-s1", "gaussians-s0", "nerf-s0"):
        (tmp_path / node).mkdir()
        (tmp_path / node / "point_cloud.ply").write_bytes(b"ply")
    assert gaussians_folder(tmp_path, compare) == tmp_path / "gaussians-s0"
    assert gaussians_folder(tmp_path, Scene(radiance={"nerf-s0": RadianceModel("nerf", "b")})) is None
    assert gaussians_folder(tmp_path, None) is None
