"""Depth maps to a mesh: Open3D's scalable TSDF volume, or screened Poisson on the depth maps' points.

A `DepthFrame` is one posed depth map in the Scene's conventions: OpenCV camera axes, `cam_from_world`
(4, 4), the pinhole `K` (3, 3) in COLMAP's pixel convention (pixel (i, j) covers [j, j+1] x [i, i+1], its
centre is (j + 0.5, i + 0.5)) and depth = camera z, 0 where there is no surface. Open3D's `extrinsic` is the
same world -> camera matrix; its intrinsic puts the centre of pixel (i, j) at (j, i), so the principal point
moves by half a pixel on the way in (`_o3d_intrinsic`).

Memory: a TSDF volume allocates 16^3-voxel blocks along every ray within the truncation of its depth.
`tsdf_bytes` counts those blocks from the depth maps before anything is allocated, so that a voxel too small
for the machine is refused with the size it would need instead of exhausting memory (or running for hours).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from recon3d.geometry.projection import pixel_rays

BLOCK = 16  # voxels along a side of an Open3D TSDF block
BYTES_PER_VOXEL = 50  # Open3D 0.19 legacy TSDF, measured: resident memory grows by ~50 B a block voxel


@dataclass(frozen=True)
class DepthFrame:
    depth: np.ndarray  # (H, W) float32 camera z, 0 = no surface
    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3) float64 pinhole, COLMAP pixel convention
    cam_from_world: np.ndarray  # (4, 4) float64

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre, world frame."""
        return -self.cam_from_world[:3, :3].T @ self.cam_from_world[:3, 3]


