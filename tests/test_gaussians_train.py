"""Gaussian model files, densification, the trainer (resume, budget) and the gaussians/render/evaluate stages."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from recon3d.errors import DataError, StageError
from recon3d.io.splat_ply import read_splats, write_splats
from recon3d.radiance.gaussians.mcmc import MCMCStrategy, inject_noise, relocation
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.gaussians.strategy import DefaultStrategy
from recon3d.radiance.gaussians.trainer import GaussianTrainConfig, make_optimizers, render_view, train
from recon3d.radiance.metrics import psnr, ssim
from recon3d.radiance.views import load_views, split_views
from recon3d.report.html import write_report
from recon3d.scene import Points, Scene
from recon3d.stages import evaluate, gaussians, ingest, render
from recon3d.stages.base import StageContext
from recon3d.synthetic.splats import splat_world, write_splat_dataset

# init_scale 1: Gaussians as large as the points' spacing fill the views within 60 steps (mcmc, the default,
# starts them at a tenth of it, gsplat's preset for 30k steps)
FAST = {"steps": 60, "init_count": 2000, "eval_every_s": 0, "refine_start": 20, "refine_every": 20,
        "checkpoint_every": 20, "sh_interval": 20, "init_scale": 1.0}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """300 known Gaussians rendered from a 16-view orbit (64x48, RGBA), as a Blender folder: 12 train, 4 test."""
    return write_splat_dataset(tmp_path_factory.mktemp("splat") / "data", 16, 64, 48, 300, 4, seed=1)


@pytest.fixture(scope="module")
def small_scene(small_data):
    return ingest.run(Scene(), ingest.IngestConfig(path=str(small_data)))


class Interrupt(Exception):
    """What `crash_at` raises: training stopped as a kill would stop it."""


def crash_at(step: int):
    """An on_step callback that raises Interrupt after `step`."""
    def on_step(done, total, p, n):
        if done == step:
            raise Interrupt

    return on_step


def random_model(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {"means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g) - 3,
               "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g),
               "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=g)}
    return GaussianModel.from_tensors(tensors, degree)


def test_metrics_known_values():
    a = torch.zeros(8, 8, 3)
    assert math.isclose(psnr(a + 0.1, a), 20.0, rel_tol=1e-6)
    img = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert math.isclose(float(ssim(img, img)), 1.0, rel_tol=1e-6)
    assert float(ssim(img, 1 - img)) < 0.1


def test_colour_correction_removes_an_exposure_change_and_nothing_else():
    from recon3d.radiance.metrics import color_corrected

    g = torch.Generator().manual_seed(2)
    target = torch.rand(24, 32, 3, generator=g) * 0.8 + 0.1
    darker = target * torch.tensor([0.6, 0.65, 0.7]) + 0.02
    assert psnr(color_corrected(darker, target), target) > 60 > psnr(darker, target)
    noisy = (target + 0.05 * torch.randn(24, 32, 3, generator=g)).clamp(0, 1)
    assert abs(psnr(color_corrected(noisy, target), target) - psnr(noisy, target)) < 0.5  # noise stays noise


def test_ssim_equals_torchmetrics():
    from recon3d.labels.torchvision_compat import ensure_torchvision

    ensure_torchvision()  # torchmetrics imports torchvision, whose compiled ops do not load beside this torch
    torchmetrics = pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 50, 3, generator=g)
    y = (x + 0.1 * torch.randn(40, 50, 3, generator=g)).clamp(0, 1)
    ref = torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0)(
        y.permute(2, 0, 1)[None], x.permute(2, 0, 1)[None])
    assert abs(float(ssim(y, x)) - float(ref)) < 1e-5


@pytest.mark.parametrize("size", [(6, 9), (37, 50), (64, 64)])
def test_ssim_kernel_matches_the_reference_in_value_and_gradient(size):
    from recon3d.radiance.ssim_cpu import ssim_cpu

    g = torch.Generator().manual_seed(3)
    target = torch.rand(*size, 3, generator=g)
    pred = (0.6 * target + 0.4 * torch.rand(*size, 3, generator=g)).requires_grad_(True)
    ref = ssim(pred, target)
    (ref_grad,) = torch.autograd.grad(ref, pred)
    fast = ssim_cpu(pred, target)
    (fast_grad,) = torch.autograd.grad(fast, pred)
    assert abs(fast.item() - ref.item()) < 1e-6
    # every pixel's gradient, the border ones (the padding folded back) included
    assert torch.allclose(fast_grad, ref_grad, rtol=1e-4, atol=1e-6 * float(ref_grad.abs().max()))


def test_ssim_kernel_leaves_what_it_cannot_take_to_the_reference():
    from recon3d.radiance.ssim_cpu import ssim_cpu

    small = torch.rand(5, 8, 3)  # the window's 5-pixel reflect padding needs 6 pixels a side: torch refuses
    with pytest.raises(RuntimeError):
        ssim_cpu(small, small)
    x = torch.rand(16, 16, 3, dtype=torch.float64, requires_grad=True)
    assert ssim_cpu(x, x.detach()).grad_fn.name() != "_SSIMCPUBackward"  # float64: the reference
    y = torch.rand(16, 16, 3, requires_grad=True)
    assert ssim_cpu(y.detach(), y).grad_fn.name() != "_SSIMCPUBackward"  # a target with a gradient too
    assert ssim_cpu(y, y.detach()).grad_fn.name() == "_SSIMCPUBackward"


def test_ply_round_trip_is_exact(tmp_path):
    for degree in (0, 1, 3):
        model = random_model(degree=degree)
        raw = {k: v.detach().numpy() for k, v in model.params.items()}
        write_splats(tmp_path / "p.ply", raw)
        back, back_degree = read_splats(tmp_path / "p.ply")
        assert back_degree == degree
        for k, v in raw.items():
            np.testing.assert_array_equal(back[k], v)


def test_ply_layout_is_the_3dgs_one(tmp_path):
    from plyfile import PlyData

    model = random_model(degree=3)
    write_splats(tmp_path / "p.ply", {k: v.detach().numpy() for k, v in model.params.items()})
    names = PlyData.read(str(tmp_path / "p.ply"))["vertex"].data.dtype.names
    assert names == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
                     *[f"f_rest_{i}" for i in range(45)], "opacity", "scale_0", "scale_1", "scale_2",
                     "rot_0", "rot_1", "rot_2", "rot_3")
    # f_rest is channel-major: f_rest_0..14 are the red coefficients 1..15
    data = PlyData.read(str(tmp_path / "p.ply"))["vertex"].data
    np.testing.assert_array_equal(data["f_rest_14"], model.params["shN"][:, 14, 0].detach().numpy())
    np.testing.assert_array_equal(data["f_rest_15"], model.params["shN"][:, 0, 1].detach().numpy())


def test_ply_bad_files(tmp_path):
    from plyfile import PlyData, PlyElement

    bad = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(bad, "vertex")]).write(str(tmp_path / "pts.ply"))
    with pytest.raises(DataError, match="not in the 3DGS layout"):
        read_splats(tmp_path / "pts.ply")
    (tmp_path / "junk.ply").write_text("not a ply")
    with pytest.raises(DataError, match="cannot read Gaussians"):
        read_splats(tmp_path / "junk.ply")


def test_model_safetensors_round_trip(tmp_path):
    model = random_model()
    model.save(tmp_path / "m.safetensors")
    back = GaussianModel.load(tmp_path / "m.safetensors")
    assert back.sh_degree == 3
    for k in model.params:
        assert torch.equal(back.params[k], model.params[k])
    with pytest.raises(DataError, match="no Gaussian model"):
        GaussianModel.load(tmp_path / "missing.safetensors")


def test_from_points_needs_points():
    with pytest.raises(DataError, match="at least 4 initial points"):
        GaussianModel.from_points(np.zeros((0, 3)), np.zeros((0, 3)))


def test_strategy_clones_splits_prunes_and_respects_the_cap():
    model = random_model(n=40)
    with torch.no_grad():
        model.params["scales"][:20] = math.log(0.001)  # small: cloned
        model.params["scales"][20:] = math.log(0.5)  # large: split
        model.params["opacities"][:] = 2.0
        model.params["opacities"][35:] = -10.0  # transparent: pruned
    cfg = GaussianTrainConfig()
    optimizers = make_optimizers(model, cfg, 1.0)
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=10**9, cap_max=10**6)
    state = strategy.initialize_state(len(model))
    state["grad2d"][:] = 1.0  # every Gaussian above the growth threshold, seen once
    state["count"][:] = 1.0
    changed = strategy._grow(model.params, optimizers, state, scene_scale=1.0)
    assert changed == (20, 20)  # 20 clones; 20 splits, each one into two
    assert len(model) == 40 + 20 + 20
    assert int(strategy._prune(model.params, optimizers, state, 1, 1.0)) > 0
    assert all(opt.param_groups[0]["params"][0] is model.params[k] for k, opt in optimizers.items())
    capped = DefaultStrategy(cap_max=45)
    small = random_model(n=40)
    opt2 = make_optimizers(small, cfg, 1.0)
    st2 = capped.initialize_state(40)
    st2["grad2d"][:] = torch.linspace(1, 2, 40)
    st2["count"][:] = 1
    capped._grow(small.params, opt2, st2, 1.0)
    assert len(small) <= 45


def test_mcmc_relocation_keeps_what_the_copies_render():
    """n copies of opacity o' composite to 1 - (1 - o')^n = o; n = 1 changes nothing; n = 2 has the closed form
    s o / (2 o' - o'^2 / sqrt 2); any n equals the paper's double sum written as loops."""
    binoms = MCMCStrategy().initialize_state(0)["binoms"]
    opacity = torch.tensor([0.3, 0.9, 0.05, 0.6, 0.99])
    scale = torch.rand(5, 3) + 0.1
    n = torch.tensor([1, 2, 3, 7, 20])
    new_o, new_s = relocation(opacity, scale, n, binoms)
    torch.testing.assert_close(1 - (1 - new_o) ** n, opacity)
    torch.testing.assert_close((new_o[0], new_s[0]), (opacity[0], scale[0]))
    o2 = new_o[1]
    torch.testing.assert_close(new_s[1], scale[1] * opacity[1] / (2 * o2 - o2**2 / math.sqrt(2)))
    for j in range(5):
        denominator = sum(math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1) * float(new_o[j]) ** (k + 1)
                          for i in range(1, int(n[j]) + 1) for k in range(i))
        torch.testing.assert_close(new_s[j], scale[j] * float(opacity[j]) / denominator)


