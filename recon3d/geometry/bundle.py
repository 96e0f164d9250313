"""Bundle adjustment with SciPy: sparse least squares over poses, points and (optionally) intrinsics.

The readable reference of recon3d's `bundle_adjust` stage. Residuals are reprojection errors in pixels
through recon3d's COLMAP camera models; the Jacobian is taken by finite differences on its sparsity
pattern (each residual depends on one pose, one point and one camera), which SciPy groups so a Jacobian
costs a few dozen residual evaluations whatever the problem size. The gauge is fixed as COLMAP does:
the first image's pose and one coordinate of the second image's translation (the scale) are held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from recon3d.geometry import camera_models
from recon3d.geometry.rotation import rigid

if TYPE_CHECKING:
    from scipy.sparse import coo_matrix


@dataclass(frozen=True)
class Problem:
    """Observations of points by posed images.

    cam_from_world: (I, 4, 4); camera_of_image: (I,) index into `models`/`params`; models: camera model
    names, params: list of (P_c,) arrays; points: (N, 3); obs_image: (M,), obs_point: (M,), obs_xy: (M, 2)
    pixels (COLMAP convention).
    """

    cam_from_world: np.ndarray
    camera_of_image: np.ndarray
    models: tuple[str, ...]
    params: tuple[np.ndarray, ...]
    points: np.ndarray
    obs_image: np.ndarray
    obs_point: np.ndarray
    obs_xy: np.ndarray


@dataclass(frozen=True)
class Result:
    cam_from_world: np.ndarray
    params: tuple[np.ndarray, ...]
    points: np.ndarray
    initial_cost: float  # 0.5 * sum(rho(r^2)), as SciPy and Ceres report it
    final_cost: float
    residuals: np.ndarray  # (M, 2) final reprojection errors, px
    iterations: int  # SciPy: Jacobian evaluations (one per step); Ceres: its iteration count
    seconds: float
    message: str
    evaluations: int = 0  # SciPy: residual evaluations (max_iterations bounds these)


def _free_intrinsics(model: str, refine: str) -> np.ndarray:
    """Bool mask over the model's parameters: 'none', 'focal', 'focal_principal' or 'all'."""
    names = camera_models.MODELS[model]
    keep = {"none": (), "focal": ("f", "fx", "fy"), "focal_principal": ("f", "fx", "fy", "cx", "cy"),
            "all": names}[refine]
    return np.array([n in keep for n in names])


def residuals(problem: Problem, cam_from_world: np.ndarray, params, points: np.ndarray) -> np.ndarray:
    """Reprojection errors (M, 2), projected minus observed, px."""
    pose = cam_from_world[problem.obs_image]
    x_cam = np.einsum("mij,mj->mi", pose[:, :3, :3], points[problem.obs_point]) + pose[:, :3, 3]
    projected = np.empty_like(problem.obs_xy)
    cam = problem.camera_of_image[problem.obs_image]
    for c, model in enumerate(problem.models):
        sel = cam == c
        projected[sel] = camera_models.project(model, params[c], x_cam[sel])
    return projected - problem.obs_xy


