"""Two-view (epipolar) geometry: essential and fundamental matrices, their errors, relative pose, triangulation.

Pure float64 NumPy, one formula per function, each naming its source in Hartley & Zisserman, *Multiple View
Geometry*, 2nd ed. (H&Z). Relative poses are `cam2_from_cam1` (4, 4): `x_cam2 = R @ x_cam1 + t`, OpenCV axes.
Image points are either pixels (COLMAP convention, with K) or normalised coordinates `(x / z, y / z)` of
undistorted rays (`camera_models.unproject`); the docstrings say which. With these conventions
`x2^T E x1 = 0` for normalised points and `x2^T F x1 = 0` for pixels, homogeneous `(u, v, 1)`.
"""

from __future__ import annotations

import numpy as np


def _check(name: str, array: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
    """`array` as float64, with a ValueError printing the shape it got unless it ends in `tail`."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim < len(tail) or a.shape[a.ndim - len(tail):] != tail:
        want = ", ".join(["..."] + [str(n) for n in tail])
        raise ValueError(f"{name} must have shape ({want}), got {a.shape}")
    return a


def _check_points(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p1, p2 = _check("x1", x1, (2,)), _check("x2", x2, (2,))
    if p1.ndim != 2 or p1.shape != p2.shape:
        raise ValueError(f"x1 and x2 must both have shape (N, 2), got {p1.shape} and {p2.shape}")
    return p1, p2


def homogeneous(points: np.ndarray) -> np.ndarray:
    """(..., 2) -> (..., 3) by appending a 1."""
    p = np.asarray(points, dtype=np.float64)
    return np.concatenate([p, np.ones(p.shape[:-1] + (1,))], axis=-1)


def skew(v: np.ndarray) -> np.ndarray:
    """The cross-product matrix `[v]_x` with `[v]_x @ w = v x w` (H&Z A4.5, p. 581).

    v: (..., 3). Returns (..., 3, 3) float64.
    """
    v = _check("v", v, (3,))
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def essential_from_pose(cam2_from_cam1: np.ndarray) -> np.ndarray:
    """`E = [t]_x R` for `x_cam2 = R x_cam1 + t` (H&Z eq. 9.12, p. 257).

    cam2_from_cam1: (..., 4, 4). Returns (..., 3, 3) float64; `x2^T E x1 = 0` for normalised points. The
    scale is that of t (no normalisation).
    """
    t = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    return skew(t[..., :3, 3]) @ t[..., :3, :3]


def fundamental_from_essential(E: np.ndarray, K1: np.ndarray, K2: np.ndarray) -> np.ndarray:  # noqa: N803
    """`F = K2^-T E K1^-1` (H&Z eq. 9.12, p. 257), so that `x2^T F x1 = 0` for pixels.

    E, K1, K2: (..., 3, 3); K in pixels (COLMAP convention, distortion not included).
    Returns (..., 3, 3) float64 with unit Frobenius norm.
    """
    E, K1, K2 = _check("E", E, (3, 3)), _check("K1", K1, (3, 3)), _check("K2", K2, (3, 3))  # noqa: N806
    F = np.swapaxes(np.linalg.inv(K2), -1, -2) @ E @ np.linalg.inv(K1)  # noqa: N806
    return F / np.linalg.norm(F, axis=(-2, -1), keepdims=True)


def essential_from_fundamental(F: np.ndarray, K1: np.ndarray, K2: np.ndarray) -> np.ndarray:  # noqa: N803
    """`E = K2^T F K1` (H&Z eq. 9.12, p. 257). F, K1, K2: (..., 3, 3). Returns (..., 3, 3), unit Frobenius norm."""
    F, K1, K2 = _check("F", F, (3, 3)), _check("K1", K1, (3, 3)), _check("K2", K2, (3, 3))  # noqa: N806
    E = np.swapaxes(K2, -1, -2) @ F @ K1  # noqa: N806
    return E / np.linalg.norm(E, axis=(-2, -1), keepdims=True)


def sampson_error(F: np.ndarray, x1: np.ndarray, x2: np.ndarray, squared: bool = False) -> np.ndarray:  # noqa: N803
    """First-order geometric error of correspondences under F (Sampson; H&Z eq. 11.9, p. 287).

    F: (3, 3), E for normalised points or F for pixels; x1, x2: (N, 2) in the matching frame.
    Returns (N,) float64: the Sampson distance (in the units of the points), or its square (H&Z's form)
    when `squared`. For small noise it approximates the distance to the nearest exact correspondence in
    the joint 4D space, i.e. about sqrt(2) times the per-image error.
    """
    F = _check("F", F, (3, 3))  # noqa: N806
    p1, p2 = _check_points(x1, x2)
    h1, h2 = homogeneous(p1), homogeneous(p2)
    fx1 = h1 @ F.T  # rows: F @ x1
    ftx2 = h2 @ F  # rows: F^T @ x2
    num = np.einsum("ni,ni->n", h2, fx1) ** 2
    den = fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    err2 = num / np.maximum(den, np.finfo(np.float64).tiny)
    return err2 if squared else np.sqrt(err2)


def epipolar_distances(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Point-to-epipolar-line distances in each image (H&Z eq. 11.10, p. 288).

    F: (3, 3); x1, x2: (N, 2). Returns `d2` (N,), the distance of x2 to the line `F x1` in image 2, and
    `d1` (N,), the distance of x1 to the line `F^T x2` in image 1, in the units of the points.
    """
    F = _check("F", F, (3, 3))  # noqa: N806
    p1, p2 = _check_points(x1, x2)
    h1, h2 = homogeneous(p1), homogeneous(p2)
    l2, l1 = h1 @ F.T, h2 @ F
    algebraic = np.abs(np.einsum("ni,ni->n", h2, l2))
    tiny = np.finfo(np.float64).tiny
    d2 = algebraic / np.maximum(np.hypot(l2[:, 0], l2[:, 1]), tiny)
    d1 = algebraic / np.maximum(np.hypot(l1[:, 0], l1[:, 1]), tiny)
    return d2, d1


def symmetric_epipolar_distance(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:  # noqa: N803
    """`d(x2, F x1)^2 + d(x1, F^T x2)^2` (H&Z eq. 11.10, p. 288). F: (3, 3); x1, x2: (N, 2). Returns (N,)."""
    d2, d1 = epipolar_distances(F, x1, x2)
    return d2**2 + d1**2


def decompose_essential(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """The four relative poses an essential matrix allows (H&Z result 9.19, p. 259).

    E: (3, 3). With `E = U diag(1, 1, 0) V^T` and `W = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]`, the candidates
    are `(U W V^T, +u3)`, `(U W V^T, -u3)`, `(U W^T V^T, +u3)`, `(U W^T V^T, -u3)`.
    Returns rotations (4, 3, 3) (proper, det +1) and unit translations (4, 3) of `cam2_from_cam1`.
    """
    E = _check("E", E, (3, 3))  # noqa: N806
    if E.ndim != 2:
        raise ValueError(f"E must have shape (3, 3), got {E.shape}")
    u, _, vt = np.linalg.svd(E)
    if np.linalg.det(u) < 0:
        u = -u
    if np.linalg.det(vt) < 0:
        vt = -vt
    w = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    r1, r2 = u @ w @ vt, u @ w.T @ vt
    t = u[:, 2] / np.linalg.norm(u[:, 2])
    return np.stack([r1, r1, r2, r2]), np.stack([t, -t, t, -t])


def triangulate_linear(cam2_from_cam1: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of normalised correspondences (H&Z sec. 12.2, p. 312).

    cam2_from_cam1: (4, 4); x1, x2: (N, 2) normalised coordinates. Camera 1 is `[I | 0]`.
    Returns points (N, 3) float64 in camera 1's frame; points at infinity come back with huge coordinates
    (the homogeneous w is floored at 1e-300 in magnitude).
    """
    pose = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    p1, p2 = _check_points(x1, x2)
    P1 = np.eye(3, 4)  # noqa: N806
    P2 = pose[:3, :]  # noqa: N806
    a = np.stack([
        p1[:, :1] * P1[2] - P1[0],
        p1[:, 1:] * P1[2] - P1[1],
        p2[:, :1] * P2[2] - P2[0],
        p2[:, 1:] * P2[2] - P2[1],
    ], axis=1)  # (N, 4, 4)
    _, _, vt = np.linalg.svd(a)
    X = vt[:, -1, :]  # noqa: N806
    w = np.where(np.abs(X[:, 3]) < 1e-300, np.copysign(1e-300, X[:, 3]), X[:, 3])
    return X[:, :3] / w[:, None]


def depths(cam2_from_cam1: np.ndarray, points_cam1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z of points in both cameras. cam2_from_cam1: (4, 4); points_cam1: (N, 3). Returns (N,), (N,)."""
    pose = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    p = _check("points_cam1", points_cam1, (3,))
    return p[..., 2], (p @ pose[:3, :3].T + pose[:3, 3])[..., 2]


def pose_from_essential(E: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """The candidate of `decompose_essential` that puts most points in front of both cameras (H&Z 9.6.3).

    E: (3, 3); x1, x2: (N, 2) normalised coordinates of (inlier) correspondences.
    Returns cam2_from_cam1 (4, 4) with unit translation and the (N,) bool cheirality mask of that pose.
    This is the readable reference of `cv2.recoverPose`.
    """
    rotations, translations = decompose_essential(E)
    best, best_mask = None, None
    for rotation, translation in zip(rotations, translations, strict=True):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, translation
        z1, z2 = depths(pose, triangulate_linear(pose, x1, x2))
        mask = (z1 > 0) & (z2 > 0) & np.isfinite(z1) & np.isfinite(z2)
        if best_mask is None or mask.sum() > best_mask.sum():
            best, best_mask = pose, mask
    return best, best_mask


def triangulation_angle(cam2_from_cam1: np.ndarray, points_cam1: np.ndarray) -> np.ndarray:
    """Angle between the two viewing rays of each point, in degrees (as COLMAP's CalculateTriangulationAngle).

    cam2_from_cam1: (4, 4); points_cam1: (N, 3) in camera 1's frame. Returns (N,) float64 in [0, 180].
    """
    pose = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    p = _check("points_cam1", points_cam1, (3,))
    center2 = -pose[:3, :3].T @ pose[:3, 3]  # camera 2's centre in camera 1's frame
    ray1, ray2 = p, p - center2
    cos = np.einsum("...i,...i->...", ray1, ray2) / np.maximum(
        np.linalg.norm(ray1, axis=-1) * np.linalg.norm(ray2, axis=-1), np.finfo(np.float64).tiny)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def ray_angle_deg(cam2_from_cam1: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Angle between the two viewing rays of each correspondence, in degrees: `triangulation_angle` of the point
    where they meet (exactly so for noise-free correspondences), without triangulating it.

    cam2_from_cam1: (4, 4); x1, x2: (N, 2) normalised coordinates. Returns (N,) float64 in [0, 180].
    """
    pose = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    p1, p2 = _check_points(x1, x2)
    ray1 = np.column_stack([p1, np.ones(len(p1))])
    ray2 = np.column_stack([p2, np.ones(len(p2))]) @ pose[:3, :3]  # rows R^T d2: camera 2's rays in camera 1
    cos = np.einsum("ij,ij->i", ray1, ray2) / (np.linalg.norm(ray1, axis=1) * np.linalg.norm(ray2, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def translation_angle_deg(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """Angle between translation directions, in degrees. t_a, t_b: (..., 3), any non-zero norm. Returns (...,)."""
    a, b = _check("t_a", t_a, (3,)), _check("t_b", t_b, (3,))
    cos = np.einsum("...i,...i->...", a, b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def refine_relative_pose(cam2_from_cam1: np.ndarray, x1: np.ndarray, x2: np.ndarray,
                         scale: float = 1.0, loss_scale: float | None = None) -> np.ndarray:
    """Minimise the Sampson error of normalised correspondences over the relative pose (H&Z sec. 11.4.3).

    cam2_from_cam1: (4, 4) start; x1, x2: (N >= 5, 2) normalised coordinates of inliers. The rotation is
    updated by a rotation vector and the unit translation on its tangent plane (5 degrees of freedom).
    `scale` (a focal length in px) multiplies the residuals, so `loss_scale` (a robust Cauchy scale, None
    for plain least squares) is in pixels. Returns the refined cam2_from_cam1 (4, 4), unit translation.
    """
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    pose = _check("cam2_from_cam1", cam2_from_cam1, (4, 4))
    p1, p2 = _check_points(x1, x2)
    if len(p1) < 5:
        raise ValueError(f"refine_relative_pose needs at least 5 correspondences, got {len(p1)}")
    r0, t0 = pose[:3, :3], pose[:3, 3] / np.linalg.norm(pose[:3, 3])
    # an orthonormal basis (b1, b2) of the plane orthogonal to t0
    b1 = np.cross(t0, np.eye(3)[np.argmin(np.abs(t0))])
    b1 /= np.linalg.norm(b1)
    b2 = np.cross(t0, b1)

    def unpack(params: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = Rotation.from_rotvec(params[:3]).as_matrix() @ r0
        t = t0 + params[3] * b1 + params[4] * b2
        out[:3, 3] = t / np.linalg.norm(t)
        return out

    def residuals(params: np.ndarray) -> np.ndarray:
        num_den = essential_from_pose(unpack(params))
        return scale * sampson_error(num_den, p1, p2)

    result = least_squares(residuals, np.zeros(5), loss="linear" if loss_scale is None else "cauchy",
                           f_scale=1.0 if loss_scale is None else loss_scale, x_scale="jac", method="trf")
    return unpack(result.x)
