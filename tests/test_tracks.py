"""Tracks by union-find over pair matches: chains merge, a component with two keypoints of one image is dropped."""

import numpy as np

from recon3d.scene import Features, ImageInfo, Scene, TwoViewGeometry
from recon3d.sfm.tracks import build_tracks, verified_matches


def test_chains_merge_and_inconsistent_components_drop():
    matches = {
        (0, 1): np.array([[0, 0], [1, 1], [2, 2]]),
        (1, 2): np.array([[0, 3], [1, 4]]),
        (0, 2): np.array([[2, 0], [3, 1]]),  # 2 -> (1, 2) and (2, 0): fine; 3 -> (2, 1) alone
    }
    tracks, dropped = build_tracks([4, 3, 5], matches)
    got = sorted(tuple(zip(tracks.image[a:b].tolist(), tracks.keypoint[a:b].tolist(), strict=True))
                 for a, b in zip(tracks.offsets[:-1], tracks.offsets[1:], strict=True))
    assert got == [((0, 0), (1, 0), (2, 3)), ((0, 1), (1, 1), (2, 4)), ((0, 2), (1, 2), (2, 0)), ((0, 3), (2, 1))]
    assert dropped == 0 and len(tracks) == 4 and tracks.lengths().tolist() == [3, 3, 3, 2]
    # keypoint 0 of image 2 now joins two keypoints of image 0: that component is inconsistent
    matches[(0, 2)] = np.array([[2, 0], [3, 1], [0, 0]])
    tracks, dropped = build_tracks([4, 3, 5], matches)
    assert dropped == 1 and len(tracks) == 2


def test_no_matches_and_verified_inliers_only():
    tracks, dropped = build_tracks([3, 3], {})
    assert len(tracks) == 0 and dropped == 0
    images = tuple(ImageInfo(n, n, 1, 10, 10) for n in ("a", "b"))
    feats = {n: Features(np.zeros((3, 2), np.float32)) for n in ("a", "b")}
    m = np.array([[0, 0], [1, 2], [2, 1]], np.int32)
    scene = Scene(images=images, features=feats, matches={("a", "b"): m},
                  two_view={("a", "b"): TwoViewGeometry("calibrated", np.array([True, False, True]))})
    assert verified_matches(scene)[(0, 1)].tolist() == [[0, 0], [2, 1]]
