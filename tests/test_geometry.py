"""Geometry functions against independent implementations (pycolmap, OpenCV, scipy) and exact truth."""

import cv2
import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from recon3d.geometry import camera_models
from recon3d.geometry.align import camera_extent, pose_errors, relative_rotation_errors, umeyama
from recon3d.geometry.projection import pixels_to_rays, world_to_pixels
from recon3d.geometry.rotation import (
    camera_center,
    invert_rigid,
    look_at,
    matrix_to_quat,
    quat_to_matrix,
    rigid,
    rotation_angle_deg,
)

# realistic, mild distortion for each model (a 640x480 camera)
PARAMS = {
    "SIMPLE_PINHOLE": [500.0, 320.0, 240.0],
    "PINHOLE": [500.0, 510.0, 321.0, 239.0],
    "SIMPLE_RADIAL": [500.0, 320.0, 240.0, -0.08],
    "RADIAL": [500.0, 320.0, 240.0, -0.08, 0.01],
    "OPENCV": [500.0, 510.0, 321.0, 239.0, -0.1, 0.02, 0.001, -0.0005],
    "OPENCV_FISHEYE": [300.0, 301.0, 320.0, 240.0, 0.05, -0.01, 0.002, -0.0005],
    "FULL_OPENCV": [500.0, 510.0, 321.0, 239.0, -0.1, 0.02, 0.001, -0.0005, 0.003, 0.01, 0.002, 0.0005],
}


def random_points_cam(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-0.4, 0.4, n), rng.uniform(1.0, 3.0, n)])


@pytest.mark.parametrize("model", list(camera_models.MODELS))
def test_project_matches_pycolmap(model):
    params = np.array(PARAMS[model])
    cam = pycolmap.Camera(model=model, width=640, height=480, params=params)
    assert list(cam.params_info.replace(" ", "").split(",")) == list(camera_models.MODELS[model])
    pts = random_points_cam(200)
    ours = camera_models.project(model, params, pts)
    theirs = cam.img_from_cam(pts)
    np.testing.assert_allclose(ours, theirs, atol=1e-9, rtol=0)


@pytest.mark.parametrize("model", list(camera_models.MODELS))
def test_unproject_inverts_project(model):
    params = np.array(PARAMS[model])
    pts = random_points_cam(200, seed=1)
    pix = camera_models.project(model, params, pts)
    uv = camera_models.unproject(model, params, pix)
    np.testing.assert_allclose(uv, pts[:, :2] / pts[:, 2:], atol=1e-10)


def test_opencv_models_match_cv2_project_points():
    pts = random_points_cam(100, seed=2)
    for model in ("OPENCV", "FULL_OPENCV"):
        p = np.array(PARAMS[model])
        k = camera_models.calibration_matrix(model, p)
        dist = np.concatenate([p[4:8], p[8:9], p[9:12]]) if model == "FULL_OPENCV" else p[4:]
        # cv2 order for 8 coefficients: k1 k2 p1 p2 k3 k4 k5 k6 — the same as COLMAP's FULL_OPENCV
        theirs, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, dist)
        np.testing.assert_allclose(camera_models.project(model, p, pts), theirs[:, 0], atol=1e-9)


def test_points_behind_camera_are_nan():
    pix = camera_models.project("PINHOLE", np.array(PARAMS["PINHOLE"]), np.array([[0.0, 0.0, -1.0]]))
    assert np.isnan(pix).all()


def test_bad_model_and_params_raise():
    with pytest.raises(ValueError, match="unknown camera model 'PINHOLEX'"):
        camera_models.check_model("PINHOLEX")
    with pytest.raises(ValueError, match=r"takes 4 parameters.*got shape \(3,\)"):
        camera_models.project("PINHOLE", np.ones(3), np.ones((1, 3)))


def test_make_params_round_trip():
    p = camera_models.make_params("OPENCV", (500, 510), (321, 239), (-0.1, 0.02))
    np.testing.assert_array_equal(p, [500, 510, 321, 239, -0.1, 0.02, 0, 0])
    focal, principal, dist = camera_models.split_params("SIMPLE_RADIAL", np.array(PARAMS["SIMPLE_RADIAL"]))
    np.testing.assert_array_equal(focal, [500, 500])


def test_quaternion_order_is_wxyz():
    r = Rotation.from_euler("xyz", [10, -20, 30], degrees=True)
    q = matrix_to_quat(r.as_matrix())
    np.testing.assert_allclose(q, r.as_quat(scalar_first=True) * np.sign(r.as_quat(scalar_first=True)[0]))
    np.testing.assert_allclose(quat_to_matrix(q), r.as_matrix(), atol=1e-15)
    assert q[0] >= 0
    # pycolmap stores (x, y, z, w) internally; its matrix must agree with ours
    rot = pycolmap.Rotation3d(r.as_matrix())
    np.testing.assert_allclose(rot.matrix(), quat_to_matrix(q), atol=1e-12)


def test_rigid_inverse_and_center():
    rng = np.random.default_rng(3)
    r = Rotation.random(5, random_state=4).as_matrix()
    t = rng.normal(size=(5, 3))
    cam_from_world = rigid(r, t)
    np.testing.assert_allclose(invert_rigid(cam_from_world) @ cam_from_world, np.broadcast_to(np.eye(4), (5, 4, 4)),
                               atol=1e-14)
    np.testing.assert_allclose(camera_center(cam_from_world), -np.einsum("nji,nj->ni", r, t), atol=1e-14)


