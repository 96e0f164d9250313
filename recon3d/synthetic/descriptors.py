"""A synthetic scene at the features level: keypoints with descriptors, no pixels, exact correspondences.

For tests and scale runs of matching (thousands of images) without rendering or extracting: every 3D point
has a random 128-byte descriptor; each image observes the points in its view (no occlusion) with the
point's descriptor plus Gaussian noise, plus random distractor keypoints that match nothing. Which point
each keypoint shows is returned, so a matcher's output can be scored exactly.
"""

from __future__ import annotations

import numpy as np

from recon3d.scene import Features, ImageInfo, Scene, Source
from recon3d.stages.features import DESCRIPTOR_SIZE
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.observe import observe
from recon3d.synthetic.rigs import make_rig
from recon3d.synthetic.surfaces import make_world, sample_points


def descriptor_scene(n_images: int, rig: str = "orbit", n_points: int = 4000, keypoints: int = 1000,
                     distractors: float = 0.2, noise: float = 8.0, width: int = 640, height: int = 480,
                     seed: int = 0) -> tuple[Scene, dict[str, np.ndarray]]:
    """A Scene with images (no files: paths are empty), camera 1, true poses and features.

    Each image keeps at most `keypoints` of the points it sees (chosen at random), then adds
    `distractors x that many` keypoints at random pixels with random descriptors; keypoints are shuffled.
    Descriptors are uint8: the point's uniform random descriptor plus N(0, `noise`) per byte, clipped.
    Returns the scene and, per image name, (K,) int64 point ids of its keypoints (-1 for distractors).
    """
    rng = np.random.default_rng(seed)
    camera = make_camera("PINHOLE", width, height)
    poses = make_rig(rig, n_images, seed=seed)
    xyz, _ = sample_points(make_world(seed), n_points, seed=seed + 1)
    point_desc = rng.integers(0, 256, (n_points, DESCRIPTOR_SIZE)).astype(np.float32)
    images, features, truth = [], {}, {}
    for i, pose in enumerate(poses):
        name = f"{i:06d}.png"
        seen = observe(xyz, camera, pose)
        keep = rng.permutation(len(seen))[:keypoints]
        ids, xy = seen.point_ids[keep], seen.xy_true[keep]
        n_extra = int(round(distractors * len(ids)))
        ids = np.concatenate([ids, np.full(n_extra, -1)])
        xy = np.concatenate([xy, rng.uniform([0, 0], [width, height], (n_extra, 2))])
        desc = np.concatenate([point_desc[ids[:len(keep)]],
                               rng.integers(0, 256, (n_extra, DESCRIPTOR_SIZE)).astype(np.float32)])
        desc = np.clip(np.round(desc + rng.normal(0.0, noise, desc.shape)), 0, 255).astype(np.uint8)
        order = rng.permutation(len(ids))
        images.append(ImageInfo(name=name, path="", camera_id=1, width=width, height=height))
        features[name] = Features(keypoints=xy[order].astype(np.float32), descriptors=desc[order])
        truth[name] = ids[order]
    scene = Scene(source=Source("", "synthetic"), images=tuple(images), cameras={1: camera},
                  poses={im.name: p.copy() for im, p in zip(images, poses, strict=True)}, features=features)
    return scene, truth
