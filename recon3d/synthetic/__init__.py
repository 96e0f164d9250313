"""Seeded synthetic scenes with exact ground truth, for end-to-end tests of every stage.

- `surfaces`: the textured world (ground, boxes, backdrop), ray casting and point sampling;
- `rigs`: camera trajectories (`orbit`, `forward_facing`, `stereo_pair`, `random_in_box`, `handheld`);
- `cameras`: intrinsics for every COLMAP model, with mild distortion;
- `render`: ray-cast images and calibration boards (chessboard, ChArUco) with their corners;
- `observe`: which points a camera sees, with noise and outliers;
- `generate.make_scene`: all of it on disk, returned as a truth `Scene` and each image's `Observations`;
- `correspondences.noisy_matches`: a truth scene as SfM's input (keypoints with noise, matches with outliers,
  poses and points set aside), for the essential / triangulate / bundle_adjust stages;
- `dataset.write_dataset`: a scene in nerfstudio's or COLMAP's format with its truth in `ground_truth/`
  (what `recon3d synth` writes).

`render` and `observe` here are the functions; their modules are reached with `from recon3d.synthetic.render
import ...` (an `import recon3d.synthetic.render as m` binds the function).

Poses are `cam_from_world` (4, 4) float64, OpenCV axes; pixels are COLMAP's (centre of the top-left pixel
at (0.5, 0.5)); images are (H, W, 3) uint8 RGB; the world has z up.
"""

from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.correspondences import noisy_matches
from recon3d.synthetic.dataset import write_dataset, write_labeled_dataset
from recon3d.synthetic.generate import make_scene
from recon3d.synthetic.observe import Observations, observe
from recon3d.synthetic.render import Board, board_poses, charuco, chessboard, render, render_board
from recon3d.synthetic.rigs import RIGS, forward_facing, handheld, make_rig, orbit, random_in_box, stereo_pair
from recon3d.synthetic.surfaces import (
    TexturedQuad,
    make_world,
    random_texture,
    ray_cast,
    sample_points,
    texture_lookup,
)

__all__ = [
    "RIGS", "Board", "Observations", "TexturedQuad", "board_poses", "charuco", "chessboard", "forward_facing",
    "handheld", "make_camera", "make_rig", "make_scene", "make_world", "noisy_matches", "observe", "orbit",
    "random_in_box", "random_texture", "ray_cast", "render", "render_board", "sample_points", "stereo_pair",
    "texture_lookup", "write_dataset", "write_labeled_dataset",
]