def test_look_at_points_the_optical_axis_at_the_target():
    eye, target = np.array([3.0, -2.0, 1.5]), np.array([0.1, 0.2, 0.3])
    cam_from_world = look_at(eye, target)
    pix, depth = world_to_pixels("PINHOLE", np.array(PARAMS["PINHOLE"]), cam_from_world, target[None])
    np.testing.assert_allclose(pix[0], [321.0, 239.0], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(target - eye))
    # world up (+z) points up in the image (negative y)
    up_pix, _ = world_to_pixels("PINHOLE", np.array(PARAMS["PINHOLE"]), cam_from_world, (target + [0, 0, 0.1])[None])
    assert up_pix[0, 1] < 239.0


@pytest.mark.parametrize("model", ["PINHOLE", "OPENCV", "OPENCV_FISHEYE"])
def test_rays_hit_the_points_they_came_from(model):
    params = np.array(PARAMS[model])
    cam_from_world = look_at(np.array([2.0, 2.0, 1.0]), np.zeros(3))
    pts = np.random.default_rng(5).uniform(-0.5, 0.5, (50, 3))
    pix, depth = world_to_pixels(model, params, cam_from_world, pts)
    origins, dirs = pixels_to_rays(model, params, cam_from_world, pix)
    to_point = pts - origins
    along = np.sum(to_point * dirs, axis=1)
    np.testing.assert_allclose(origins + along[:, None] * dirs, pts, atol=1e-9)


def test_umeyama_recovers_a_similarity_exactly():
    rng = np.random.default_rng(6)
    src = rng.normal(size=(20, 3))
    r = Rotation.random(random_state=7).as_matrix()
    dst = 2.5 * src @ r.T + [1.0, -2.0, 0.5]
    sim = umeyama(src, dst)
    assert sim.scale == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(sim.rotation, r, atol=1e-12)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-12)
    with pytest.raises(ValueError, match="umeyama needs"):
        umeyama(src[:2], dst[:2])


def test_pose_errors_are_zero_for_a_similar_copy():
    rng = np.random.default_rng(8)
    r = Rotation.random(6, random_state=9).as_matrix()
    gt = rigid(r, rng.normal(size=(6, 3)))
    # the same cameras in a world scaled by 3, rotated and shifted: world_b = s R world_a + t
    s, rw, tw = 3.0, Rotation.random(random_state=10).as_matrix(), np.array([1.0, 2.0, 3.0])
    world_a_from_b = rigid(rw.T, -rw.T @ tw / s)
    est = gt @ world_a_from_b
    est[:, :3, 3] *= s  # cam_from_world_b: x_cam*s = R_a (s R_w^T (X_b - t)/s ...) scaled camera
    errs = pose_errors(est, gt)
    assert errs.summary()["ate_rmse"] < 1e-9
    assert errs.summary()["rotation_error_max_deg"] < 1e-6
    assert errs.summary()["relative_rotation_error_max_deg"] < 1e-6
    assert errs.alignment.inverse().apply(errs.alignment.apply(gt[:, :3, 3])) == pytest.approx(gt[:, :3, 3])


def test_relative_rotation_error_sees_one_rotated_camera_in_every_pair_it_is_in():
    gt = rigid(Rotation.random(5, random_state=3).as_matrix(), np.zeros((5, 3)))
    est = gt.copy()
    est[2, :3, :3] = Rotation.from_euler("x", 2.0, degrees=True).as_matrix() @ est[2, :3, :3]
    rre = relative_rotation_errors(est, gt)  # pairs (0,1) (0,2) (0,3) (0,4) (1,2) (1,3) (1,4) (2,3) (2,4) (3,4)
    np.testing.assert_allclose(rre, [0, 2, 0, 0, 2, 0, 0, 2, 2, 0], atol=1e-9)
    assert camera_extent(rigid(np.tile(np.eye(3), (2, 1, 1)), [[0, 0, 0], [3, 4, 0]])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="not finite"):
        pose_errors(np.full((3, 4, 4), np.nan), gt[:3])
    assert rotation_angle_deg(np.eye(3), Rotation.from_euler("z", 30, degrees=True).as_matrix()) == pytest.approx(30)


def test_up_from_cameras_is_the_cameras_mean_up():
    from recon3d.geometry.rotation import look_at, up_from_cameras

    up = np.array([0.2, -0.3, 0.93])
    up /= np.linalg.norm(up)
    rng = np.random.default_rng(0)
    poses = np.stack([look_at(rng.normal(size=3) * 3, rng.normal(size=3) * 0.1, up) for _ in range(12)])
    assert np.dot(up_from_cameras(poses), up) > 0.95  # level cameras around a scene: their mean up is near it
    assert np.allclose(up_from_cameras(poses[:1]), poses[0, :3, :3].T @ [0, -1, 0])


def test_horizontal_axes_complete_up_to_a_right_handed_frame():
    from recon3d.geometry.rotation import horizontal_axes

    for up in ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.2, -0.3, 0.93]):  # x-like up takes world y as its reference
        up = np.array(up) / np.linalg.norm(up)
        frame = np.stack([*horizontal_axes(up), up])
        np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(frame) == pytest.approx(1.0)


def test_most_level_camera_looks_most_nearly_horizontally():
    from recon3d.geometry.rotation import look_at, most_level_camera

    up = np.array([0.0, 0.0, 1.0])
    eyes = [(0, 0, 5), (3, 0, 3), (4, 0.5, 0.2), (2, 2, 4)]  # above, diagonal, nearly level, diagonal
    poses = np.stack([look_at(np.array(e, float), np.zeros(3), up + [0.01, 0, 0]) for e in eyes])
    assert most_level_camera(poses, up) == 2
