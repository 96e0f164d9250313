"""Meshes measured and pictured: distances to a reference surface, and views by ray casting (Open3D's
`RaycastingScene`, CPU, no display needed).

Accuracy and completeness follow the DTU / Tanks and Temples protocol: accuracy is the distance from points
sampled on the reconstruction to the true surface, completeness the distance from points of the true surface
(those the cameras saw) to the reconstruction; Chamfer is their mean, and the F-score at a threshold the
harmonic mean of precision (accuracy < threshold) and recall (completeness < threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon3d.geometry.projection import pixel_rays


@dataclass(frozen=True)
class SurfaceScore:
    accuracy: float  # mean distance reconstruction -> truth (world units)
    completeness: float  # mean distance truth -> reconstruction
    chamfer: float  # (accuracy + completeness) / 2
    precision: float  # fraction of reconstruction samples within `threshold` of the truth
    recall: float  # fraction of truth samples within `threshold` of the reconstruction
    fscore: float
    threshold: float


def o3d_mesh(vertices: np.ndarray, triangles: np.ndarray):
    """An Open3D TriangleMesh of vertices (V, 3) and triangles (F, 3)."""
    import open3d as o3d

    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)))


def mesh_distance(mesh, points: np.ndarray) -> np.ndarray:
    """Unsigned distance (N,) float64 from points (N, 3) to the nearest point of an Open3D triangle mesh."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    query = o3d.core.Tensor(np.asarray(points, dtype=np.float32))
    return scene.compute_distance(query).numpy().astype(np.float64)


def sample_surface(mesh, n: int, seed: int = 0) -> np.ndarray:
    """n points (n, 3) float64 uniformly by area on an Open3D triangle mesh (empty (0, 3) for no triangles)."""
    import open3d as o3d

    if not len(mesh.triangles):
        return np.zeros((0, 3))
    o3d.utility.random.seed(seed)
    return np.asarray(mesh.sample_points_uniformly(number_of_points=n).points)


def score_surface(mesh, truth_mesh, truth_points: np.ndarray, threshold: float, samples: int = 200_000,
                  seed: int = 0) -> SurfaceScore:
    """A reconstructed mesh against the truth: `truth_mesh` for accuracy, `truth_points` (M, 3) (the true
    surface the cameras saw) for completeness, both as defined in the module docstring."""
    recon = sample_surface(mesh, samples, seed)
    if not len(recon):
        return SurfaceScore(np.inf, np.inf, np.inf, 0.0, 0.0, 0.0, threshold)
    to_truth = mesh_distance(truth_mesh, recon)
    to_recon = mesh_distance(mesh, truth_points)
    precision, recall = float(np.mean(to_truth < threshold)), float(np.mean(to_recon < threshold))
    fscore = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    acc, comp = float(to_truth.mean()), float(to_recon.mean())
    return SurfaceScore(acc, comp, (acc + comp) / 2, precision, recall, fscore, threshold)


@dataclass(frozen=True)
class MeshView:
    hit: np.ndarray  # (H, W) bool
    depth: np.ndarray  # (H, W) float32 camera z, 0 on a miss
    normal: np.ndarray  # (H, W, 3) float32 world unit normals facing the camera, 0 on a miss
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1], interpolated vertex colours (grey without), 0 on a miss


def raycast_view(mesh, K: np.ndarray, cam_from_world: np.ndarray, width: int, height: int) -> MeshView:
    """The mesh seen by a pinhole camera (K (3, 3), COLMAP pixel convention; cam_from_world (4, 4)): one ray
    through each pixel centre."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    dirs = pixel_rays(K, width, height) @ R  # R.T @ d per pixel
    center = -R.T @ t
    rays = np.concatenate([np.broadcast_to(center, dirs.shape), dirs], -1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t_hit = ans["t_hit"].numpy()
    hit = np.isfinite(t_hit)
    depth = np.where(hit, t_hit, 0).astype(np.float32)  # |dir| has z = 1, so t is the camera z
    normal = ans["primitive_normals"].numpy()
    facing = np.sign(np.sum(normal * dirs, -1, keepdims=True))
    normal = np.where(hit[..., None], -facing * normal, 0).astype(np.float32)
    rgb = np.repeat(np.where(hit[..., None], 0.7, 0), 3, axis=-1).astype(np.float32)
    if mesh.has_vertex_colors() and hit.any():
        tri = np.asarray(mesh.triangles)[ans["primitive_ids"].numpy()[hit]]
        uv = ans["primitive_uvs"].numpy()[hit]
        bary = np.column_stack([1 - uv.sum(1), uv])
        colours = np.asarray(mesh.vertex_colors)
        rgb[hit] = np.einsum("nk,nkc->nc", bary, colours[tri])
    return MeshView(hit, depth, normal, rgb)


def shaded(view: MeshView, cam_from_world: np.ndarray, colour: bool = False) -> np.ndarray:
    """A picture (H, W, 3) uint8 of a `MeshView`: headlight Lambert shading on white, of the vertex colours
    when `colour`, else of light grey."""
    light = cam_from_world[2, :3]  # the camera's viewing direction, world frame
    lambert = np.clip(-(view.normal @ light), 0, 1)[..., None]
    base = view.rgb if colour else np.full_like(view.rgb, 0.8)
    pix = np.where(view.hit[..., None], base * (0.25 + 0.75 * lambert), 1.0)
    return (pix.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def silhouette_iou(view: MeshView, mask: np.ndarray) -> float:
    """Intersection over union of where the mesh is seen and a mask (H, W) bool."""
    union = np.logical_or(view.hit, mask).sum()
    return float(np.logical_and(view.hit, mask).sum() / union) if union else 1.0
