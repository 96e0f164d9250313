"""The sparse model's report figures, drawn without matplotlib."""

import re

import cv2
import numpy as np

from recon3d.geometry.rotation import look_at
from recon3d.report.sfm_figures import PANEL, reprojection_histogram_svg, scene_views_png


def test_scene_views_draw_cameras_in_red_and_points_in_their_colours():
    """Four cameras on a ring looking at a green cube of points: both panels show red cameras and green points
    and nothing else but the white ground, the titles and the frame."""
    cameras = np.stack([look_at([4 * np.cos(a), 4 * np.sin(a), 1.0], [0, 0, 0]) for a in np.arange(4) * np.pi / 2])
    xyz = np.random.default_rng(0).uniform(-1, 1, (2000, 3))
    rgb = np.tile(np.array([[0, 200, 0]], np.uint8), (2000, 1))
    png = scene_views_png(cameras, xyz, rgb, np.array([0.0, 0.0, 1.0]))
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (PANEL[1], 2 * PANEL[0], 3)
    for panel in (img[:, :PANEL[0]], img[:, PANEL[0]:]):
        b, g, r = (panel[..., i].astype(int) for i in range(3))
        assert np.sum((g == 200) & (r == 0) & (b == 0)) > 2000  # 2x2 dots, some hidden behind others
        assert np.sum((r > 180) & (g < 60) & (b < 100)) > 4 * 30  # four filled triangles
    # without points the cameras alone are drawn
    alone = cv2.imdecode(np.frombuffer(scene_views_png(cameras, None, None, np.array([0.0, 0.0, 1.0])), np.uint8),
                         cv2.IMREAD_COLOR)
    assert alone.shape == img.shape and not np.any((alone[..., 1] == 200) & (alone[..., 2] == 0))


def test_reprojection_histogram_counts_every_point_up_to_the_tail():
    errors = np.r_[np.full(300, 0.25), np.full(100, 0.75), [50.0]]  # one outlier beyond the 99.5th percentile
    svg = reprojection_histogram_svg(errors, bins=10)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    counts = [int(c) for c in re.findall(r"px: (\d+) points</title>", svg)]
    assert sorted(counts) == [100, 300] and "401 points, mean" in svg
    assert reprojection_histogram_svg(np.zeros(0)) is None
