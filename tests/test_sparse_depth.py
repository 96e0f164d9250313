"""The sparse points' depth as a training signal (`radiance.sparse_depth`, the Gaussians' `depth_lambda`)."""

import numpy as np
import pytest
import torch

from recon3d.radiance.gaussians.rasterize import rasterize
from recon3d.radiance.sparse_depth import disparity_loss, observed_points
from recon3d.scene import Camera, ImageInfo, Points, Scene

K = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])


def test_observed_points_are_those_whose_track_names_the_image():
    images = tuple(ImageInfo(n, f"/x/{n}", 1, 64, 48) for n in ("a", "b", "c"))
    xyz = np.arange(12, dtype=float).reshape(4, 3)
    # point 0 seen by a, b; point 1 by b, c; point 2 by a, c; point 3 by b twice (two keypoints)
    points = Points(xyz, np.zeros((4, 3), np.uint8), np.zeros(4), np.array([0, 2, 4, 6, 8]),
                    np.array([0, 1, 1, 2, 0, 2, 1, 1], np.int32), np.arange(8, dtype=np.int32))
    scene = Scene(images=images, cameras={1: Camera("PINHOLE", 64, 48, np.array([50.0, 50, 32, 24]))},
                  points=points)
    a, b, c, missing = observed_points(scene, ["a", "b", "c", "nowhere"])
    np.testing.assert_array_equal(a, xyz[[0, 2]])
    np.testing.assert_array_equal(b, xyz[[0, 1, 3]])
    np.testing.assert_array_equal(c, xyz[[1, 2]])
    assert missing.shape == (0, 3)
    assert all(p.shape == (0, 3) for p in observed_points(Scene(images=images), ["a", "b"]))


def test_disparity_loss_compares_disparities_at_the_points_it_can_see():
    depth = torch.full((48, 64, 1), 2.0, requires_grad=True)
    with torch.no_grad():
        depth[:, 40:] = 0.0  # nothing rendered on the right: points there say nothing
    points = torch.tensor([[0.0, 0.0, 4.0],  # centre, depth 4 against 2 rendered
                           [0.1, 0.1, 4.0],
                           [0.0, 0.0, -4.0],  # behind the camera
                           [10.0, 0.0, 4.0],  # outside the image
                           [0.8, 0.0, 4.0]])  # where the render has no depth (u = 42)
    loss = disparity_loss(depth, points, torch.eye(4), K, scale=3.0)
    assert loss.item() == pytest.approx(abs(1 / 2 - 1 / 4) * 3.0, rel=1e-6)
    loss.backward()
    assert torch.isfinite(depth.grad).all() and depth.grad[24, 32, 0] != 0 and depth.grad[:, 40:].abs().sum() == 0
    none_seen = disparity_loss(depth, points[2:4], torch.eye(4), K, scale=1.0)
    assert none_seen.item() == 0.0 and none_seen.requires_grad


def test_depth_loss_pulls_a_floating_gaussian_back_to_its_point():
    """One opaque Gaussian at depth 2 on the axis, the point it should explain at depth 3: the loss alone moves it
    there through the C++ kernel's backward (the depth channel)."""
    means = torch.tensor([[0.0, 0.0, 2.0]], requires_grad=True)
    fixed = dict(quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.3),
                 opacities=torch.tensor([0.99]), colors=torch.ones(1, 3))
    point = torch.tensor([[0.0, 0.0, 3.0]])
    opt = torch.optim.Adam([means], lr=0.02)
    for _ in range(150):
        _, _, depth, _ = rasterize(means, fixed["quats"], fixed["scales"], fixed["opacities"], fixed["colors"],
                                   torch.eye(4), K, 64, 48)
        loss = disparity_loss(depth, point, torch.eye(4), K, scale=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert means[0, 2].item() == pytest.approx(3.0, abs=0.05)
    assert loss.item() < 0.01


def test_training_with_depth_lambda_renders_the_points_depths_closer(tmp_path):
    """300 known Gaussians seen by 16 views, their centres as the sparse points (every view in every track);
    trained from a visual hull instead of those points, the depth term brings the training views' rendered
    depth at the points closer to theirs than the colours alone do in the same steps."""
    from recon3d.radiance.gaussians.trainer import GaussianTrainConfig, render_view, train
    from recon3d.radiance.views import load_views, split_views
    from recon3d.stages import ingest
    from recon3d.synthetic.splats import splat_world, write_splat_dataset

    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(write_splat_dataset(tmp_path / "d", 16, 64, 48, 300,
                                                                                  4, seed=1))))
    xyz = splat_world(300, seed=1)["means"].numpy().astype(np.float64)
    n, m = len(xyz), len(scene.images)
    scene = scene.replace(points=Points(xyz, np.full((n, 3), 128, np.uint8), np.zeros(n),
                                        np.arange(0, n * m + 1, m, dtype=np.int64),
                                        np.tile(np.arange(m, dtype=np.int32), n), np.zeros(n * m, np.int32)))
    views = load_views(scene, split_views(scene, 8)[0], (1.0, 1.0, 1.0))
    targets = [torch.as_tensor(p, dtype=torch.float32) for p in observed_points(scene, [v.name for v in views])]
    error = {}
    for weight in (0.0, 1.0):
        cfg = GaussianTrainConfig(steps=60, eval_every_s=0, refine_start=20, refine_every=20, sh_interval=20,
                                  init_scale=1.0, init_count=2000, init="visual_hull", depth_lambda=weight)
        result = train(scene, views, cfg, torch.ones(3), tmp_path / str(weight))
        assert result.events.get("depth_observations") == (12 * 300 if weight else None)  # every point in every view
        model = result.model
        with torch.no_grad():
            error[weight] = np.mean([disparity_loss(render_view(model, v, torch.ones(3), "cpu")[2], p,
                                                    v.cam_from_world, v.K, 1.0).item()
                                     for v, p in zip(views, targets, strict=True)])
    assert error[1.0] < 0.9 * error[0.0]