def backproject(frame: DepthFrame, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float64 of the frame's pixels with depth > 0 (every `stride`-th row and column, at
    pixel centres) and their colours (N, 3) uint8."""
    h, w = frame.depth.shape
    keep = frame.depth[::stride, ::stride] > 0
    cam = pixel_rays(frame.K, w, h)[::stride, ::stride][keep] * frame.depth[::stride, ::stride][keep, None]
    R, t = frame.cam_from_world[:3, :3], frame.cam_from_world[:3, 3]
    return (cam - t) @ R, frame.rgb[::stride, ::stride][keep]


def crop_depth(frame: DepthFrame, box: tuple[np.ndarray, np.ndarray]) -> DepthFrame:
    """The frame with depth set to 0 where its point falls outside the axis-aligned box (min (3,), max (3,))."""
    h, w = frame.depth.shape
    cam = pixel_rays(frame.K, w, h) * frame.depth[..., None].astype(np.float64)
    R, t = frame.cam_from_world[:3, :3], frame.cam_from_world[:3, 3]
    world = (cam - t) @ R
    inside = np.all((world >= box[0]) & (world <= box[1]), axis=-1)
    return DepthFrame(np.where(inside, frame.depth, 0).astype(np.float32), frame.rgb, frame.K, frame.cam_from_world)


def tsdf_bytes(frames: list[DepthFrame], voxel: float, trunc: float, limit: float = np.inf) -> int:
    """Memory a TSDF volume of `voxel` and `trunc` needs for these frames: the 16^3-voxel blocks that every
    surface point, and the points `trunc` in front of and behind it along its ray, fall in. Counting stops once
    the blocks need more than `limit` bytes (the count so far is returned: already too many)."""
    size = BLOCK * voxel
    per_block = BLOCK**3 * BYTES_PER_VOXEL
    seen = np.zeros(0, np.int64)
    for frame in frames:
        xyz, _ = backproject(frame)
        if not len(xyz):
            continue
        ray = xyz - frame.center
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        cells = np.concatenate([np.floor((xyz + offset * ray) / size) for offset in (-trunc, 0.0, trunc)])
        cells = cells.astype(np.int64) & 0x1FFFFF  # 21 bits an axis: one int64 key a block (wraps past 2M blocks)
        keys = np.unique((cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2])
        seen = np.union1d(seen, keys)
        if len(seen) * per_block > limit:
            break
    return len(seen) * per_block


def tsdf_mesh(frames: list[DepthFrame], voxel: float, trunc: float):
    """Fuse the frames into Open3D's `ScalableTSDFVolume` (colour RGB8) and extract its triangle mesh
    (marching cubes, vertex colours). Returns an `open3d.geometry.TriangleMesh` (maybe empty)."""
    import open3d as o3d

    volume = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=float(voxel), sdf_trunc=float(trunc),
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8)
    for frame in frames:
        h, w = frame.depth.shape
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(frame.rgb)),
            o3d.geometry.Image(np.ascontiguousarray(frame.depth, dtype=np.float32)),
            depth_scale=1.0, depth_trunc=float(np.finfo(np.float32).max), convert_rgb_to_intensity=False)
        volume.integrate(rgbd, _o3d_intrinsic(frame.K, w, h), np.asarray(frame.cam_from_world, dtype=np.float64))
    mesh = volume.extract_triangle_mesh()
    mesh.compute_vertex_normals()
    return mesh


def dense_cloud(frames: list[DepthFrame], voxel: float, stride: int = 1):
    """The frames' points as one Open3D point cloud, voxel-downsampled to `voxel`, with normals from each
    frame's own neighbourhoods oriented towards the camera that saw them (screened Poisson needs
    consistent normals; a surface seen from a camera faces it)."""
    import open3d as o3d

    merged = o3d.geometry.PointCloud()
    for frame in frames:
        xyz, rgb = backproject(frame, stride)
        if len(xyz) < 16:
            continue
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        cloud.colors = o3d.utility.Vector3dVector(rgb / 255.0)
        cloud = cloud.voxel_down_sample(voxel)
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * voxel, max_nn=30))
        cloud.orient_normals_towards_camera_location(frame.center)
        merged += cloud
    return merged.voxel_down_sample(voxel)


def poisson_mesh(cloud, depth: int, trim: float, reach: float):
    """Open3D's screened Poisson reconstruction of an oriented point cloud (octree `depth`). Poisson closes the
    surface everywhere, so two trims follow: the vertices whose density (how many points support them) is in
    the lowest `trim` quantile, and those farther than `reach` (world units) from every point."""
    import open3d as o3d

    with _stderr_to_null():  # PoissonRecon's own "[WARNING] <Open3D's build path>.inl: Found bad data" lines,
        # printed past Open3D's verbosity setting: nothing a user can act on
        mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth)
    densities = np.asarray(densities)
    far = np.asarray(o3d.geometry.PointCloud(mesh.vertices).compute_point_cloud_distance(cloud)) > reach
    if trim > 0 and len(densities):
        far |= densities < np.quantile(densities, trim)
    mesh.remove_vertices_by_mask(far)
    mesh.compute_vertex_normals()
    return mesh


@contextmanager
def _stderr_to_null() -> Iterator[None]:
    """File descriptor 2 to /dev/null while the block runs (a C++ library's prints; Python's errors still raise)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _o3d_intrinsic(K: np.ndarray, width: int, height: int):
    import open3d as o3d

    return o3d.camera.PinholeCameraIntrinsic(width, height, float(K[0, 0]), float(K[1, 1]),
                                             float(K[0, 2]) - 0.5, float(K[1, 2]) - 0.5)


def clean_mesh(mesh, box: tuple[np.ndarray, np.ndarray] | None, min_cluster: float, max_triangles: int):
    """Open3D's cleaning, in place and returned: crop to the axis-aligned `box` (min (3,), max (3,)), drop
    duplicated and degenerate triangles and unreferenced vertices, keep the connected clusters with at least
    `min_cluster` times the triangles of the largest (0 keeps all), then quadric decimation to
    `max_triangles` (0 = none)."""
    import open3d as o3d

    if box is not None and len(mesh.vertices):
        mesh = mesh.crop(o3d.geometry.AxisAlignedBoundingBox(np.asarray(box[0], float), np.asarray(box[1], float)))
    mesh.remove_duplicated_vertices()
    mesh.remove_duplicated_triangles()
    mesh.remove_degenerate_triangles()
    if min_cluster > 0 and len(mesh.triangles):
        ids, counts, _ = mesh.cluster_connected_triangles()
        ids, counts = np.asarray(ids), np.asarray(counts)
        mesh.remove_triangles_by_mask(counts[ids] < min_cluster * counts.max())
    mesh.remove_unreferenced_vertices()
    if 0 < max_triangles < len(mesh.triangles):
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(max_triangles))
        mesh.remove_unreferenced_vertices()
    mesh.compute_vertex_normals()
    return mesh
