"""geometry.epipolar: each formula against synthetic truth, batch shapes, and bad shapes named in the error."""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon3d.geometry import camera_models, epipolar
from recon3d.geometry.rotation import rigid, rotation_angle_deg


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A cam2_from_cam1 (4, 4) with a rotation of up to ~20 degrees and a unit baseline, mostly sideways."""
    rotation = Rotation.from_rotvec(rng.normal(0.0, 0.2, 3)).as_matrix()
    t = np.array([1.0, 0.0, 0.0]) + rng.normal(0.0, 0.2, 3)
    return rigid(rotation, t / np.linalg.norm(t))


def correspondences(rng: np.random.Generator, pose: np.ndarray, n: int = 50):
    """Points (n, 3) in camera 1 in front of both cameras, and their exact normalised images (n, 2) x 2."""
    points = np.column_stack([rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)])
    in2 = points @ pose[:3, :3].T + pose[:3, 3]
    assert np.all(in2[:, 2] > 0)
    return points, points[:, :2] / points[:, 2:], in2[:, :2] / in2[:, 2:]


def test_skew_is_the_cross_product_and_batches():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", epipolar.skew(a), b), np.cross(a, b), atol=1e-12)
    assert epipolar.skew(a.reshape(5, 1, 3)).shape == (5, 1, 3, 3)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        epipolar.skew(np.zeros(4))


def test_essential_annihilates_exact_correspondences():
    rng = np.random.default_rng(1)
    for _ in range(5):
        pose = random_pose(rng)
        _, x1, x2 = correspondences(rng, pose)
        E = epipolar.essential_from_pose(pose)  # noqa: N806
        residual = np.einsum("ni,ij,nj->n", epipolar.homogeneous(x2), E, epipolar.homogeneous(x1))
        assert np.abs(residual).max() < 1e-12
        np.testing.assert_allclose(np.linalg.svd(E, compute_uv=False), [1, 1, 0], atol=1e-12)
    poses = np.stack([random_pose(rng) for _ in range(3)])
    assert epipolar.essential_from_pose(poses).shape == (3, 3, 3)


def test_fundamental_in_pixels_and_back():
    rng = np.random.default_rng(2)
    pose = random_pose(rng)
    points, _, _ = correspondences(rng, pose)
    k1 = camera_models.calibration_matrix("PINHOLE", np.array([500.0, 505.0, 320.5, 239.5]))
    k2 = camera_models.calibration_matrix("SIMPLE_PINHOLE", np.array([700.0, 400.0, 300.0]))
    px1 = camera_models.project("PINHOLE", np.array([500.0, 505.0, 320.5, 239.5]), points)
    px2 = camera_models.project("SIMPLE_PINHOLE", np.array([700.0, 400.0, 300.0]),
                                points @ pose[:3, :3].T + pose[:3, 3])
    E = epipolar.essential_from_pose(pose)  # noqa: N806
    F = epipolar.fundamental_from_essential(E, k1, k2)  # noqa: N806
    assert epipolar.sampson_error(F, px1, px2).max() < 1e-9
    assert epipolar.symmetric_epipolar_distance(F, px1, px2).max() < 1e-15
    back = epipolar.essential_from_fundamental(F, k1, k2)
    back *= np.sign(np.sum(back * E))
    np.testing.assert_allclose(back, E / np.linalg.norm(E), atol=1e-12)


def test_sampson_and_epipolar_distances_of_a_known_offset():
    """Move x2 by d perpendicular to its epipolar line: the distance in image 2 is d, Sampson at most d."""
    rng = np.random.default_rng(3)
    pose = random_pose(rng)
    _, x1, x2 = correspondences(rng, pose, n=20)
    E = epipolar.essential_from_pose(pose)  # noqa: N806
    lines = epipolar.homogeneous(x1) @ E.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    d = 1e-3
    moved = x2 + d * normal
    d2, d1 = epipolar.epipolar_distances(E, x1, moved)
    np.testing.assert_allclose(d2, d, rtol=1e-9)
    assert np.all(d1 > 0)
    sampson = epipolar.sampson_error(E, x1, moved)
    assert np.all(sampson <= d * (1 + 1e-9)) and np.all(sampson > 0.3 * d)
    np.testing.assert_allclose(epipolar.sampson_error(E, x1, moved, squared=True), sampson**2)
    np.testing.assert_allclose(epipolar.symmetric_epipolar_distance(E, x1, moved), d2**2 + d1**2)


def test_decompose_essential_contains_the_truth():
    rng = np.random.default_rng(4)
    for _ in range(5):
        pose = random_pose(rng)
        rotations, translations = epipolar.decompose_essential(epipolar.essential_from_pose(pose) * -3.0)
        assert rotations.shape == (4, 3, 3) and translations.shape == (4, 3)
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
        hits = [rotation_angle_deg(r, pose[:3, :3]) < 1e-9 and np.allclose(t, pose[:3, 3], atol=1e-9)
                for r, t in zip(rotations, translations, strict=True)]
        assert sum(hits) == 1


def test_pose_from_essential_triangulation_and_cheirality():
    rng = np.random.default_rng(5)
    pose = random_pose(rng)
    points, x1, x2 = correspondences(rng, pose)
    found, front = epipolar.pose_from_essential(epipolar.essential_from_pose(pose), x1, x2)
    assert front.all()
    np.testing.assert_allclose(found, pose, atol=1e-9)
    np.testing.assert_allclose(epipolar.triangulate_linear(pose, x1, x2), points, rtol=1e-9)
    z1, z2 = epipolar.depths(pose, points)
    assert np.all(z1 > 0) and np.all(z2 > 0)


def test_pose_from_essential_agrees_with_opencv_recover_pose():
    """The readable reference against cv2.recoverPose on noisy points and one estimated E."""
    rng = np.random.default_rng(6)
    pose = random_pose(rng)
    _, x1, x2 = correspondences(rng, pose, n=100)
    x1, x2 = x1 + rng.normal(0, 1e-3, x1.shape), x2 + rng.normal(0, 1e-3, x2.shape)
    E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.LMEDS)  # noqa: N806
    ours, _ = epipolar.pose_from_essential(E[:3], x1, x2)
    _, rotation, t, _ = cv2.recoverPose(E[:3], x1, x2, np.eye(3))
    assert rotation_angle_deg(ours[:3, :3], rotation) < 1e-9
    np.testing.assert_allclose(ours[:3, 3], t.ravel(), atol=1e-9)


def test_ray_angle_is_the_triangulation_angle_without_triangulating():
    rng = np.random.default_rng(3)
    pose = rigid(Rotation.from_rotvec([0.1, -0.3, 0.05]).as_matrix(), np.array([-1.0, 0.2, 0.3]))
    points = rng.uniform([-2, -2, 4], [2, 2, 8], (50, 3))
    cam2 = points @ pose[:3, :3].T + pose[:3, 3]
    x1, x2 = points[:, :2] / points[:, 2:], cam2[:, :2] / cam2[:, 2:]
    np.testing.assert_allclose(epipolar.ray_angle_deg(pose, x1, x2), epipolar.triangulation_angle(pose, points),
                               atol=1e-9)


def test_triangulation_angle_right_angle():
    pose = rigid(np.eye(3), [-2.0, 0.0, 0.0])  # camera 2 sits at x = 2 in camera 1's frame
    np.testing.assert_allclose(epipolar.triangulation_angle(pose, np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1e9]])),
                               [90.0, 0.0], atol=1e-6)


def test_refine_relative_pose_converges_to_the_truth():
    rng = np.random.default_rng(7)
    pose = random_pose(rng)
    _, x1, x2 = correspondences(rng, pose, n=40)
    start = pose @ rigid(Rotation.from_rotvec([0.01, -0.02, 0.01]).as_matrix(), [0.05, 0.02, 0.0])
    refined = epipolar.refine_relative_pose(start, x1, x2, scale=500.0)
    assert rotation_angle_deg(refined[:3, :3], pose[:3, :3]) < 1e-6
    assert epipolar.translation_angle_deg(refined[:3, 3], pose[:3, 3]) < 1e-6
    with pytest.raises(ValueError, match="at least 5"):
        epipolar.refine_relative_pose(pose, x1[:4], x2[:4])


def test_translation_angle():
    np.testing.assert_allclose(epipolar.translation_angle_deg([1.0, 0, 0], [0, 2.0, 0]), 90.0)
    np.testing.assert_allclose(epipolar.translation_angle_deg([[1.0, 0, 0]], [[-3.0, 0, 0]]), [180.0])


@pytest.mark.parametrize("call, shape", [
    (lambda: epipolar.essential_from_pose(np.eye(3)), r"\(3, 3\)"),
    (lambda: epipolar.sampson_error(np.eye(3), np.zeros((5, 3)), np.zeros((5, 3))), r"\(5, 3\)"),
    (lambda: epipolar.sampson_error(np.eye(3), np.zeros((5, 2)), np.zeros((4, 2))), r"\(4, 2\)"),
    (lambda: epipolar.fundamental_from_essential(np.eye(3), np.eye(2), np.eye(3)), r"\(2, 2\)"),
    (lambda: epipolar.decompose_essential(np.zeros((2, 3, 3))), r"\(2, 3, 3\)"),
    (lambda: epipolar.triangulate_linear(np.eye(4), np.zeros(2), np.zeros(2)), r"\(2,\)"),
])
def test_bad_shapes_are_named(call, shape):
    with pytest.raises(ValueError, match=shape):
        call()
