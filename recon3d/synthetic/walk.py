"""A long synthetic walk for structure from motion at scale: a street of textured facades walked out and back.

World frame as `surfaces`: z up, ground z = 0. The street runs along +x from 0 to `length`, facades at
y = +-`HALF_WIDTH` (`FACADE_HEIGHT` high), cut into `SEGMENT`-long quads, each its own texture, a wall
closing each end and a box standing before the facade every `BOX_EVERY` m. The walk goes out along
y = `OUT_LANE` and back along y = `BACK_LANE`, photographing the facade at
y = +HALF_WIDTH as one walks along it (the gaze swinging along the street and back), so that an image
overlaps its neighbours in time and, from the way back, images taken long before at another distance: the
loops retrieval has to find. Each image is rendered with only the quads near its camera
(those farther than `VIEW_RANGE` are too small to matter). `write_walk` writes a plain photo folder with
the truth beside it in `ground_truth/` (images, camera, poses; no points), as `recon3d run sfm` reads it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from recon3d.geometry.rotation import look_at
from recon3d.io.files import atomic_write
from recon3d.scene import ImageInfo, Scene, Source
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.render import render
from recon3d.synthetic.surfaces import TexturedQuad, _quad, box_faces

HALF_WIDTH = 3.0  # m, street centre to facade
FACADE_HEIGHT = 4.0
SEGMENT = 4.0  # m of street per facade / ground quad
EYE_HEIGHT = 1.6
OUT_LANE, BACK_LANE = -1.5, 0.0  # y of the walk out and of the walk back
BOX_EVERY = 6.0  # m between the boxes before the facade
STEP = 0.3  # m between frames: 4 degrees of baseline at the far facade
VIEW_RANGE = 16.0  # m: quads whose nearest x is farther from the camera than this are not rendered


def street_length(n_images: int, step: float = STEP) -> float:
    """The street a walk of `n_images` frames (half out, half back, `step` apart) needs."""
    return max(SEGMENT, step * math.ceil(n_images / 2))


def street_world(length: float, seed: int = 0) -> list[TexturedQuad]:
    """Ground, both facades and the two end walls of a street `length` long (quads of `SEGMENT`)."""
    quads = []
    segments = math.ceil(length / SEGMENT) + 2  # one segment beyond each end
    for k in range(segments):
        x0 = (k - 1) * SEGMENT
        base = seed * 100_000 + 10 * k
        quads.append(_quad((x0, -HALF_WIDTH, 0.0), (SEGMENT, 0.0, 0.0), (0.0, 2 * HALF_WIDTH, 0.0), base))
        quads.append(_quad((x0, HALF_WIDTH, FACADE_HEIGHT), (SEGMENT, 0.0, 0.0), (0.0, 0.0, -FACADE_HEIGHT), base + 1))
        quads.append(_quad((x0 + SEGMENT, -HALF_WIDTH, FACADE_HEIGHT), (-SEGMENT, 0.0, 0.0),
                           (0.0, 0.0, -FACADE_HEIGHT), base + 2))
    rng = np.random.default_rng(seed)
    for k, x in enumerate(np.arange(BOX_EVERY / 2, length, BOX_EVERY)):
        size = np.array([1.2, 0.8, 1.1]) * rng.uniform(0.8, 1.2, 3)
        yaw = rng.uniform(-0.3, 0.3)
        quads += box_faces(np.array([x, HALF_WIDTH - 0.8]), size, yaw, seed * 100_000 + 50_000 + 10 * k)
    ends = (-SEGMENT, (segments - 1) * SEGMENT)
    for k, x in enumerate(ends):
        quads.append(_quad((x, HALF_WIDTH, FACADE_HEIGHT), (0.0, -2 * HALF_WIDTH, 0.0), (0.0, 0.0, -FACADE_HEIGHT),
                           seed * 100_000 + 99_990 + k))
    return quads


def walk_poses(n_images: int, seed: int = 0, step: float = STEP) -> np.ndarray:
    """(n, 4, 4) cam_from_world: out along y = OUT_LANE, back along y = BACK_LANE, `step` apart, facing the
    facade at y = +HALF_WIDTH with the gaze swinging +-35 degrees along the street (period 40 frames) and 12
    degrees down, with a little seeded shake (5 mm, 0.3 degrees)."""
    if n_images < 2:
        raise ValueError(f"walk_poses: a walk needs at least 2 frames, got {n_images}")
    rng = np.random.default_rng(seed)
    length = street_length(n_images, step)
    half = math.ceil(n_images / 2)
    poses = []
    for i in range(n_images):
        out = i < half
        s = i * step if out else length - (i - half) * step
        eye = np.array([s, OUT_LANE if out else BACK_LANE, EYE_HEIGHT]) + rng.normal(0.0, 0.005, 3)
        heading = np.pi / 2 + np.radians(35.0) * np.sin(2 * np.pi * i / 40.0) + np.radians(rng.normal(0.0, 0.3))
        pitch = np.radians(-12.0 + rng.normal(0.0, 0.3))
        gaze = np.array([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)])
        poses.append(look_at(eye, eye + gaze))
    return np.stack(poses)


def write_walk(out: str | Path, n_images: int, width: int = 320, height: int = 240, seed: int = 0,
               step: float = STEP, depth_stride: int = 8) -> tuple[Scene, np.ndarray]:
    """Render the walk (frames `step` m apart) into `out/images/{i:05d}.png` and its truth into
    `out/ground_truth/` (paths relative to `out`). Returns the truth (absolute paths) and the depth maps
    subsampled every `depth_stride` pixels, (n, H // stride, W // stride) float32 camera z (inf where the sky
    shows), for overlap truth."""
    out = Path(out).resolve()
    camera = make_camera("PINHOLE", width, height)
    poses = walk_poses(n_images, seed, step)
    quads = street_world(street_length(n_images, step), seed)
    near_x = np.array([min(q.origin[0], (q.origin + q.axis_u)[0]) for q in quads])
    far_x = np.array([max(q.origin[0], (q.origin + q.axis_u)[0]) for q in quads])
    images, depths = [], []
    for i, pose in enumerate(poses):
        x = -pose[:3, :3].T @ pose[:3, 3]
        seen = [q for q, lo, hi in zip(quads, near_x, far_x, strict=True)
                if lo - VIEW_RANGE <= x[0] <= hi + VIEW_RANGE]
        rgb, depth = render(seen, camera, pose)
        name = f"{i:05d}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"could not encode {name} as PNG")
        atomic_write(out / "images" / name, lambda f, data=png: f.write(data.tobytes()))
        images.append(ImageInfo(name=name, path=str(out / "images" / name), camera_id=1, width=width,
                                height=height))
        depths.append(depth[depth_stride // 2::depth_stride, depth_stride // 2::depth_stride].astype(np.float32))
    truth = Scene(source=Source(str(out), "synthetic"), images=tuple(images), cameras={1: camera},
                  poses={im.name: p for im, p in zip(images, poses, strict=True)})
    saved = tuple(dataclasses.replace(im, path=f"images/{im.name}") for im in images)
    truth.replace(images=saved, source=Source(".", "synthetic")).save(out / "ground_truth")
    return truth, np.stack(depths)


def overlapping_pairs(truth: Scene, depths: np.ndarray, depth_stride: int = 8, min_share: float = 0.2,
                      tolerance: float = 0.02) -> set[tuple[int, int]]:
    """Index pairs (i < j) of truly overlapping images: at least `min_share` of the surface samples of one
    image are seen by the other (`overlap_shares`)."""
    return pairs_above(overlap_shares(truth, depths, depth_stride, tolerance), min_share)


def pairs_above(shares: np.ndarray, min_share: float) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose entry of the symmetric (n, n) `shares` (`overlap_shares`) is at least
    `min_share`."""
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(shares >= min_share, 1)), strict=True)}


