"""The NeRF trainer and stage on a synthetic splat dataset: learning, resume, budget, the nerf pipeline."""

import dataclasses
import json

import pytest
import torch
from pydantic import ValidationError

from recon3d.radiance.nerf.field import VoxelGrid, trilinear_reference, tv_reference
from recon3d.radiance.nerf.trainer import (
    AUTO_DISTORTION,
    AUTO_RAYS,
    NerfTrainConfig,
    _add_tv,
    dilate,
    resolution_at,
    train,
)
from recon3d.radiance.views import load_views, split_views
from recon3d.scene import Scene
from recon3d.stages import ingest
from recon3d.synthetic.splats import write_splat_dataset
from tests.test_gaussians_train import Interrupt, crash_at

FAST = {"steps": 120, "rays": 1024, "res_start": 24, "res_final": 40, "upsample_at": (60,), "occupancy_res": 32,
        "eval_every_s": 0, "checkpoint_every": 40, "eval_views": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_splat_dataset(tmp_path_factory.mktemp("nerf") / "data", 16, 64, 48, 300, 4, seed=1)


@pytest.fixture(scope="module")
def views(data):
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    train_names, test_names = split_views(scene, 8)
    return load_views(scene, train_names, (1.0, 1.0, 1.0)), load_views(scene, test_names, (1.0, 1.0, 1.0))


def test_resolution_schedule():
    cfg = NerfTrainConfig(res_start=64, res_final=256, upsample_at=(100, 200))
    assert [resolution_at(cfg, s) for s in (0, 99, 100, 199, 200, 10**6)] == [64, 64, 128, 128, 256, 256]


@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_dilate_is_a_box_max_pool(k):
    mask = torch.rand(20, 17, 23, generator=torch.Generator().manual_seed(k)) > 0.97
    pooled = torch.nn.functional.max_pool3d(mask.float()[None, None], 2 * k + 1, 1, k)[0, 0] > 0
    assert torch.equal(dilate(mask, k), pooled)
    assert not dilate(torch.zeros(5, 5, 5, dtype=torch.bool), k).any()


def test_config_checks():
    with pytest.raises(ValidationError, match="below res_start"):
        NerfTrainConfig(res_start=100, res_final=50)
    with pytest.raises(ValidationError, match="rays 0 is below 1"):
        NerfTrainConfig(rays=0)
    with pytest.raises(ValidationError, match="distortion_lambda -0.1 is negative"):
        NerfTrainConfig(distortion_lambda=-0.1)
    if torch.cuda.is_available():
        with pytest.raises(ValidationError, match="backend cpu runs on the CPU"):
            NerfTrainConfig(device="cuda")
        NerfTrainConfig(device="cuda", backend="torch")
    else:
        with pytest.raises(ValidationError, match="CUDA device"):
            NerfTrainConfig(device="cuda", backend="torch")


def test_nerf_learns_and_resume_equals_uninterrupted(views, tmp_path):
    train_views, test_views = views
    cfg = NerfTrainConfig(**FAST)
    bg = torch.ones(3)
    straight = train(train_views, cfg, bg, tmp_path / "a", test_views)
    assert straight.curve[-1]["psnr"] > 20.0 and straight.model.grid.res == 40
    assert 0 < straight.events["occupied_fraction"] < 0.6  # the hull and the density carve the box

    with pytest.raises(Interrupt):
        train(train_views, cfg, bg, tmp_path / "b", test_views, crash_at(100))
    resumed = train(train_views, cfg, bg, tmp_path / "b", test_views)
    assert resumed.resumed_from == 80
    torch.testing.assert_close(resumed.model.grid.values, straight.model.grid.values, atol=1e-5, rtol=1e-4)
    assert abs(resumed.curve[-1]["psnr"] - straight.curve[-1]["psnr"]) < 0.01


def test_torch_backend_learns_like_the_kernels(views, tmp_path):
    train_views, test_views = views
    cfg = NerfTrainConfig(**{**FAST, "steps": 60, "upsample_at": ()})
    fast = train(train_views, cfg, torch.ones(3), tmp_path / "a", test_views)
    ref = train(train_views, NerfTrainConfig(**{**FAST, "steps": 60, "upsample_at": (), "backend": "torch"}),
                torch.ones(3), tmp_path / "b", test_views)
    assert abs(fast.curve[-1]["psnr"] - ref.curve[-1]["psnr"]) < 1.0


def test_total_variation_is_the_same_on_both_backends():
    """A step's TV gradient: the kernels' on the voxels the batch touched equals the torch backend's on the voxels
    with a gradient (DVGO's weights per ray, x res / 128)."""
    g = torch.Generator().manual_seed(4)
    R, C, n_rays = 6, 3, 64
    aabb = torch.tensor([0.0, 0, 0, 1, 1, 1])
    values, points = torch.randn(R**3, C, generator=g), torch.rand(20, 3, generator=g)
    weights = {"tv_density": 1e-2, "tv_features": 1e-3}
    kernels = VoxelGrid(values.clone(), aabb)
    kernels.gather(points).sum().backward()
    _add_tv(kernels, NerfTrainConfig(**weights), n_rays)
    ref = VoxelGrid(values.clone().requires_grad_(True), aabb)
    trilinear_reference(ref.values.reshape(R, R, R, C), points, aabb).sum().backward()
    _add_tv(ref, NerfTrainConfig(backend="torch", **weights), n_rays)
    torch.testing.assert_close(ref.values.grad, kernels.grad)
    assert (kernels.grad.abs().sum(-1) > 0).sum() == kernels.n_touched < R**3


def test_total_variation_smooths_the_grid(views, tmp_path):
    cfg = {**FAST, "steps": 60, "upsample_at": ()}
    plain = train(views[0], NerfTrainConfig(**cfg), torch.ones(3), tmp_path / "a")
    smooth = train(views[0], NerfTrainConfig(**cfg, tv_density=1.0, tv_features=1.0), torch.ones(3), tmp_path / "b")

    def tv(result):
        R = result.model.grid.res
        return float(tv_reference(result.model.grid.values.reshape(R, R, R, -1), torch.ones(1)))

    assert tv(smooth) < 0.8 * tv(plain)


def test_budget_stops_training(views, tmp_path):
    cfg = NerfTrainConfig(**{**FAST, "steps": 10**6, "budget_min": 0.02})
    result = train(views[0], cfg, torch.ones(3), tmp_path)
    assert result.stopped_by == "budget" and result.steps < 10**6


def test_auto_settings_for_photos(views, tmp_path):
    cfg = NerfTrainConfig(**{**FAST, "steps": 2, "rays": "auto"})
    masked = train(views[0], cfg, torch.ones(3), tmp_path / "masked")
    photos = train([dataclasses.replace(v, alpha=None) for v in views[0]], cfg, torch.ones(3), tmp_path / "photos")
    assert (masked.events["rays"], photos.events["rays"]) == (AUTO_RAYS["masked"], AUTO_RAYS["photos"])
    assert AUTO_RAYS["photos"] < AUTO_RAYS["masked"]
    assert "distortion_lambda" not in masked.events  # distortion_lambda auto: on for photos only
    assert photos.events["distortion_lambda"] == AUTO_DISTORTION["photos"] > 0


def test_nerf_pipeline_writes_the_same_metrics_as_gaussians(data, tmp_path):
    from recon3d.dag.pipeline import load_pipeline
    from recon3d.dag.runner import run_pipeline

    _, nodes = load_pipeline("nerf", {"nerf": {**FAST, "steps": 40, "upsample_at": (), "appearance": "affine"},
                                      "render": {"orbit_frames": 3, "video": "png"}}, data)
    result = run_pipeline("nerf", nodes, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model_kind"] == "nerf" and len(metrics["views"]) == 4 and metrics["psnr"] > 15
    assert {"psnr", "ssim", "fps", "train", "protocol"} <= metrics.keys()
    assert (tmp_path / "run" / "renders" / "nerf" / "orbit").is_dir()
    assert result.scene().radiance["nerf"].kind == "nerf"
    report = json.loads((tmp_path / "run" / "reports" / "nerf.json").read_text())
    gains = report["appearance_gain"]
    assert len(gains) == 12 and all(len(g) == 3 for g in gains.values())  # each training photo's gain per channel
    assert 0 < report["counts"]["occupied_fraction"] < 1 and report["counts"]["shells"] == 0


def test_nerf_stage_bad_inputs(data, tmp_path):
    """A test view whose file does not fit its camera fails before training, naming it; a NaN pose in the data
    leaves that image out, reported; no posed images at all is a clear error."""
    from recon3d.errors import DataError, StageError
    from recon3d.io import images as image_io
    from recon3d.stages import nerf
    from recon3d.stages.base import StageContext

    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    name = split_views(scene, 8)[1][0]
    image_io.write_rgb(tmp_path / "small.png", torch.zeros(24, 32, 3, dtype=torch.uint8).numpy())
    images = tuple(im if im.name != name else type(im)(**{**im.__dict__, "path": str(tmp_path / "small.png")})
                   for im in scene.images)
    ctx = StageContext(node_id="nerf", workdir=tmp_path / "w", publish_dir=tmp_path / "out")
    ctx.workdir.mkdir()
    cfg = nerf.NerfConfig(**{**FAST, "steps": 10, "upsample_at": ()})
    with pytest.raises(DataError, match=f"image {name} is 32x24 but its camera"):
        nerf.run(scene.replace(images=images), cfg, ctx)
    dropped = scene.images[1].name
    ok = nerf.run(scene.replace(poses={k: v for k, v in scene.poses.items() if k != dropped}), cfg, ctx)
    assert {"item": dropped, "reason": "not posed: no view to train or test on"} in ctx.dropped
    assert ok.radiance["nerf"].kind == "nerf" and ctx.counts["train_views"] == 11
    with pytest.raises(StageError, match="no posed training images"):
        nerf.run(scene.replace(poses={}), cfg)


def test_photos_train_with_a_points_box_and_an_env_map(data, tmp_path):
    """Views without alpha over a sky colour: the box comes from the points, cells far from them start empty,
    the env map learns the sky, and a saved model renders the same after loading."""

    import numpy as np

    from recon3d.radiance.nerf.model import NerfModel
    from recon3d.radiance.nerf.trainer import points_occupancy, render_view, scene_box
    from recon3d.radiance.views import view_rays
    from recon3d.synthetic.splats import splat_world

    sky = (0.4, 0.6, 0.9)
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    train_names, test_names = split_views(scene, 8)
    photos = [dataclasses.replace(v, alpha=None) for v in load_views(scene, train_names, sky)]
    tests = [dataclasses.replace(v, alpha=None) for v in load_views(scene, test_names, sky)]
    points = splat_world(300, seed=1)["means"].double().numpy()  # what the data was rendered from
    box = scene_box(photos, points)
    assert (box[:3] <= torch.as_tensor(np.percentile(points, 2, axis=0), dtype=torch.float32)).all()
    tight = scene_box(photos, points, 10)  # a tighter box around the middle 80 % of the points on each axis
    side = float((tight[3:] - tight[:3]).max())
    assert side < float((box[3:] - box[:3]).max())
    assert side == pytest.approx(1.1 * float((np.percentile(points, 90, 0) - np.percentile(points, 10, 0)).max()))
    occupancy = points_occupancy(points, box, 32, 0.05)
    assert 0.02 < float(occupancy.float().mean()) < 0.9 and points_occupancy(points, box, 8, 0).all()

    result = train(photos, NerfTrainConfig(**{**FAST, "steps": 240}), torch.ones(3), tmp_path / "run", tests,
                   points=points)
    model = result.model
    assert model.envmap is not None and result.curve[-1]["psnr"] > 20.0
    corners = view_rays(tests[0])[1][[0, tests[0].width - 1]]  # rays that miss the scene see the sky
    start = torch.cat([v.image.reshape(-1, 3) for v in photos]).mean(0)  # the env map's first colour
    with torch.no_grad():
        error = (model.envmap(corners) - torch.tensor(sky)).abs().max()
    assert error < 0.8 * (start - torch.tensor(sky)).abs().max()
    again = NerfModel.load(model.save(tmp_path / "model.safetensors"))
    torch.testing.assert_close(render_view(again, tests[0], torch.ones(3), "cpu")[0],
                               render_view(model, tests[0], torch.ones(3), "cpu")[0])
    assert 0 < model.near < min(float(np.linalg.norm(points - c, axis=1).min()) for c in centers(photos))

    # the same photos in contracted space: the grid holds the box and everything around it, and learns as well
    result = train(photos, NerfTrainConfig(**{**FAST, "steps": 240}, space="contract"), torch.ones(3),
                   tmp_path / "contracted", tests, points=points)
    assert result.model.contraction is not None and result.curve[-1]["psnr"] > 20.0
    torch.testing.assert_close(result.model.grid.aabb, torch.tensor([-2.0, -2, -2, 2, 2, 2]))


def centers(views):
    return [(-v.cam_from_world[:3, :3].T @ v.cam_from_world[:3, 3]).double().numpy() for v in views]


def test_grid_memory_is_checked_before_training():
    from recon3d.radiance.nerf.trainer import grid_memory_mb

    assert grid_memory_mb(160, 11) == pytest.approx(160**3 * (12 * 16 + 9) / 2**20)
    with pytest.raises(ValueError, match="res_final 256 with 11 features needs 3216 MiB of grid, over "
                                         "grid_memory_mb 2048: lower res_final"):
        NerfTrainConfig(res_final=256, grid_memory_mb=2048)


def test_appearance_absorbs_an_exposure_change(views, tmp_path):
    """As the Gaussians' option: every other training view darkened to 0.6, an affine colour per image (applied
    to each ray by its image) fits the training views better, the darkened ones get the lower gains, the mean
    transform stays the identity, the model's own colours score the test views no worse, and a resumed run
    restores the transforms."""

    import numpy as np

    from recon3d.radiance.appearance import AffineColor
    from recon3d.radiance.metrics import psnr
    from recon3d.radiance.nerf.trainer import render_view

    colour = AffineColor(3)
    with torch.no_grad():  # per ray, by each ray's image, as the whole-image transform of that image
        colour.matrix.add_(0.1 * torch.randn(3, 3, 3))
        colour.offset.add_(0.1 * torch.randn(3, 3))
        rgb, index = torch.rand(30, 3), torch.arange(30) % 3
        torch.testing.assert_close(colour.per_ray(rgb, index),
                                   torch.cat([colour(rgb[i:i + 1], int(index[i])) for i in range(30)]))
    train_views, test_views = views
    dark = [dataclasses.replace(v, image=v.image * 0.6) if i % 2 else v for i, v in enumerate(train_views)]
    fit, test = {}, {}
    for appearance in ("none", "affine"):
        cfg = NerfTrainConfig(**{**FAST, "steps": 240}, appearance=appearance, lr_appearance=0.02)
        result = train(dark, cfg, torch.ones(3), tmp_path / appearance)
        with torch.no_grad():
            renders = [render_view(result.model, v, torch.ones(3), "cpu")[0] for v in dark]
            if appearance == "affine":
                renders = [result.appearance(r, i) for i, r in enumerate(renders)]
                gains = [float(result.appearance.transform(i)[0].diagonal().mean()) for i in range(len(dark))]
            fit[appearance] = np.mean([psnr(r.clamp(0, 1), v.image) for r, v in zip(renders, dark, strict=True)])
            test[appearance] = np.mean([psnr(render_view(result.model, v, torch.ones(3), "cpu")[0].clamp(0, 1),
                                             v.image) for v in test_views])
    assert result.appearance is not None and fit["affine"] > fit["none"] + 0.5, fit
    assert test["affine"] > test["none"] - 0.1, test
    assert max(gains[1::2]) < min(gains[::2]), gains
    assert abs(np.mean(gains) - 1) < 1e-5

    with pytest.raises(Interrupt):
        train(dark, cfg, torch.ones(3), tmp_path / "resumed", on_step=crash_at(100))
    resumed = train(dark, cfg, torch.ones(3), tmp_path / "resumed")
    assert resumed.resumed_from == 80
    for name, value in result.appearance.state_dict().items():
        torch.testing.assert_close(resumed.appearance.state_dict()[name], value, atol=1e-5, rtol=1e-4)


def test_exposure_gain_is_learned_per_ray(views, tmp_path):
    """As the Gaussians' option: every other training view one stop darker by its EXIF (0.6 of the colours),
    each ray scaled by its photo's exposure; the gain learned is about log2(1 / 0.6), test views rendered at
    their own exposure score better than without it, and a resumed run restores the gain. One training photo
    whose EXIF records no exposure (an edited copy) is trained at the reference and leaves the model on."""
    import math

    import numpy as np

    from recon3d.radiance.appearance import exposure_scale
    from recon3d.radiance.metrics import psnr
    from recon3d.radiance.nerf.trainer import render_view

    def shot(views):
        return [dataclasses.replace(v, image=v.image * 0.6, exposure=-1.0) if i % 2 else
                dataclasses.replace(v, exposure=0.0) for i, v in enumerate(views)]

    train_views, test_views = (shot(v) for v in views)
    train_views[-1] = dataclasses.replace(train_views[-1], exposure=None)
    scores = {}
    for exposure in ("none", "auto"):
        cfg = NerfTrainConfig(**{**FAST, "steps": 240}, exposure=exposure, lr_exposure=0.02)
        result = train(train_views, cfg, torch.ones(3), tmp_path / exposure)
        meta = {} if result.exposure is None else {"exposure": result.exposure.meta()}
        with torch.no_grad():
            scores[exposure] = np.mean([psnr((render_view(result.model, v, torch.ones(3), "cpu")[0]
                                              * exposure_scale(meta, v.exposure)).clamp(0, 1), v.image)
                                        for v in test_views])
    assert abs(result.exposure.meta()["gain"] - math.log2(1 / 0.6)) < 0.25, result.exposure.meta()
    assert scores["auto"] > scores["none"] + 0.5, scores

    with pytest.raises(Interrupt):
        train(train_views, cfg, torch.ones(3), tmp_path / "resumed", on_step=crash_at(100))
    resumed = train(train_views, cfg, torch.ones(3), tmp_path / "resumed")
    assert resumed.resumed_from is not None
    assert resumed.exposure.meta() == pytest.approx(result.exposure.meta(), abs=1e-4)


def test_nerf_learns_the_background_where_no_env_map_hides_it(data, tmp_path):
    """Opaque views in front of a blue-grey backdrop, `background_model: none`: the colour behind the box moves
    from its start towards the backdrop's and survives a resume; with an env map (photos' default) the rays
    see the map, and the background stays as given."""

    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    backdrop, start = torch.tensor([0.2, 0.45, 0.8]), torch.full((3,), 0.5)
    opaque = [dataclasses.replace(v, alpha=None) for v in load_views(scene, split_views(scene, 8)[0],
                                                                      tuple(backdrop))]
    cfg = NerfTrainConfig(**FAST, background_model="none")
    learned = train(opaque, cfg, start, tmp_path / "a", learn_background=True).background
    assert (learned - backdrop).norm() < 0.5 * (start - backdrop).norm()
    with pytest.raises(Interrupt):
        train(opaque, cfg, start, tmp_path / "b", on_step=crash_at(100), learn_background=True)
    resumed = train(opaque, cfg, start, tmp_path / "b", learn_background=True).background
    torch.testing.assert_close(resumed, learned, atol=1e-5, rtol=0)
    with_map = NerfTrainConfig(**{**FAST, "steps": 20})
    assert torch.equal(train(opaque, with_map, start, tmp_path / "c", learn_background=True).background, start)


def test_depth_term_pulls_the_rendered_depth_to_the_points(data, tmp_path):
    """Photos without alpha, every view observing the points the data was rendered from: with `depth_lambda` the
    rays through the points stop nearer to them than without (the term has a gradient through the kernels)."""

    from recon3d.radiance.nerf.trainer import _point_rays
    from recon3d.synthetic.splats import splat_world

    sky = (0.4, 0.6, 0.9)
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    train_names, _ = split_views(scene, 8)
    photos = [dataclasses.replace(v, alpha=None) for v in load_views(scene, train_names, sky)]
    points = splat_world(300, seed=1)["means"].double().numpy()
    errors = {}
    for weight in (0.0, 0.3):
        result = train(photos, NerfTrainConfig(**FAST, depth_lambda=weight), torch.ones(3), tmp_path / str(weight),
                       points=points, observed=[points] * len(photos))
        model = result.model
        rays = _point_rays(photos, [points] * len(photos), model.grid.aabb, False, model.near)
        with torch.no_grad():
            _, _, depth, _ = model.render(rays.origins, rays.dirs, torch.ones(3))
        errors[weight] = float(((depth - rays.depth).abs() / rays.depth).median())
        assert result.events.get("depth_rays_available", 0) == (len(rays.depth) if weight else 0)
    assert errors[0.3] < 0.8 * errors[0.0], errors