def test_mcmc_relocates_the_dead_grows_and_explores():
    """The dead (opacity <= min_opacity) take the place of live ones; the count grows 5 % up to the cap; the
    drawn Gaussians' Adam moments are cleared; noise moves the transparent Gaussians, not the opaque."""
    torch.manual_seed(0)
    model = random_model(n=40)
    with torch.no_grad():
        model.params["opacities"][:] = 2.0
        model.params["opacities"][30:] = -10.0  # ten dead
    cfg = GaussianTrainConfig(strategy="mcmc")
    optimizers = make_optimizers(model, cfg, 1.0)
    for p in model.params.values():
        p.grad = torch.ones_like(p)
    for opt in optimizers.values():
        opt.step()  # moments to clear
    strategy = MCMCStrategy(refine_start_iter=0, refine_every=1, cap_max=41)
    state = strategy.initialize_state(len(model))
    alive_means = model.params["means"][:30].detach().clone()
    changed = strategy.step_post_backward(model.params, optimizers, state, 1, {}, 64, 48, 1.0)
    assert changed == {"relocated": 10, "added": 1} and len(model) == 41
    assert (torch.sigmoid(model.params["opacities"]) > strategy.min_opacity).all()
    assert all(any(torch.allclose(m, a, atol=1e-3) for a in alive_means) for m in model.params["means"][30:40])
    moments = optimizers["means"].state[model.params["means"]]["exp_avg"]
    assert (moments[30:] == 0).all() and (moments.abs().sum(-1) == 0).sum() >= 11
    assert all(opt.param_groups[0]["params"][0] is model.params[k] for k, opt in optimizers.items())
    with torch.no_grad():
        model.params["opacities"][:20] = 8.0  # opaque
        model.params["opacities"][20:] = -8.0  # transparent
    before = model.params["means"].detach().clone()
    inject_noise(model.params, 1e3)
    moved = (model.params["means"] - before).norm(dim=-1)
    assert (moved[:20] < 1e-6).all() and (moved[20:] > 0).all()