def overlap_shares(truth: Scene, depths: np.ndarray, depth_stride: int = 8, tolerance: float = 0.02) -> np.ndarray:
    """(n, n) symmetric: for images i, j the larger of the share of i's surface samples (its subsampled depth
    map, sky left out) seen by j and the reverse; a sample is seen when it projects inside the other image
    with a depth within `tolerance` (relative) of what that image sees there (occluded samples do not count)."""
    camera = truth.cameras[1]
    names = [im.name for im in truth.images]
    poses = np.stack([truth.poses[n] for n in names])
    k_inv = np.linalg.inv(camera.K)
    h, w = depths.shape[1:]
    v, u = np.mgrid[0:h, 0:w]
    pix = np.stack([(u + 0.5) * depth_stride, (v + 0.5) * depth_stride, np.ones_like(u, dtype=float)], -1)
    rays = pix.reshape(-1, 3) @ k_inv.T  # (M, 3) camera rays with z = 1
    share = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        z = depths[i].reshape(-1).astype(np.float64)
        ok = np.isfinite(z)
        if not ok.any():
            continue
        cam = rays[ok] * z[ok, None]
        world = (cam - poses[i, :3, 3]) @ poses[i, :3, :3]  # R^T (x - t)
        in_j = np.einsum("jab,mb->jma", poses[:, :3, :3], world) + poses[:, None, :3, 3]  # (n, M, 3)
        zj = in_j[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (in_j[..., :2] / zj[..., None]) * camera.K[[0, 1], [0, 1]] + camera.K[[0, 1], [2, 2]]
        col = np.floor(uv[..., 0] / depth_stride).astype(np.int64)
        row = np.floor(uv[..., 1] / depth_stride).astype(np.int64)
        inside = (zj > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        seen_z = np.full(zj.shape, np.nan)
        jj = np.broadcast_to(np.arange(len(names))[:, None], zj.shape)
        seen_z[inside] = depths[jj[inside], row[inside], col[inside]]
        visible = inside & (np.abs(seen_z - zj) <= tolerance * zj)
        share[i] = visible.mean(axis=1)
    return np.maximum(share, share.T)
