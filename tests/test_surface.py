"""Surfaces from depth maps (recon3d.surface) against the exact synthetic world, and the mesh files."""

from __future__ import annotations

import numpy as np
import pytest

from recon3d.io.mesh import read_mesh, write_mesh
from recon3d.surface import fuse, measure
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.render import render
from recon3d.synthetic.rigs import make_rig
from recon3d.synthetic.surfaces import make_world, quad_mesh


@pytest.fixture(scope="module")
def world():
    """True depth maps of the seed-0 world from 12 orbit cameras (160 x 120), the true mesh, its seen points."""
    quads = make_world(0)
    camera = make_camera("PINHOLE", 160, 120)
    frames = []
    for pose in make_rig("orbit", 12):
        rgb, depth = render(quads, camera, pose)
        frames.append(fuse.DepthFrame(np.where(np.isfinite(depth), depth, 0).astype(np.float32), rgb, camera.K, pose))
    seen = np.concatenate([fuse.backproject(f)[0] for f in frames])
    extent = float(np.linalg.norm(seen.max(0) - seen.min(0)))
    return frames, measure.o3d_mesh(*quad_mesh(quads)), seen[::7], extent


def test_backproject_lands_on_the_true_surface(world):
    frames, truth, _, extent = world
    xyz, rgb = fuse.backproject(frames[0])
    assert len(xyz) == (frames[0].depth > 0).sum() and rgb.dtype == np.uint8
    assert measure.mesh_distance(truth, xyz).max() < 1e-4 * extent  # pixel centres, exact depth


def test_tsdf_of_true_depth_is_within_a_fraction_of_a_voxel(world):
    frames, truth, seen, extent = world
    voxel = extent / 512
    mesh = fuse.clean_mesh(fuse.tsdf_mesh(frames, voxel, 4 * voxel), None, 0.02, 0)
    score = measure.score_surface(mesh, truth, seen, threshold=0.01 * extent, samples=50_000)
    assert score.accuracy < 0.15 * voxel and score.completeness < 0.25 * voxel  # a half-pixel error would be ~5x
    assert score.fscore > 0.99
    assert mesh.has_vertex_colors()


def test_poisson_of_true_depth_covers_the_surface(world):
    frames, truth, seen, extent = world
    cloud = fuse.dense_cloud(frames, extent / 400)
    assert cloud.has_normals() and len(cloud.points) > 10_000
    mesh = fuse.poisson_mesh(cloud, depth=8, trim=0.02, reach=3 * extent / 400)
    score = measure.score_surface(mesh, truth, seen, threshold=0.01 * extent, samples=50_000)
    assert score.fscore > 0.95 and score.chamfer < 0.005 * extent


def test_tsdf_memory_estimate_grows_with_the_inverse_square_of_the_voxel(world):
    frames, _, _, extent = world
    coarse, fine = (fuse.tsdf_bytes(frames, extent / r, 4 * extent / r) for r in (128, 512))
    assert 8 < fine / coarse < 20  # surface blocks: ~16x for a 4x smaller voxel
    assert fuse.tsdf_bytes([fuse.DepthFrame(np.zeros_like(frames[0].depth), *(
        frames[0].rgb, frames[0].K, frames[0].cam_from_world))], 0.01, 0.04) == 0


def test_crop_depth_keeps_only_the_points_inside_the_box(world):
    frames, _, _, _ = world
    box = (np.array([-1.0, -1.0, -0.1]), np.array([1.0, 1.0, 2.0]))
    cropped = fuse.crop_depth(frames[0], box)
    xyz, _ = fuse.backproject(cropped)
    assert len(xyz) and np.all((xyz >= box[0] - 1e-6) & (xyz <= box[1] + 1e-6))
    assert (cropped.depth > 0).sum() < (frames[0].depth > 0).sum()


def test_clean_mesh_drops_small_pieces_and_decimates():
    import open3d as o3d

    big = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=40)
    small = o3d.geometry.TriangleMesh.create_sphere(radius=0.05, resolution=4).translate((3.0, 0, 0))
    mesh = fuse.clean_mesh(big + small, None, min_cluster=0.02, max_triangles=0)
    assert len(mesh.triangles) == len(big.triangles)
    assert np.asarray(mesh.vertices)[:, 0].max() < 1.01
    decimated = fuse.clean_mesh(big, None, 0.0, max_triangles=500)
    assert 400 <= len(decimated.triangles) <= 500
    cropped = fuse.clean_mesh(big, (np.array([-2, -2, 0.0]), np.array([2, 2, 2.0])), 0.0, 0)
    assert np.asarray(cropped.vertices)[:, 2].min() >= 0


def test_raycast_sees_the_true_depth_and_silhouette(world):
    frames, truth, _, _ = world
    frame = frames[3]
    h, w = frame.depth.shape
    view = measure.raycast_view(truth, frame.K, frame.cam_from_world, w, h)
    assert measure.silhouette_iou(view, frame.depth > 0) > 0.999
    both = view.hit & (frame.depth > 0)
    assert np.abs(view.depth[both] - frame.depth[both]).max() < 1e-3
    picture = measure.shaded(view, frame.cam_from_world)
    assert picture.shape == (h, w, 3) and picture[~view.hit].min() == 255 and picture[view.hit].max() < 255


@pytest.mark.parametrize("fmt", ["ply", "obj", "glb"])
def test_mesh_files_open_in_open3d_and_trimesh(tmp_path, fmt):
    import trimesh

    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.5]], dtype=np.float64)
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float64)
    path = write_mesh(tmp_path / f"m.{fmt}", vertices, triangles, colors)
    loaded = trimesh.load(path, force="mesh", process=False)
    assert loaded.faces.shape == (2, 3)
    assert np.allclose(np.sort(loaded.vertices, axis=0), np.sort(vertices, axis=0), atol=1e-6)
    assert np.allclose(np.sort(loaded.visual.vertex_colors[:, :3], axis=0), np.sort(colors * 255, axis=0), atol=1)
    mesh = read_mesh(path)
    assert len(mesh.triangles) == 2 and mesh.has_vertex_colors()


def test_bad_mesh_files_are_named(tmp_path):
    from recon3d.errors import DataError

    with pytest.raises(DataError, match="m.stl"):
        write_mesh(tmp_path / "m.stl", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    (tmp_path / "empty.ply").write_bytes(b"")
    with pytest.raises(DataError, match="empty.ply"):
        read_mesh(tmp_path / "empty.ply")
    with pytest.raises(DataError, match="missing.ply"):
        read_mesh(tmp_path / "missing.ply")