def test_mcmc_reaches_its_cap_by_cap_at_whatever_it_starts_from():
    """With cap_at, a run at any pace grows from any start to cap_max by that share of training (at the last
    refinement before it), never by less than 5 % a refinement, more than twice, nor past the cap; a run too
    short for that doubles at each refinement; without cap_at, 5 % (gsplat)."""
    for total, start in ((6_000, 500), (6_000, 20_000), (1_000, 500)):  # steps a time budget allows; first count
        strategy = MCMCStrategy(cap_max=100_000, cap_at=0.4, refine_every=100)
        count = start
        for step in range(600, total, 100):  # refinements every 100 steps from step 500
            strategy.progress = step / total
            new = strategy.target(count, step)
            assert min(100_000, int(1.05 * count)) <= new <= min(100_000, 2 * count)
            count = new
            if total == 1_000:
                assert count == 500 * 2 ** (step // 100 - 5)
            else:
                assert count == 100_000 if (step + 100) / total > 0.4 else count < 100_000
    plain = MCMCStrategy(cap_max=100_000)
    assert plain.target(1000, 600) == 1050 and plain.target(99_000, 600) == 100_000
    assert plain.target(200_000, 600) == 100_000  # above the cap: _add adds none


def test_mcmc_caps_its_count_by_the_steps_the_run_will_take():
    """With cap_per_step, the count ends at that many Gaussians per step of the run at its pace (a time budget
    that allows 2,000 steps: 30,000), never above cap_max (a run of 20,000 steps: 150,000)."""
    for total, final in ((2_000, 30_000), (10_000, 150_000), (20_000, 150_000)):
        strategy = MCMCStrategy(cap_max=150_000, cap_at=0.6, cap_per_step=15, refine_every=100)
        count = 7_000
        for step in range(600, int(0.6 * total) + 100, 100):
            strategy.progress = step / total
            assert strategy.cap(step) == min(150_000, 15 * total)
            count = strategy.target(count, step)
        assert count == final
    strategy.progress = 0.0  # before the first step's pace is known: cap_max
    assert strategy.cap(0) == 150_000


def test_mcmc_brings_gsplats_preset_where_not_set(small_scene, tmp_path):
    cfg = GaussianTrainConfig(strategy="mcmc", init_opacity=0.2)
    assert (cfg.opacity_reg, cfg.scale_reg, cfg.init_scale, cfg.init_opacity) == (0.01, 0.01, 0.1, 0.2)
    assert (cfg.cap_max, cfg.cap_per_step, cfg.cap_at) == (150_000, 15.0, 0.6)
    assert GaussianTrainConfig().init_opacity == 0.5  # mcmc is the default
    plain = GaussianTrainConfig(strategy="default")
    assert (plain.opacity_reg, plain.init_opacity, plain.cap_max) == (0.0, 0.1, 150_000)
    views = load_views(small_scene, split_views(small_scene, 8)[0], (1.0, 1.0, 1.0))
    result = train(small_scene, views, GaussianTrainConfig(**FAST, strategy="mcmc"), torch.ones(3), tmp_path)
    assert result.events.get("added", 0) > 0 and "cloned" not in result.events


@pytest.mark.parametrize("strategy", ["mcmc", "default"])
def test_training_improves_and_resume_equals_uninterrupted(small_scene, tmp_path, strategy):
    train_names, test_names = split_views(small_scene, 8)
    views = load_views(small_scene, train_names, (1.0, 1.0, 1.0))
    tests = load_views(small_scene, test_names, (1.0, 1.0, 1.0))
    cfg = GaussianTrainConfig(**FAST, strategy=strategy)
    bg = torch.ones(3)
    straight = train(small_scene, views, cfg, bg, tmp_path / "a", tests)
    assert straight.curve[-1]["psnr"] > 20.0 and straight.events["init_visual_hull"] == 1
    assert straight.steps == 60 and straight.stopped_by == "steps"
    grown = ("added",) if strategy == "mcmc" else ("cloned", "split")
    assert sum(straight.events.get(k, 0) for k in grown) > 0

    (tmp_path / "b").mkdir()
    with pytest.raises(Interrupt):
        train(small_scene, views, cfg, bg, tmp_path / "b", tests, crash_at(50))
    resumed = train(small_scene, views, cfg, bg, tmp_path / "b", tests)
    assert resumed.resumed_from == 40
    for k in straight.model.params:
        torch.testing.assert_close(resumed.model.params[k], straight.model.params[k], atol=1e-6, rtol=1e-5)
    assert abs(resumed.curve[-1]["psnr"] - straight.curve[-1]["psnr"]) < 1e-3


def test_budget_stops_training(small_scene, tmp_path):
    views = load_views(small_scene, split_views(small_scene, 8)[0], (1.0, 1.0, 1.0))
    cfg = GaussianTrainConfig(**{**FAST, "steps": 100_000, "budget_min": 0.02})
    result = train(small_scene, views, cfg, torch.ones(3), tmp_path)
    assert result.stopped_by == "budget" and result.steps < 100_000 and result.train_seconds >= 1.2


def _run_stages(scene, tmp_path, **overrides):
    ctx = StageContext(node_id="gaussians", workdir=tmp_path / "g", publish_dir=tmp_path / "out")
    ctx.workdir.mkdir(parents=True)
    trained = gaussians.run(scene, gaussians.GaussiansConfig(**{**FAST, **overrides}), ctx)
    rctx = StageContext(node_id="render", workdir=tmp_path / "r", publish_dir=tmp_path / "out")
    rctx.workdir.mkdir()
    rendered = render.run(trained, render.RenderConfig(orbit_frames=4, video="png"), rctx)
    ectx = StageContext(node_id="evaluate", workdir=tmp_path / "e", publish_dir=tmp_path / "out")
    ectx.workdir.mkdir()
    return evaluate.run(rendered, evaluate.EvaluateConfig(kind="images"), ectx), ctx


def test_stages_train_render_evaluate(small_scene, tmp_path):
    scene, ctx = _run_stages(small_scene, tmp_path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["psnr"] == scene.metrics["evaluate"]["psnr"] > 20
    assert set(metrics["views"]) == set(split_views(small_scene, 8)[1]) and len(metrics["views"]) == 4
    assert 0 < metrics["ssim"] <= 1 and metrics["fps"] > 0
    assert (tmp_path / "out" / "gaussians" / "point_cloud.ply").is_file()
    assert len(list((tmp_path / "out" / "renders" / "gaussians" / "orbit").glob("*.png"))) == 4
    depth = np.load(next((tmp_path / "out" / "renders" / "gaussians").rglob("*_depth.npy")))
    assert depth.shape == (48, 64) and np.isfinite(depth).all() and depth.max() > 0
    assert not (ctx.resumable / "checkpoint.pt").exists()  # removed once the model is saved


def test_stage_threads_hold_while_it_trains_only(small_scene, tmp_path):
    """`threads` sets torch's count for the node's training (the protocol records it) and gives the count back:
    the nodes after it in the same process run as they would after the node came from the cache."""
    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    ctx = StageContext(node_id="gaussians", workdir=tmp_path / "g", publish_dir=tmp_path / "out")
    ctx.workdir.mkdir(parents=True)
    gaussians.run(small_scene, gaussians.GaussiansConfig(**{**FAST, "steps": 4, "threads": target}), ctx)
    model = json.loads((ctx.workdir / "model.json").read_text())
    assert model["protocol"]["threads"] == target
    assert torch.get_num_threads() == before


def _points(xyz):
    n = len(xyz)
    return Points(np.asarray(xyz, np.float64), np.full((n, 3), 128, np.uint8), np.zeros(n),
                  np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))


def test_stage_initialisations(small_scene, tmp_path):
    """Sparse points are used when there are; an empty point cloud falls back to the visual hull (alpha
    masks), and `init: random` samples the cube all cameras see."""
    truth = splat_world(300, seed=1)["means"].numpy()
    _, ctx = _run_stages(small_scene.replace(points=_points(truth)), tmp_path / "a", steps=10)
    assert ctx.results["events"]["init_points"] == 1
    _, ctx = _run_stages(small_scene.replace(points=_points(np.zeros((0, 3)))), tmp_path / "b", steps=10)
    assert ctx.results["events"]["init_visual_hull"] == 1
    _, ctx = _run_stages(small_scene, tmp_path / "c", steps=10, init="random")
    assert ctx.results["events"]["init_random"] == 1


def test_stage_nan_pose(tmp_path):
    """A NaN pose in the data: ingest keeps the image unposed, the stage trains on the others and says so."""
    data = write_splat_dataset(tmp_path / "data", 8, 32, 24, 100, 4, seed=2)
    meta = json.loads((data / "transforms_train.json").read_text())
    meta["frames"][0]["transform_matrix"][0][0] = float("nan")
    (data / "transforms_train.json").write_text(json.dumps(meta))
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    _, ctx = _run_stages(scene, tmp_path, steps=10)
    assert {"item": "train/r_1.png", "reason": "not posed: no view to train or test on"} in ctx.dropped
    assert ctx.counts["train_views"] == 5


def test_stage_bad_test_view_size_fails_before_training(small_scene, tmp_path):
    from recon3d.io import images as image_io

    name = split_views(small_scene, 8)[1][0]
    path = tmp_path / "small.png"
    image_io.write_rgb(path, np.zeros((24, 32, 3), np.uint8))
    images = tuple(im if im.name != name else type(im)(**{**im.__dict__, "path": str(path)})
                   for im in small_scene.images)
    ctx = StageContext(node_id="gaussians", workdir=tmp_path / "g", publish_dir=tmp_path / "out")
    ctx.workdir.mkdir()
    with pytest.raises(DataError, match=f"image {name} is 32x24 but its camera"):
        gaussians.run(small_scene.replace(images=images), gaussians.GaussiansConfig(**FAST), ctx)
    assert not (ctx.resumable / "checkpoint.pt").exists()


def test_stage_needs_posed_images(small_scene, tmp_path):
    with pytest.raises(StageError, match="no posed training images"):
        gaussians.run(small_scene.replace(poses={}), gaussians.GaussiansConfig(**FAST))
    train_names, test_names = split_views(small_scene, 8)
    two = {name: small_scene.poses[name] for name in (train_names[0], test_names[0])}  # one trains, one tests
    with pytest.raises(StageError, match=r"1 training view \(2 posed image\(s\)") as refused:
        gaussians.run(small_scene.replace(poses=two), gaussians.GaussiansConfig(**FAST))
    assert "a dozen or more photos" in refused.value.fix and "--set gaussians.holdout_every=0" in refused.value.fix
    with pytest.raises(StageError, match="no trained radiance model"):
        render.run(small_scene, render.RenderConfig())
    with pytest.raises(StageError, match="no renders"):
        evaluate.run(small_scene, evaluate.EvaluateConfig(kind="images"))


def test_pipeline_interrupted_in_training_resumes_from_its_checkpoint(small_data, tmp_path):
    from recon3d.dag.pipeline import load_pipeline
    from recon3d.dag.runner import run_pipeline

    sets = {"gaussians": {**FAST, "steps": 60}}
    _, nodes = load_pipeline("gaussians", sets, small_data)

    class Stop(Exception):
        pass

    def stop_at_50(node, done, total, text):
        if node == "gaussians" and done >= 50:
            raise Stop

    with pytest.raises(Stop):
        run_pipeline("gaussians", nodes, tmp_path / "run", on_progress=stop_at_50)
    result = run_pipeline("gaussians", nodes, tmp_path / "run")
    report = json.loads((result.folders["gaussians"] / "report.json").read_text())
    assert report["counts"]["resumed_from_step"] == 40 and report["counts"]["steps"] == 60
    write_report(tmp_path / "run")  # its time row: the training time includes the interrupted run's
    assert "up to step 40 in an interrupted run" in (tmp_path / "run" / "report.html").read_text()
    fresh = run_pipeline("gaussians", nodes, tmp_path / "fresh")
    assert "resumed_from_step" not in json.loads((fresh.folders["gaussians"] / "report.json").read_text())["counts"]
    a = json.loads((tmp_path / "run" / "metrics.json").read_text())
    b = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert abs(a["psnr"] - b["psnr"]) < 0.01
    assert fresh.executed == ["ingest", "gaussians", "render", "evaluate"]


def test_config_device_must_fit_the_rasterizer():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="gsplat runs on CUDA only"):
        GaussianTrainConfig(rasterizer="gsplat")
    with pytest.raises(ValidationError, match="is not a torch device"):
        GaussianTrainConfig(device="gpu")
    if torch.cuda.is_available():
        with pytest.raises(ValidationError, match="runs on the CPU"):
            GaussianTrainConfig(device="cuda")
        GaussianTrainConfig(rasterizer="gsplat", device="cuda")  # valid where CUDA is
    else:  # refused before anything runs, not a traceback from torch half-way through a pipeline
        with pytest.raises(ValidationError, match=r"sees 0 CUDA device\(s\).*set device=cpu"):
            GaussianTrainConfig(rasterizer="gsplat", device="cuda")


