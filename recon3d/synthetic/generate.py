"""A complete synthetic scene on disk, with its ground truth as a recon3d `Scene`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from recon3d.io.files import atomic_write
from recon3d.scene import Features, ImageInfo, Points, Scene, Source
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.observe import Observations, observe
from recon3d.synthetic.render import render
from recon3d.synthetic.rigs import make_rig
from recon3d.synthetic.surfaces import TexturedQuad, make_world, sample_points


def make_scene(out_dir: str | Path, rig: str = "orbit", model: str = "PINHOLE", n_images: int = 12,
               n_points: int = 2000, width: int = 320, height: int = 240, seed: int = 0,
               noise_px: float = 0.0, world: list[TexturedQuad] | None = None,
               movers: Callable[[int, np.ndarray], list[TexturedQuad]] | None = None,
               background: tuple[int, int, int] = (40, 40, 40),
               alpha: bool = False) -> tuple[Scene, dict[str, Observations]]:
    """Render a seeded synthetic scene into `out_dir/images/{i:03d}.png` and return its ground truth.

    The world is `world` (default `make_world(seed)`), the poses `RIGS[rig](n_images, seed=seed)`, all
    images share camera 1 (`make_camera(model, width, height)`). `n_points` points are sampled on the
    surfaces and observed where no surface hides them; points seen by fewer than two images are dropped and the rest
    renumbered. `movers(i, cam_from_world)` adds quads to view i only (objects that move between views):
    they are rendered and hide the points behind them, but no point is sampled on them. `background` is
    the RGB of pixels whose ray hits nothing; with `alpha` the images are RGBA instead, transparent there (as
    Blender's synthetic scenes).

    Returns the truth Scene (source, images with absolute paths, cameras {1: camera}, poses name ->
    cam_from_world (4, 4), features name -> noiseless keypoints (K, 2) float32, points with tracks into
    those keypoints and zero error) and, per image name, the float64 Observations (noise `noise_px`, no
    outliers) whose point_ids index `scene.points` and whose order matches the keypoints.
    Raises ValueError naming an unknown rig or camera model, a negative seed or fewer than one image.
    """
    if seed < 0:  # numpy's own message does not say which argument
        raise ValueError(f"seed {seed}: give 0 or more (it seeds numpy's generators)")
    out_dir = Path(out_dir).resolve()
    cam_from_world = make_rig(rig, n_images, seed=seed)
    camera = make_camera(model, width, height)
    quads = make_world(seed) if world is None else world
    view_quads = [quads + (movers(i, pose) if movers else []) for i, pose in enumerate(cam_from_world)]
    xyz, rgb = sample_points(quads, n_points, seed=seed + 1)
    names = [f"{i:03d}.png" for i in range(n_images)]

    images = []
    for name, pose, seen_quads in zip(names, cam_from_world, view_quads, strict=True):
        image, depth = render(seen_quads, camera, pose, background=background)
        path = out_dir / "images" / name
        if alpha:
            image = np.dstack([image, np.where(np.isfinite(depth), 255, 0).astype(np.uint8)])
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if alpha else cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"could not encode {name} as PNG")
        atomic_write(path, lambda f, data=png: f.write(data.tobytes()))
        images.append(ImageInfo(name=name, path=str(path), camera_id=1, width=width, height=height))

    seen = [observe(xyz, camera, pose, quads=view_quads[i], noise_px=noise_px, seed=seed * 7919 + i)
            for i, pose in enumerate(cam_from_world)]
    counts = np.bincount(np.concatenate([o.point_ids for o in seen]), minlength=n_points)
    kept = np.flatnonzero(counts >= 2)
    new_id = np.full(n_points, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    observations: dict[str, Observations] = {}
    for name, obs in zip(names, seen, strict=True):
        obs = obs.subset(counts[obs.point_ids] >= 2)
        observations[name] = Observations(new_id[obs.point_ids], obs.xy_true, obs.xy, obs.is_outlier)

    scene = Scene(
        source=Source(str(out_dir), "synthetic"),
        images=tuple(images),
        cameras={1: camera},
        poses={name: pose.copy() for name, pose in zip(names, cam_from_world, strict=True)},
        features={name: Features(keypoints=obs.xy_true.astype(np.float32)) for name, obs in observations.items()},
        points=_points(xyz[kept], rgb[kept], [observations[name] for name in names]),
    )
    return scene, observations


def _points(xyz: np.ndarray, rgb: np.ndarray, per_image: list[Observations]) -> Points:
    """Tracks from per-image observations: point i is seen by image j at keypoint k (k = row in image j)."""
    point = np.concatenate([o.point_ids for o in per_image])
    image = np.concatenate([np.full(len(o), j) for j, o in enumerate(per_image)])
    keypoint = np.concatenate([np.arange(len(o)) for o in per_image])
    order = np.lexsort((image, point))  # by point, then by image
    counts = np.bincount(point, minlength=len(xyz))
    return Points(
        xyz=xyz,
        rgb=rgb,
        error=np.zeros(len(xyz)),
        track_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        track_image=image[order].astype(np.int32),
        track_keypoint=keypoint[order].astype(np.int32),
    )