def solve(problem: Problem, loss: str = "huber", loss_scale_px: float = 1.0, refine_intrinsics: str = "none",
          max_iterations: int = 100, tolerance: float = 1e-10, fixed_images: np.ndarray | None = None) -> Result:
    """Refine poses, points and the chosen intrinsics; the gauge (first pose, one scale coordinate) is held.

    `max_iterations` caps SciPy's residual evaluations (`least_squares`' `max_nfev`), not its iterations;
    the `Result` says how it ended (`message`: SciPy's, e.g. "The maximum number of function evaluations is
    exceeded." when the cap ended it) and `iterations` counts Jacobian evaluations."""
    # imported here: scipy.optimize costs 0.2 s, and the pipelines load this module but run COLMAP's BA
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    n_img, n_pts = len(problem.cam_from_world), len(problem.points)
    rotvec = Rotation.from_matrix(problem.cam_from_world[:, :3, :3]).as_rotvec()
    pose_vec = np.concatenate([rotvec, problem.cam_from_world[:, :3, 3]], axis=1)  # (I, 6)
    free_intr = [_free_intrinsics(m, refine_intrinsics) for m in problem.models]
    # fixed gauge: the first observed image entirely, and the translation coordinate of the second along which
    # the baseline between the two is longest in its frame (where the world's origin is far from the first
    # camera, the largest coordinate of t would be that distance, which barely moves with the scale);
    # or, for a local adjustment, the poses of `fixed_images` (two or more of them fix the gauge). An image
    # without observations is held where it is (nothing constrains it; a free one makes the system singular)
    observed = np.flatnonzero(np.bincount(problem.obs_image, minlength=n_img) > 0)
    pose_free = np.ones((n_img, 6), bool)
    pose_free[np.setdiff1d(np.arange(n_img), observed)] = False
    fixed = np.zeros(0, int) if fixed_images is None else np.asarray(fixed_images, int)
    pose_free[fixed] = False
    if len(fixed) < 2 and len(observed):
        pose_free[observed[0]] = False
        if len(observed) > 1:
            first, second = problem.cam_from_world[observed[0]], problem.cam_from_world[observed[1]]
            centre_first = -first[:3, :3].T @ first[:3, 3]
            baseline = -second[:3, 3] - second[:3, :3] @ centre_first  # R2 (C2 - C1), the second camera's frame
            pose_free[observed[1], 3 + int(np.argmax(np.abs(baseline)))] = False
    x0 = np.concatenate([pose_vec[pose_free], problem.points.ravel()]
                        + [p[f] for p, f in zip(problem.params, free_intr, strict=True)])
    if 2 * len(problem.obs_xy) < len(x0):
        raise ValueError(f"bundle adjustment: {len(x0)} unknowns ({n_img} images, {n_pts} points) but only "
                         f"{2 * len(problem.obs_xy)} residuals; the problem is underdetermined")

    def unpack(x):
        poses = pose_vec.copy()
        poses[pose_free] = x[: pose_free.sum()]
        off = pose_free.sum()
        pts = x[off: off + 3 * n_pts].reshape(n_pts, 3)
        off += 3 * n_pts
        params = []
        for p, f in zip(problem.params, free_intr, strict=True):
            q = p.copy()
            q[f] = x[off: off + f.sum()]
            off += f.sum()
            params.append(q)
        return rigid(Rotation.from_rotvec(poses[:, :3]).as_matrix(), poses[:, 3:]), params, pts

    def fun(x):
        return residuals(problem, *unpack(x)).ravel()

    sparsity = _sparsity(problem, pose_free, free_intr)
    start = time.perf_counter()
    # BLAS on one thread: a threaded OpenBLAS sums vectors in a core-count-dependent order (poses moved
    # 1e-7 between 1 and 2 threads), so the result would depend on the machine (and differ between the local
    # and dask executors). Free here: the sparse products dominate (sceaux: 7.9 s either way)
    with threadpool_limits(1, user_api="blas"):
        out = least_squares(fun, x0, jac_sparsity=sparsity, method="trf", loss=loss, f_scale=loss_scale_px,
                            x_scale="jac", max_nfev=max_iterations, ftol=tolerance, xtol=tolerance,
                            gtol=tolerance, tr_solver="lsmr",
                            tr_options={"atol": 1e-14, "btol": 1e-14})  # inexact steps stall
    seconds = time.perf_counter() - start
    poses, params, pts = unpack(out.x)
    r0 = fun(x0)
    return Result(poses, tuple(params), pts, _cost(r0, loss, loss_scale_px), float(out.cost),
                  residuals(problem, poses, params, pts), int(out.njev), seconds, out.message, int(out.nfev))


def _cost(r: np.ndarray, loss: str, scale: float) -> float:
    z = (r / scale) ** 2
    rho = {"linear": z, "huber": np.where(z <= 1, z, 2 * np.sqrt(z) - 1), "cauchy": np.log1p(z),
           "soft_l1": 2 * (np.sqrt(1 + z) - 1)}[loss]
    return float(0.5 * scale**2 * rho.sum())


def _sparsity(problem: Problem, pose_free: np.ndarray, free_intr: list[np.ndarray]) -> coo_matrix:
    """Which parameters each residual depends on: its image's pose, its point, its camera's intrinsics."""
    from scipy.sparse import coo_matrix

    n_pose = int(pose_free.sum())
    pose_col = np.full(pose_free.shape, -1)
    pose_col[pose_free] = np.arange(n_pose)
    n_pts = len(problem.points)
    intr_start = np.cumsum([0] + [int(f.sum()) for f in free_intr])[:-1] + n_pose + 3 * n_pts
    m = len(problem.obs_xy)
    rows, cols = [], []
    for axis in range(2):
        r = 2 * np.arange(m) + axis
        pc = pose_col[problem.obs_image]  # (M, 6)
        ok = pc >= 0
        rows.append(np.repeat(r, ok.sum(1)))
        cols.append(pc[ok])
        rows.append(np.repeat(r, 3))
        cols.append((n_pose + 3 * problem.obs_point[:, None] + np.arange(3)).ravel())
        cam = problem.camera_of_image[problem.obs_image]
        for c, f in enumerate(free_intr):
            if f.sum():
                sel = cam == c
                rows.append(np.repeat(r[sel], f.sum()))
                cols.append(np.tile(intr_start[c] + np.arange(f.sum()), sel.sum()))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n = n_pose + 3 * n_pts + sum(int(f.sum()) for f in free_intr)
    return coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(2 * m, n))