def test_ignored_pixels_teach_nothing(small_scene, tmp_path):
    """Views whose every pixel is ignored (mask_classes) leave the model exactly as initialised; ignoring half
    of each view changes it, and only through the other half."""
    from recon3d.radiance.gaussians.trainer import initial_model
    from recon3d.radiance.normalize import WorldFrame

    train_names, _ = split_views(small_scene, 8)
    views = load_views(small_scene, train_names[:3], (1.0, 1.0, 1.0))
    # not mcmc: its opacity / scale regularisers and position noise move a model without any pixel
    cfg = GaussianTrainConfig(steps=4, refine_start=1000, eval_every_s=0, strategy="default")
    frame = WorldFrame.from_views(views)  # training's frame; the trained model comes back in the scene's
    start, _ = initial_model(small_scene, [frame.view(v) for v in views], cfg, frame)
    every = [dataclasses.replace(v, ignore=torch.ones(v.height, v.width, dtype=torch.bool)) for v in views]
    trained = train(small_scene, every, cfg, torch.ones(3), tmp_path / "all").model
    for key, value in frame.gaussians_to_world(dict(start.params.items())).items():
        assert torch.equal(trained.params[key], value), key
    half = [dataclasses.replace(v, ignore=torch.arange(v.width).expand(v.height, -1) < v.width // 2) for v in views]
    moved = train(small_scene, half, cfg, torch.ones(3), tmp_path / "half").model
    assert not torch.equal(moved.params["means"], start.params["means"])


def test_learned_background_takes_the_colour_the_model_leaves_uncovered(small_scene, tmp_path):
    """Opaque views of the Gaussians in front of a blue-grey backdrop: the learned background moves from its
    start to the backdrop's colour and is checkpointed with the rest (a resumed run ends where a straight one
    does); a given background stays as it was."""
    backdrop = torch.tensor([0.2, 0.45, 0.8])
    train_names, _ = split_views(small_scene, 8)
    views = [dataclasses.replace(v, alpha=None) for v in load_views(small_scene, train_names, tuple(backdrop))]
    cfg = GaussianTrainConfig(**FAST)
    start = torch.full((3,), 0.5)
    learned = train(small_scene, views, cfg, start, tmp_path / "a", learn_background=True).background
    assert (learned - backdrop).norm() < 0.5 * (start - backdrop).norm() and torch.equal(start, torch.full((3,), 0.5))
    with pytest.raises(Interrupt):
        train(small_scene, views, cfg, start, tmp_path / "b", on_step=crash_at(50), learn_background=True)
    resumed = train(small_scene, views, cfg, start, tmp_path / "b", learn_background=True).background
    torch.testing.assert_close(resumed, learned, atol=1e-5, rtol=0)
    assert torch.equal(train(small_scene, views, cfg, start, tmp_path / "c").background, start)


def test_env_map_learns_a_sky_and_is_saved_with_the_model(small_scene, tmp_path):
    """Opaque views of the Gaussians against a sky that is blue above and pale below: with `background_model:
    envmap` the rays that miss the Gaussians see it, the env map learns both halves (one colour could not), it is
    checkpointed (a resumed run ends where a straight one does), the one background colour is not learned beside
    it, and a saved model renders the same after loading, through the renderer the render stage uses."""
    from recon3d.radiance.envmap import behind
    from recon3d.radiance.gaussians.model import GaussianModel
    from recon3d.radiance.renderers import GaussianRenderer
    from recon3d.radiance.views import view_rays

    scene = small_scene.replace(points=_points(splat_world(300, seed=1)["means"].numpy()))  # Gaussians start there
    train_names, _ = split_views(scene, 8)
    loaded = load_views(scene, train_names, (1.0, 1.0, 1.0))
    up = [view_rays(v)[1][:, 2].reshape(v.height, v.width, 1) for v in loaded]  # the world's z of each ray
    horizon = float(torch.cat([u.flatten() for u in up]).median())
    blue, pale = torch.tensor([0.2, 0.4, 0.9]), torch.tensor([0.9, 0.8, 0.6])
    views, skies = [], []
    for v, u in zip(loaded, up, strict=True):
        sky = torch.where(u > horizon, blue, pale)
        alpha = v.alpha[..., None]  # the file's alpha: the Gaussians' coverage
        views.append(dataclasses.replace(v, image=v.image - (1 - alpha) + (1 - alpha) * sky, alpha=None))
        skies.append((sky, alpha[..., 0] < 0.05))
    cfg = GaussianTrainConfig(**{**FAST, "steps": 150, "background_model": "envmap", "lr_envmap": 0.1})
    result = train(scene, views, cfg, torch.full((3,), 0.5), tmp_path / "a", learn_background=True)
    model = result.model
    assert model.envmap is not None and torch.equal(result.background, torch.full((3,), 0.5))
    start = torch.cat([v.image.reshape(-1, 3) for v in views]).mean(0)  # the env map's first colour
    with torch.no_grad():
        for colour in (blue, pale):  # where the sky shows, each half is learned: one colour could not be both
            seen = torch.cat([behind(model.envmap, v)[bare & (sky == colour).all(-1)]
                              for v, (sky, bare) in zip(views, skies, strict=True)])
            assert len(seen) > 100
            assert (seen - colour).abs().mean() < 0.5 * (start - colour).abs().mean()
    with pytest.raises(Interrupt):
        train(scene, views, cfg, torch.full((3,), 0.5), tmp_path / "b", on_step=crash_at(50), learn_background=True)
    resumed = train(scene, views, cfg, torch.full((3,), 0.5), tmp_path / "b", learn_background=True).model
    torch.testing.assert_close(resumed.envmap.texture, model.envmap.texture, atol=1e-5, rtol=0)
    again = GaussianModel.load(model.save(tmp_path / "model.safetensors"))
    renderer = GaussianRenderer(again, {"background": "learned", "background_rgb": [1.0, 0.0, 0.0]}, "cpu")
    rgb, alpha, _ = renderer.render(views[0])
    assert float(alpha.min()) < 0.5  # some pixels see the sky, not the red the meta names
    torch.testing.assert_close(rgb, (render_view(model, views[0], torch.ones(3), "cpu")[0]).clamp(0, 1).detach())
    torch.testing.assert_close(behind(again.envmap, views[0]), behind(model.envmap, views[0]).detach())


def test_opaque_photos_train_in_front_of_a_learned_colour(small_data, tmp_path):
    """`background: auto` on opaque photos learns the colour behind the model and saves it in model.json; the
    renders, their scores and the protocol use it; RGBA data keeps white (test_stages_train_render_evaluate)."""
    from recon3d.io.images import read_rgba, write_rgb

    data = tmp_path / "opaque"
    shutil.copytree(small_data, data)
    backdrop = np.array([50, 115, 205])
    for png in data.rglob("*.png"):  # the same Gaussians, photographed in front of a blue-grey wall
        rgba = read_rgba(png).astype(np.float64)
        alpha = rgba[..., 3:] / 255
        write_rgb(png, np.round(rgba[..., :3] * alpha + backdrop * (1 - alpha)).astype(np.uint8))
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    scored, ctx = _run_stages(scene, tmp_path / "learned", lr_background=0.05)  # 60 steps: a faster step
    meta = json.loads((ctx.workdir / "model.json").read_text())
    assert meta["background"] == "learned"
    np.testing.assert_allclose(meta["background_rgb"], backdrop / 255, atol=0.1)
    assert scored.metrics["render"]["background_rgb"] == tuple(meta["background_rgb"])
    learned = json.loads((tmp_path / "learned" / "out" / "metrics.json").read_text())
    assert learned["protocol"]["background"] == "learned"
    _run_stages(scene, tmp_path / "white", background="white")
    white = json.loads((tmp_path / "white" / "out" / "metrics.json").read_text())
    assert learned["psnr"] > white["psnr"]  # what the Gaussians leave uncovered shows the wall, not white


def test_training_frame_renders_what_the_world_frame_renders(small_scene):
    """The normalised frame (cameras around the origin, spread 1) moves and scales world and cameras together:
    every render is the same, and a model goes back to the world exactly enough."""

    from recon3d.radiance.normalize import WorldFrame

    views = load_views(small_scene, split_views(small_scene, 8)[0][:3], (1.0, 1.0, 1.0))
    frame = WorldFrame.from_views(views)
    moved = [frame.view(v) for v in views]
    centers = torch.stack([-v.cam_from_world[:3, :3].T @ v.cam_from_world[:3, 3] for v in moved]).double()
    assert centers.mean(0).norm() < 1e-5 and abs(float(centers.norm(dim=1).max()) - 1) < 1e-5
    world = random_model(200, seed=3)
    with torch.no_grad():
        world.params["means"].mul_(0.5)
        world.params["scales"].sub_(1)
        normed = dict(world.params.items())
        normed["means"] = torch.as_tensor(frame.points(world.means.detach().numpy()), dtype=torch.float32)
        normed["scales"] = world.params["scales"] + math.log(frame.scale)
        back = frame.gaussians_to_world(normed)
    torch.testing.assert_close(back["means"], world.params["means"], atol=1e-5, rtol=0)
    normed_model = GaussianModel.from_tensors(normed, 3)
    for v, m in zip(views, moved, strict=True):
        with torch.no_grad():
            a = render_view(world, v, torch.ones(3), "cpu")[0]
            b = render_view(normed_model, m, torch.ones(3), "cpu")[0]
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


def test_sky_points_lie_on_the_seen_part_of_the_sphere(small_scene):
    from recon3d.radiance.gaussians.init import sky_points
    from recon3d.radiance.normalize import WorldFrame

    views = load_views(small_scene, split_views(small_scene, 8)[0], (1.0, 1.0, 1.0))
    frame = WorldFrame.from_views(views)
    views = [frame.view(v) for v in views]
    xyz, rgb = sky_points(views, 2000, 10.0)
    assert 1500 < len(xyz) < 2600  # about the number asked for, all where some view looks
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 10.0, rtol=1e-9)
    assert rgb.shape == xyz.shape and rgb.min() >= 0 and rgb.max() <= 1
    for point in xyz[:: len(xyz) // 20]:
        seen = False
        for v in views:
            cam = v.cam_from_world[:3, :3].double().numpy() @ point + v.cam_from_world[:3, 3].double().numpy()
            u, w, _ = v.K.double().numpy() @ (cam / cam[2])
            seen |= cam[2] > 0 and 0 <= u < v.width and 0 <= w < v.height
        assert seen


def test_sky_points_only_for_photos_without_alpha(small_scene, tmp_path):
    """RGBA data (a known background) gets no sky; with alpha dropped, the sky joins the initial points."""
    from recon3d.radiance.gaussians.trainer import initial_model
    from recon3d.radiance.normalize import WorldFrame

    views = load_views(small_scene, split_views(small_scene, 8)[0][:4], (1.0, 1.0, 1.0))
    frame = WorldFrame.from_views(views)
    views = [frame.view(v) for v in views]
    cfg = GaussianTrainConfig(init="random", init_count=500, sky_points=300)
    assert initial_model(small_scene, views, cfg, frame)[1] == "random"
    opaque = [dataclasses.replace(v, alpha=None) for v in views]
    model, how = initial_model(small_scene, opaque, cfg, frame)
    assert how == "random+sky" and 700 < len(model) < 900


def test_appearance_absorbs_an_exposure_change(small_scene, tmp_path):
    """Every other training view darkened to 0.6: an affine colour per image fits the training views better, the
    darkened ones get the lower gains, and the model's own colours (what test views are scored with) are no
    worse for it."""
    from recon3d.radiance.appearance import AffineColor

    assert torch.equal(AffineColor(2)(torch.full((2, 2, 3), 0.3), 1), torch.full((2, 2, 3), 0.3))
    train_names, test_names = split_views(small_scene, 4)
    views = load_views(small_scene, train_names, (0.0, 0.0, 0.0))
    tests = load_views(small_scene, test_names, (0.0, 0.0, 0.0))
    dark = [dataclasses.replace(v, image=v.image * 0.6) if i % 2 else v for i, v in enumerate(views)]
    fit, test = {}, {}
    for appearance in ("none", "affine"):
        cfg = GaussianTrainConfig(**{**FAST, "steps": 300}, appearance=appearance, lr_appearance=0.02)
        result = train(small_scene, dark, cfg, torch.zeros(3), tmp_path / appearance)
        with torch.no_grad():
            renders = [render_view_of(result.model, v) for v in dark]
            if result.appearance is not None:
                renders = [result.appearance(r, i).clamp(0, 1) for i, r in enumerate(renders)]
                gains = [float(result.appearance.transform(i)[0].diagonal().mean()) for i in range(len(dark))]
            fit[appearance] = np.mean([psnr(r, v.image) for r, v in zip(renders, dark, strict=True)])
            test[appearance] = np.mean([psnr(render_view_of(result.model, v), v.image) for v in tests])
    assert fit["affine"] > fit["none"] + 0.5, fit
    assert test["affine"] > test["none"] - 0.1, test
    assert max(gains[1::2]) < min(gains[::2]), gains
    assert abs(np.mean(gains) - 1) < 1e-5  # the mean transform is the identity: the model's colours can't drift


def render_view_of(model, view):


    return render_view(model, view, torch.zeros(3), "cpu")[0].clamp(0, 1)


def test_pose_refinement_recovers_a_turned_camera(small_scene):
    """The photometric gradient reaches the pose: against the true Gaussians the data was rendered from, one
    view turned by 2 degrees about a world axis (2.7 px at its focal length) is turned back by its pose
    correction alone, to within 0.2 degrees; one motion of the whole world is no correction at all."""
    from recon3d.radiance.gaussians.rasterize import rasterize
    from recon3d.radiance.pose_refine import PoseCorrection
    from recon3d.stages.gaussians import pose_change
    from recon3d.synthetic.splats import splat_world

    same = PoseCorrection(3)
    with torch.no_grad():
        same.twist[:] = torch.tensor([0.1, -0.2, 0.3, 1.0, 2.0, 3.0])
        same.recentre()
    torch.testing.assert_close(same(torch.eye(4), 1), torch.eye(4))
    world = splat_world(300, seed=1)  # small_data's Gaussians
    train_names, _ = split_views(small_scene, 4)
    view = load_views(small_scene, train_names, (0.0, 0.0, 0.0))[2]
    turn = torch.eye(4)
    c, s = math.cos(math.radians(2)), math.sin(math.radians(2))
    turn[:2, :2] = torch.tensor([[c, -s], [s, c]])
    turned = view.cam_from_world @ turn
    poses = PoseCorrection(1)
    opt = torch.optim.Adam(poses.parameters(), lr=2e-3)
    for _ in range(150):
        rgb = rasterize(world["means"], world["quats"], world["scales"], world["opacities"], world["colors"],
                        poses(turned, 0), view.K, view.width, view.height, backend="reference")[0]
        loss = (rgb - view.image).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        refined = poses(turned, 0).double()
    assert pose_change(view.cam_from_world.double(), turned.double())[0] == pytest.approx(2.0, abs=1e-3)
    assert pose_change(view.cam_from_world.double(), refined)[0] < 0.2


def test_pose_refinement_trains_and_resumes(small_scene, tmp_path):
    """With pose_refine the trainer returns each training view's refined pose in the world frame (unchanged
    until pose_refine_start), and a run interrupted after it resumes to the same poses."""
    train_names, _ = split_views(small_scene, 4)
    views = load_views(small_scene, train_names, (0.0, 0.0, 0.0))
    given = np.stack([v.cam_from_world.double().numpy() for v in views])
    late = train(small_scene, views, GaussianTrainConfig(**FAST, pose_refine=True, pose_refine_start=60),
                 torch.zeros(3), tmp_path / "late")
    np.testing.assert_allclose(late.poses.numpy(), given, atol=1e-5)  # frame round trip only
    cfg = GaussianTrainConfig(**FAST, pose_refine=True, pose_refine_start=20)
    result = train(small_scene, views, cfg, torch.zeros(3), tmp_path / "a")
    assert result.poses.shape == (len(views), 4, 4)
    assert 1e-5 < float(np.abs(result.poses.numpy() - given).max()) < 0.1

    with pytest.raises(Interrupt):
        train(small_scene, views, cfg, torch.zeros(3), tmp_path / "b", (), crash_at(50))
    resumed = train(small_scene, views, cfg, torch.zeros(3), tmp_path / "b")
    assert resumed.resumed_from == 40
    torch.testing.assert_close(resumed.poses, result.poses, atol=1e-6, rtol=1e-5)


def test_coarser_view_keeps_the_projection_and_the_pixels(small_scene):
    """A view 4x smaller (64x48 -> 16x12) sees a point where the full view does, scaled by the sizes (COLMAP's
    corner-0 pixels), and its pixels are block means of the full image; an ignored pixel stays ignored."""
    from recon3d.radiance.views import coarser_view

    view = load_views(small_scene, split_views(small_scene, 8)[0][:1], (1.0, 1.0, 1.0))[0]
    ignore = torch.zeros(view.height, view.width, dtype=torch.bool)
    ignore[5, 7] = True
    view = dataclasses.replace(view, ignore=ignore)
    small = coarser_view(view, 4)
    assert (small.width, small.height) == (16, 12) and small.image.shape == (12, 16, 3)
    point = torch.tensor([0.1, -0.2, 0.05, 1.0])

    def pixel(v):
        cam = (v.cam_from_world @ point)[:3].double()
        uvw = v.K.double() @ cam
        return uvw[:2] / uvw[2]

    torch.testing.assert_close(pixel(small), pixel(view) / 4, atol=1e-5, rtol=0)
    blocks = view.image.reshape(12, 4, 16, 4, 3).mean(dim=(1, 3))
    torch.testing.assert_close(small.image, blocks, atol=1e-6, rtol=0)
    assert small.ignore[1, 1] and int(small.ignore.sum()) == 1
    assert coarser_view(view, 1) is view


def test_coarse_to_fine_schedule_trains_through_every_resolution(small_scene, tmp_path):
    from recon3d.radiance.gaussians.trainer import downscale_at

    cfg = GaussianTrainConfig(**{**FAST, "num_downscales": 2, "resolution_schedule": 0.25})
    assert [downscale_at(p, cfg) for p in (0.0, 0.24, 0.25, 0.49, 0.5, 1.0)] == [4, 4, 2, 2, 1, 1]
    views = load_views(small_scene, split_views(small_scene, 8)[0], (1.0, 1.0, 1.0))
    tests = load_views(small_scene, split_views(small_scene, 8)[1], (1.0, 1.0, 1.0))
    result = train(small_scene, views, cfg, torch.ones(3), tmp_path, tests)
    assert result.steps == 60 and result.curve[-1]["psnr"] > 20.0


def test_scale_regularisation_pulls_needles_round():
    """splatfacto's max_gauss_ratio term: nothing for Gaussians within the ratio; for a needle, a gradient that
    shortens its long axis and widens its short one."""
    from recon3d.radiance.gaussians.trainer import scale_ratio_loss

    round_ = torch.tensor([[1.0, 1.5, 2.0]])
    assert scale_ratio_loss(round_, 10.0).item() == 0.0
    needle = torch.tensor([[0.01, 0.5, 1.0]], requires_grad=True)
    loss = scale_ratio_loss(needle, 10.0)
    assert abs(loss.item() - 0.1 * (100 - 10)) < 1e-3
    loss.backward()
    assert needle.grad[0, 2] > 0 and needle.grad[0, 0] < 0 and needle.grad[0, 1] == 0


def test_exposure_gain_is_learned_from_the_photos_exif(small_scene, tmp_path):
    """Training views taken at two exposures one stop apart, the darker at 0.6 of the brighter's colours
    (a gain of log2(1 / 0.6) = 0.74 per stop): `exposure: auto` learns that gain, and test views rendered at
    their own recorded exposure score better than the model's own colours can; without exposures (or with
    `exposure: none`) nothing is learned. A resumed run restores the gain."""
    from recon3d.radiance.appearance import AppearanceConfig, ExposureGain, exposure_model, exposure_off, exposure_scale

    gain = ExposureGain(reference=1.5, gain=0.5)
    with torch.no_grad():
        assert float(gain.scale(1.5)) == 1.0 and float(gain.scale(2.5)) == pytest.approx(2**0.5)
    assert exposure_scale({"exposure": gain.meta()}, 0.5) == pytest.approx(2**-0.5)
    assert exposure_scale({"exposure": gain.meta()}, None) == 1.0 and exposure_scale({}, 3.0) == 1.0
    assert exposure_model(AppearanceConfig(), [1.0, None]) is None  # one photo records one: nothing to learn
    assert exposure_model(AppearanceConfig(), [0.0, 2.0, None]).reference == 1.0  # the silent photo at the mean
    assert exposure_model(AppearanceConfig(), [0.0, 2.0, None, None]).reference == 1.0  # half of them record one
    assert exposure_model(AppearanceConfig(), [0.0, 2.0, None, None, None]) is None  # fewer than half
    assert exposure_off(AppearanceConfig(), [0.0, 2.0, None, None, None]) == (
        "off: 2 of 5 training photo(s) record an EXIF exposure, at least half are needed")
    assert exposure_off(AppearanceConfig(), [1.0, 1.0]).startswith("off: the 2 training photos' EXIF exposures")
    assert exposure_off(AppearanceConfig(), [0.0, 2.0, None]) is None
    assert exposure_model(AppearanceConfig(), [1.0, 1.0]) is None
    assert exposure_model(AppearanceConfig(exposure="none"), [0.0, 1.0]) is None
    assert exposure_model(AppearanceConfig(), [0.0, 1.0, 2.0]).reference == 1.0

    train_names, test_names = split_views(small_scene, 4)

    def shot(views):  # every other view one stop darker, as its EXIF says
        return [dataclasses.replace(v, image=v.image * 0.6, exposure=-1.0) if i % 2 else
                dataclasses.replace(v, exposure=0.0) for i, v in enumerate(views)]

    views = shot(load_views(small_scene, train_names, (0.0, 0.0, 0.0)))
    tests = shot(load_views(small_scene, test_names, (0.0, 0.0, 0.0)))
    scores = {}
    for exposure in ("none", "auto"):
        cfg = GaussianTrainConfig(**{**FAST, "steps": 300}, exposure=exposure)
        result = train(small_scene, views, cfg, torch.zeros(3), tmp_path / exposure)
        meta = {} if result.exposure is None else {"exposure": result.exposure.meta()}
        scores[exposure] = np.mean([psnr((render_view_of(result.model, v) * exposure_scale(meta, v.exposure))
                                         .clamp(0, 1), v.image) for v in tests])
    assert result.exposure.reference == -0.5
    assert abs(result.exposure.meta()["gain"] - math.log2(1 / 0.6)) < 0.2, result.exposure.meta()
    assert scores["auto"] > scores["none"] + 1.0, scores

    with pytest.raises(Interrupt):
        train(small_scene, views, cfg, torch.zeros(3), tmp_path / "resumed", on_step=crash_at(150))
    resumed = train(small_scene, views, cfg, torch.zeros(3), tmp_path / "resumed")
    assert resumed.resumed_from is not None
    assert resumed.exposure.meta() == pytest.approx(result.exposure.meta(), abs=1e-4)
