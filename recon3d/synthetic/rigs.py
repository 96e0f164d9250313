"""Seeded camera rigs around the synthetic world.

Every rig returns `cam_from_world` (n, 4, 4) float64, OpenCV axes (x right, y down, z forward), built with
`look_at` with world up +z; the scene centre (`surfaces.SCENE_CENTER`) is in front of every camera.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from recon3d.geometry.rotation import look_at, rigid
from recon3d.synthetic.surfaces import OBJECTS_BOUNDS, SCENE_CENTER


def orbit(n: int, radius: float = 4.0, height: float = 1.5, target=(0.0, 0.0, 0.5),
          seed: int = 0) -> np.ndarray:
    """n cameras on a horizontal circle of `radius` at `height`, evenly spaced with a little jitter.

    Each looks at `target` (3,) world frame, itself jittered by up to 5 cm. Returns (n, 4, 4) cam_from_world.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * (np.arange(n) + rng.uniform(-0.15, 0.15, n)) / n
    eyes = np.column_stack([radius * np.cos(angles), radius * np.sin(angles), np.full(n, float(height))])
    eyes += rng.normal(0.0, 0.03, (n, 3))
    targets = np.asarray(target, dtype=np.float64) + rng.uniform(-0.05, 0.05, (n, 3))
    return np.stack([look_at(e, t) for e, t in zip(eyes, targets, strict=True)])


def forward_facing(n: int, extent: float = 1.0, distance: float = 4.0, seed: int = 0) -> np.ndarray:
    """LLFF-like: n cameras on a jittered 4:3 grid in a plane `extent` wide, facing the scene centre.

    The grid's centre is `distance` from the scene centre, on the -y side and looking slightly down (it
    rises 1 per `distance` run); all cameras look in nearly the same direction (1 degree of jitter per
    axis). Returns (n, 4, 4) cam_from_world.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    center_eye = SCENE_CENTER + np.array([0.0, -distance, 1.0]) * distance / np.hypot(distance, 1.0)
    base = look_at(center_eye, SCENE_CENTER)
    right, down, forward = base[0, :3], base[1, :3], base[2, :3]
    cols = int(np.ceil(np.sqrt(n * 4 / 3)))
    rows = int(np.ceil(n / cols))
    k = np.arange(n)
    gx = (k % cols + 0.5) / cols - 0.5
    gy = (k // cols + 0.5) / rows - 0.5
    offsets = np.column_stack([gx * extent, gy * extent * 0.75]) + rng.uniform(-0.05, 0.05, (n, 2)) * extent
    eyes = center_eye + offsets[:, :1] * right + offsets[:, 1:] * down
    looks = forward + rng.normal(0.0, np.radians(1.0), (n, 3))
    return np.stack([look_at(e, e + d) for e, d in zip(eyes, looks, strict=True)])


def stereo_pair(baseline: float = 0.3, distance: float = 4.0, seed: int = 0) -> np.ndarray:
    """Two cameras with the same rotation; the second is shifted by `baseline` along the first one's x axis.

    The first camera is `distance` from the scene centre at a seeded azimuth and elevation, looking at it.
    Returns (2, 4, 4) cam_from_world.
    """
    rng = np.random.default_rng(seed)
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(15), np.radians(35))
    direction = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                          np.sin(elevation)])
    first = look_at(SCENE_CENTER + distance * direction, SCENE_CENTER)
    second = first.copy()
    second[0, 3] -= baseline  # C2 = C1 + baseline * x1  =>  t2 = t1 - R @ (baseline * x1) = t1 - baseline * e_x
    return np.stack([first, second])


def random_in_box(n: int, box_min=(-4.0, -4.0, 1.0), box_max=(4.0, 4.0, 3.0), target_radius: float = 0.5,
                  seed: int = 0) -> np.ndarray:
    """n cameras at uniform random positions in the box, each looking at a random point near the scene centre.

    Positions inside the objects' region (`OBJECTS_BOUNDS` grown by 0.3) or nearly above the target are
    rejected. Targets are uniform in a ball of `target_radius` around the scene centre.
    Returns (n, 4, 4) cam_from_world.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(box_min, dtype=np.float64), np.asarray(box_max, dtype=np.float64)
    keep_out_lo, keep_out_hi = OBJECTS_BOUNDS[0] - 0.3, OBJECTS_BOUNDS[1] + 0.3
    out = []
    for _ in range(1000 * n):
        if len(out) == n:
            break
        eye = rng.uniform(lo, hi)
        direction = rng.normal(size=3)
        target = SCENE_CENTER + target_radius * rng.uniform() ** (1 / 3) * direction / np.linalg.norm(direction)
        horizontal = np.linalg.norm((target - eye)[:2])
        if np.all((eye > keep_out_lo) & (eye < keep_out_hi)) or horizontal < 0.2 * abs(target[2] - eye[2]):
            continue
        out.append(look_at(eye, target))
    if len(out) < n:
        raise ValueError(f"random_in_box: the box {lo}..{hi} leaves no room outside the objects' region")
    return np.stack(out)


def handheld(n: int, length: float = 3.0, seed: int = 0) -> np.ndarray:
    """A video-like walk: n frames along an arc of `length` around the scene, 3.5 from its centre.

    The path and the gaze wander smoothly (a few centimetres, about a degree) with a little per-frame
    shake (5 mm, 0.2 degrees), so consecutive frames are close. Returns (n, 4, 4) cam_from_world.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    radius = 3.5
    s = np.linspace(0.0, 1.0, n)
    angles = -np.pi / 2 + (s - 0.5) * length / radius  # centred on the -y side, facing the backdrop
    phases = rng.uniform(0, 2 * np.pi, (3, 2))
    wobble = np.stack([0.04 * np.sin(2 * np.pi * (1.3 + k) * s + phases[k, 0]) for k in range(3)], axis=1)
    eyes = np.column_stack([radius * np.cos(angles), radius * np.sin(angles), 1.4 + 0.05 * np.sin(6 * np.pi * s)])
    eyes += wobble + rng.normal(0.0, 0.005, (n, 3))
    gaze = np.stack([0.1 * np.sin(2 * np.pi * (0.7 + k) * s + phases[k, 1]) for k in range(3)], axis=1)
    out = []
    for eye, g in zip(eyes, gaze, strict=True):
        cam_from_world = look_at(eye, SCENE_CENTER + g)
        shake = Rotation.from_rotvec(rng.normal(0.0, np.radians(0.2), 3)).as_matrix()
        rotation = shake @ cam_from_world[:3, :3]
        out.append(rigid(rotation, -rotation @ eye))
    return np.stack(out)


RIGS: dict[str, Callable[..., np.ndarray]] = {
    "orbit": orbit,
    "forward_facing": forward_facing,
    "random_in_box": random_in_box,
    "handheld": handheld,
}


def make_rig(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`RIGS[name](n, seed=seed)` with a ValueError naming an unknown rig. Returns (n, 4, 4) cam_from_world."""
    if name not in RIGS:
        raise ValueError(f"unknown rig {name!r}; recon3d.synthetic knows {', '.join(RIGS)}")
    return RIGS[name](n, seed=seed)


def _check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"a rig needs a positive number of cameras, got n={n!r}")
