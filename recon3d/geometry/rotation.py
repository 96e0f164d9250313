"""Rotations and rigid transforms.

Quaternions are `(w, x, y, z)` (COLMAP order) everywhere in recon3d; scipy's default is `(x, y, z, w)`,
so every conversion goes through this module.
"""

from __future__ import annotations

import numpy as np

# scipy.spatial is imported where a conversion needs it: importing it costs 0.2 s, paid by every worker
# process that only wants camera_center


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) to rotation matrices.

    quat_wxyz: (..., 4) float, (w, x, y, z); need not be normalised.
    Returns (..., 3, 3) float64.
    """
    q = np.asarray(quat_wxyz, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quat_wxyz must have shape (..., 4), got {q.shape}")
    from scipy.spatial.transform import Rotation

    mats = Rotation.from_quat(q.reshape(-1, 4), scalar_first=True).as_matrix()
    return mats.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrices to unit quaternions `(w, x, y, z)` with w >= 0.

    rotation: (..., 3, 3) float. Returns (..., 4) float64.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {r.shape}")
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat(scalar_first=True)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(*r.shape[:-2], 4)


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Build 4x4 transforms `[[R, t], [0, 1]]`.

    rotation: (..., 3, 3); translation: (..., 3). Returns (..., 4, 4) float64.
    """
    r = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    out = np.zeros(r.shape[:-2] + (4, 4))
    out[..., :3, :3] = r
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def invert_rigid(b_from_a: np.ndarray) -> np.ndarray:
    """Invert rigid 4x4 transforms exactly: `a_from_b = [[R.T, -R.T t], [0, 1]]`.

    b_from_a: (..., 4, 4). Returns (..., 4, 4) float64.
    """
    t = np.asarray(b_from_a, dtype=np.float64)
    if t.shape[-2:] != (4, 4):
        raise ValueError(f"transform must have shape (..., 4, 4), got {t.shape}")
    r_inv = np.swapaxes(t[..., :3, :3], -1, -2)
    return rigid(r_inv, -np.einsum("...ij,...j->...i", r_inv, t[..., :3, 3]))


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    """Camera centres in the world frame, `C = -R.T @ t`.

    cam_from_world: (..., 4, 4). Returns (..., 3) float64.
    """
    return invert_rigid(cam_from_world)[..., :3, 3]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """The `cam_from_world` (4, 4) of a camera at `eye` looking at `target`, OpenCV axes.

    eye, target, up: (3,) world frame. The image's y axis (down) points against `up`.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: the viewing direction is parallel to `up`; pass another up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])  # rows are the camera axes in world coordinates
    return rigid(rotation, -rotation @ eye)


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Angle of `r_a @ r_b.T` in degrees, robust near 0 and 180.

    r_a, r_b: (..., 3, 3). Returns (...,) float64.
    """
    d = np.asarray(r_a, dtype=np.float64) @ np.swapaxes(np.asarray(r_b, dtype=np.float64), -1, -2)
    from scipy.spatial.transform import Rotation

    rotvec = Rotation.from_matrix(d.reshape(-1, 3, 3)).as_rotvec()
    return np.degrees(np.linalg.norm(rotvec, axis=-1)).reshape(d.shape[:-2])


def up_from_cameras(cam_from_world: np.ndarray) -> np.ndarray:
    """The world's up as cameras see it: the normalised mean of their -y axes (OpenCV: y points down in the
    image), since photos are mostly taken upright; +z when they cancel out.

    cam_from_world: (N, 4, 4). Returns (3,) float64.
    """
    ups = -np.asarray(cam_from_world, dtype=np.float64)[:, 1, :3]  # row 1 of R: the camera's y axis in the world
    up = ups.mean(0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def horizontal_axes(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit axes (3,) each, perpendicular to the unit `up` (3,) and to each other, with (a, b, up)
    right-handed: a = up x (world x, or world y when up is near x), normalised; b = up x a."""
    up = np.asarray(up, dtype=np.float64)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    return a, np.cross(up, a)


def most_level_camera(cam_from_world: np.ndarray, up: np.ndarray) -> int:
    """Index of the camera looking most nearly horizontally (its forward axis, row 2 of R, most orthogonal to
    `up`): the view of a scene closest to how a person sees it.

    cam_from_world: (N, 4, 4); up: (3,) unit.
    """
    return int(np.argmin(np.abs(np.asarray(cam_from_world)[:, 2, :3] @ up)))
