"""Labeled synthetic scenes: the world's three boxes are objects of three classes, with exact per-pixel
instance masks, boxes and classes in every view, and optionally a moving object (a `car` box at a new
place in every other view) for testing that masked features keep it out of the reconstruction.

Object ids: 0 is the background (ground and wall), k = 1, 2, 3 the static boxes, `MOVING_OBJECT` the car.
Class ids index `CLASS_NAMES` (object k has class k - 1). Pixels follow COLMAP's convention; a box is the
corners of its mask's pixels (x0, y0, x1, y1) = (min col, min row, max col + 1, max row + 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon3d.io.labels_common import box_of_mask
from recon3d.scene import Camera, Labels, Scene
from recon3d.synthetic.generate import make_scene
from recon3d.synthetic.render import _camera_rays
from recon3d.synthetic.surfaces import SCENE_CENTER, TexturedQuad, box_faces, make_labeled_world, ray_cast

CLASS_NAMES = ("crate", "cabinet", "pedestal", "car")
MOVING_OBJECT = 4  # the car's object id; its class is CLASS_NAMES[3]
MIN_PIXELS = 16  # an object showing fewer pixels in a view gets no label there
CAR_SIZE = np.array([0.8, 0.5, 0.8])


@dataclass(frozen=True)
class LabeledWorld:
    """The static world with an object id per quad, and the car's path (when there is one)."""

    quads: list[TexturedQuad]
    quad_object: np.ndarray  # (Q,) int64, 0 = background
    car_views: frozenset[int] = frozenset()  # views that show the moving car
    seed: int = 0

    def view_quads(self, i: int, cam_from_world: np.ndarray) -> tuple[list[TexturedQuad], np.ndarray]:
        """Quads and their object ids seen by view i (the static world, plus the car in its views)."""
        if i not in self.car_views:
            return self.quads, self.quad_object
        car = car_faces(i, cam_from_world, self.seed)
        return self.quads + car, np.concatenate([self.quad_object, np.full(len(car), MOVING_OBJECT)])


def car_faces(i: int, cam_from_world: np.ndarray, seed: int) -> list[TexturedQuad]:
    """The car in view i: on the ground 2.3 from the scene centre towards the camera, shifted sideways by
    up to 0.6 (a different place in every view), always with the same texture."""
    center = -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]
    toward = (center - SCENE_CENTER)[:2]
    toward /= np.linalg.norm(toward)
    side = np.array([-toward[1], toward[0]])
    xy = SCENE_CENTER[:2] + 2.3 * toward + 0.6 * np.sin(1.7 * i + seed) * side
    return box_faces(xy, CAR_SIZE, float(np.arctan2(side[1], side[0])), seed * 1000 + 900)


def instance_map(quads: list[TexturedQuad], quad_object: np.ndarray, camera: Camera,
                 cam_from_world: np.ndarray) -> np.ndarray:
    """(H, W) int64 object id of the surface seen through each pixel centre (0 = background or nothing)."""
    rotation = cam_from_world[:3, :3]
    center = -rotation.T @ cam_from_world[:3, 3]
    dirs = _camera_rays(camera.model, camera.params.tobytes(), camera.width, camera.height, 0.5, 0.5) @ rotation
    _, quad_index, _ = ray_cast(quads, np.broadcast_to(center, dirs.shape), dirs)
    ids = np.where(quad_index >= 0, quad_object[np.maximum(quad_index, 0)], 0)
    return ids.reshape(camera.height, camera.width)


def labels_from_instances(instances: np.ndarray, min_pixels: int = MIN_PIXELS) -> Labels:
    """Labels of an instance map (H, W): one instance per object showing at least `min_pixels` pixels,
    in object order, class = object id - 1, box = the corners of its mask's pixels."""
    objects = [k for k in np.unique(instances) if k > 0 and (instances == k).sum() >= min_pixels]
    masks = np.stack([instances == k for k in objects]) if objects else np.zeros((0, *instances.shape), bool)
    boxes = np.array([box_of_mask(mask) for mask in masks]).reshape(-1, 4)
    return Labels(boxes=boxes, classes=np.array(objects, dtype=np.int32) - 1, masks=masks)


def surface_objects(quads: list[TexturedQuad], quad_object: np.ndarray,
                    xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object of the surface nearest each point and the distance to it: xyz (N, 3) world ->
    (objects (N,) int64, distances (N,) float64). Quads are rectangles, so clamping the plane coordinates
    to [0, 1] gives the nearest point on each."""
    xyz = np.asarray(xyz, dtype=np.float64)
    best = np.full(len(xyz), np.inf)
    objects = np.zeros(len(xyz), dtype=np.int64)
    for q, obj in zip(quads, quad_object, strict=True):
        rel = xyz - q.origin
        s = np.clip(rel @ q.axis_u / (q.axis_u @ q.axis_u), 0, 1)
        t = np.clip(rel @ q.axis_v / (q.axis_v @ q.axis_v), 0, 1)
        d = np.linalg.norm(rel - s[:, None] * q.axis_u - t[:, None] * q.axis_v, axis=1)
        closer = d < best
        best[closer], objects[closer] = d[closer], obj
    return objects, best


def make_labeled_scene(out_dir: str | Path, n_images: int = 24, width: int = 320, height: int = 240,
                       seed: int = 0, moving: bool = False, n_points: int = 3000,
                       rig: str = "orbit") -> tuple[Scene, LabeledWorld]:
    """Render a labeled scene into `out_dir/images/` and return its truth with labels, and the world.

    Three static boxes (classes crate, cabinet, pedestal) stand on the ground before the wall; with
    `moving`, the car (class car) shows in every odd view, each time somewhere else. Where no surface is
    hit the images are black, what radiance fields trained on a black background show. The truth Scene is
    `make_scene`'s (PINHOLE camera, poses, points on the static world) with `class_names` and exact
    `labels` per image (boxes, classes, masks).
    """
    quads, quad_object = make_labeled_world(seed, n_boxes=3)
    world = LabeledWorld(quads, quad_object, frozenset(range(1, n_images, 2)) if moving else frozenset(), seed)

    def movers(i: int, cam_from_world: np.ndarray) -> list[TexturedQuad]:
        return world.view_quads(i, cam_from_world)[0][len(quads):]

    truth, _ = make_scene(out_dir, rig=rig, model="PINHOLE", n_images=n_images, n_points=n_points, width=width,
                          height=height, seed=seed, world=quads, movers=movers, background=(0, 0, 0))
    camera = truth.cameras[1]
    labels = {}
    for i, im in enumerate(truth.images):
        seen, objects = world.view_quads(i, truth.poses[im.name])
        labels[im.name] = labels_from_instances(instance_map(seen, objects, camera, truth.poses[im.name]))
    names = CLASS_NAMES if moving else CLASS_NAMES[:3]
    return truth.replace(class_names=names, labels=labels), world
