"""The Gaussian rasterizer: closed-form cases, the C++ kernel against the PyTorch reference, gsplat on CUDA."""

import math

import pytest
import torch

from recon3d.errors import ConfigError
from recon3d.radiance.gaussians.composite import bin_cpu, bin_reference, composite_cpu, composite_reference
from recon3d.radiance.gaussians.project import project, project_cpu, quat_to_rotmat
from recon3d.radiance.gaussians.rasterize import _colors, gsplat_available, rasterize
from recon3d.radiance.sh import eval_sh, rgb_to_sh, sh_to_rgb


def random_splats(n=300, width=45, height=37, seed=0):
    """Screen-space Gaussians: means2d (N, 2), conics (N, 3), opacities, feats (N, 4), depths, extents."""
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([width, height])
    L = torch.randn(n, 2, 2, generator=g) * 3
    cov = L @ L.transpose(1, 2) + 0.5 * torch.eye(2)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    opacities = torch.rand(n, generator=g) * 0.98 + 0.01
    r = torch.sqrt(2 * torch.log(255 * opacities))
    extents = r[:, None] * torch.sqrt(torch.stack([cov[:, 0, 0], cov[:, 1, 1]], -1))
    feats = torch.rand(n, 4, generator=g)
    depths = torch.rand(n, generator=g) * 5
    return means2d, conics, opacities, feats, depths, extents


def random_scene(n=1500, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.5
    quats = torch.randn(n, 4, generator=g)
    log_scales = torch.randn(n, 3, generator=g) * 0.3 - 3
    opacities = torch.rand(n, generator=g)
    sh = torch.randn(n, 16, 3, generator=g) * 0.3
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 3.0
    K = torch.tensor([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    return means, quats, log_scales, opacities, sh, cam_from_world, K


def test_binning_kernel_equals_reference():
    means2d, _, _, _, depths, extents = random_splats()
    o1, i1 = bin_reference(means2d, extents, depths, 45, 37)
    o2, i2 = bin_cpu(means2d, extents, depths, 45, 37)
    assert torch.equal(o1, o2) and torch.equal(i1, i2)
    assert int(o1[-1]) == len(i1) > 300  # most splats touch more than one tile


def test_two_gaussians_composite_closed_form():
    """Two wide splats centred on one pixel: C = a1 c1 + (1 - a1) a2 c2 + (1 - a1)(1 - a2) bg."""
    means2d = torch.tensor([[8.5, 8.5], [8.5, 8.5]])
    conics = torch.tensor([[1e-4, 0, 1e-4]] * 2)
    opacities = torch.tensor([0.6, 0.5])
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    depths = torch.tensor([1.0, 2.0])
    extents = torch.full((2, 2), 100.0)
    bg = torch.tensor([0, 0, 1.0])
    for fn in (composite_reference, composite_cpu):
        img, alpha = fn(means2d, conics, opacities, feats, depths, extents, bg, 16, 16)
        torch.testing.assert_close(img[8, 8], torch.tensor([0.6, 0.4 * 0.5, 0.4 * 0.5]), atol=1e-6, rtol=0)
        torch.testing.assert_close(alpha[8, 8], torch.tensor(1 - 0.4 * 0.5), atol=1e-6, rtol=0)


def test_early_termination_stops_before_transmittance_floor():
    """Opacity 0.95 four times: T = 0.05^k; the fourth would bring T to 6.25e-6 <= 1e-4, so it is skipped."""
    n = 4
    means2d = torch.full((n, 2), 4.5)
    conics = torch.tensor([[1e-6, 0, 1e-6]] * n)
    opacities = torch.full((n,), 0.95)
    feats = torch.eye(n)
    depths = torch.arange(n, dtype=torch.float32)
    extents = torch.full((n, 2), 50.0)
    bg = torch.zeros(4)
    for fn in (composite_reference, composite_cpu):
        img, alpha = fn(means2d, conics, opacities, feats, depths, extents, bg, 8, 8)
        torch.testing.assert_close(img[4, 4], torch.tensor([0.95, 0.0475, 0.002375, 0]), atol=1e-6, rtol=0)
        assert math.isclose(float(alpha[4, 4]), 1 - 0.05**3, abs_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_composite_kernel_matches_reference_forward_and_backward(seed):
    splats = random_splats(seed=seed)
    bg = torch.tensor([1.0, 1.0, 1.0, 0.0])
    results = []
    for fn in (composite_reference, composite_cpu):
        leaves = [t.clone().requires_grad_(True) for t in splats[:4]]
        img, alpha = fn(*leaves, splats[4], splats[5], bg, 45, 37)
        g = torch.Generator().manual_seed(7)
        ((img * torch.randn(img.shape, generator=g)).sum() + (alpha * torch.randn(alpha.shape, generator=g)).sum()
         ).backward()
        results.append((img, alpha, [t.grad for t in leaves]))
    (img_r, a_r, g_r), (img_c, a_c, g_c) = results
    assert (img_r - img_c).abs().max() < 1e-5 and (a_r - a_c).abs().max() < 1e-5
    for gr, gc in zip(g_r, g_c, strict=True):
        assert (gr - gc).abs().max() <= 1e-5 * gr.abs().max() + 1e-6
        assert torch.nn.functional.cosine_similarity(gr.flatten(), gc.flatten(), 0) > 0.9999


def test_projection_of_an_isotropic_gaussian_on_the_axis():
    """Scale s at depth z on the optical axis: mean at the principal point, variance (f s / z)^2 + 0.3."""
    means = torch.tensor([[0.0, 0.0, 0.0]])
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 4.0
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    p = project(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.2), torch.tensor([0.5]),
                cam_from_world, K, 100, 80)
    var = (100 * 0.2 / 4) ** 2 + 0.3
    torch.testing.assert_close(p.means2d, torch.tensor([[50.0, 40.0]]))
    torch.testing.assert_close(p.conics, torch.tensor([[1 / var, 0, 1 / var]]))
    r = math.sqrt(2 * math.log(255 * 0.5))
    torch.testing.assert_close(p.extents, torch.full((1, 2), r * math.sqrt(var)))


def test_projection_culls_behind_faint_and_off_screen():
    means = torch.tensor([[0.0, 0, 0], [0, 0, -10], [0, 0, 0], [100, 0, 0]])
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 4.0
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    p = project(means, torch.tensor([[1.0, 0, 0, 0]] * 4), torch.full((4, 3), 0.01),
                torch.tensor([0.5, 0.5, 1e-3, 0.5]), cam_from_world, K, 100, 80)
    assert p.ids.tolist() == [0]


def test_quaternion_order_is_wxyz():
    half = math.sqrt(0.5)
    R = quat_to_rotmat(torch.tensor([[half, 0, 0, half]]))[0]  # 90 degrees about z
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6, rtol=0)


def test_sh_degree_zero_is_the_dc_colour():
    rgb = torch.tensor([[0.2, 0.5, 0.9]])
    coeffs = torch.zeros(1, 16, 3)
    coeffs[:, 0] = rgb_to_sh(rgb)
    torch.testing.assert_close(sh_to_rgb(3, coeffs, torch.tensor([[0.0, 0, 1]])), rgb)
    with pytest.raises(ValueError, match="coeffs must be"):
        eval_sh(3, torch.zeros(1, 4, 3), torch.zeros(1, 3))


def test_rasterize_cpu_matches_reference_through_projection_and_sh():
    means, quats, log_scales, opacities, sh, cam_from_world, K = random_scene()
    bg = torch.ones(3)
    weights = torch.linspace(0, 1, 64)[None, :, None]
    out = {}
    for backend in ("reference", "cpu"):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, log_scales, opacities, sh)]
        rgb, alpha, depth, meta = rasterize(leaves[0], leaves[1], leaves[2].exp(), leaves[3], leaves[4],
                                            cam_from_world, K, 64, 48, sh_degree=3, background=bg, backend=backend)
        assert rgb.shape == (48, 64, 3) and alpha.shape == depth.shape == (48, 64, 1)
        ((rgb * weights).sum() + 0.3 * alpha.sum() + 0.1 * depth.sum()).backward()
        out[backend] = (rgb, alpha, depth, [t.grad for t in leaves], meta)
    ref, cpu = out["reference"], out["cpu"]
    for a, b in zip(ref[:3], cpu[:3], strict=True):
        assert (a - b).abs().max() < 1e-4
    for ga, gb in zip(ref[3], cpu[3], strict=True):
        assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), 0) > 0.9999
    assert torch.equal(ref[4]["ids"], cpu[4]["ids"])
    assert 0 < len(cpu[4]["ids"]) <= len(means)


@pytest.mark.parametrize("sh_degree", [3, 1, 0, None])
def test_projection_kernel_gradients_match_autograd(sh_degree):
    """project_cpu's hand-written backward against autograd through `project` + SH, parameter by parameter;
    the Gaussians spread past the field of view, so the Jacobian's clamped branch is taken too."""
    g = torch.Generator().manual_seed(4)
    n = 2000
    means = torch.randn(n, 3, generator=g) * torch.tensor([2.0, 2.0, 1.0]) + torch.tensor([0.0, 0.0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.2 + 0.01
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.randn(n, 16, 3, generator=g) * 0.3 if sh_degree is not None else torch.rand(n, 3, generator=g)
    angle = 0.2
    cam_from_world = torch.eye(4)
    cam_from_world[:3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                           [-math.sin(angle), 0, math.cos(angle)]])
    cam_from_world[:3, 3] = torch.tensor([0.1, -0.2, 0.3])
    K = torch.tensor([[300.0, 0, 160], [0, 310, 120], [0, 0, 1]])
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    ref = project(*leaves[:4], cam_from_world, K, 320, 240)
    ref_rgb = _colors(ref, leaves[0], leaves[4], sh_degree, cam_from_world)
    fast, fast_rgb = project_cpu(*leaves, sh_degree, cam_from_world, K, 320, 240)
    assert torch.equal(ref.ids, fast.ids) and len(fast.ids) > n // 4
    in_camera = means[fast.ids] @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    assert ((in_camera[:, 0] / in_camera[:, 2]).abs() > 0.7).any()  # some beyond the clamp (0.69 on the left)
    weights = [torch.randn(t.shape, generator=g) for t in (ref.means2d, ref.conics, ref.depths, ref.opacities, ref_rgb)]

    def loss(p, rgb):
        return sum((w * t).sum() for w, t in zip(weights, (p.means2d, p.conics, p.depths, p.opacities, rgb),
                                                  strict=True))

    expected = torch.autograd.grad(loss(ref, ref_rgb), leaves)
    got = torch.autograd.grad(loss(fast, fast_rgb), leaves)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), expected, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max())), name


def test_a_camera_being_refined_gets_its_gradient():
    """Pose refinement differentiates the camera, which the projection kernel does not: PyTorch projects."""
    means, quats, log_scales, opacities, sh, cam_from_world, K = random_scene(500)
    camera = cam_from_world.clone().requires_grad_(True)
    rgb, _, _, _ = rasterize(means, quats, log_scales.exp(), opacities, sh, camera, K, 64, 48, sh_degree=3)
    rgb.sum().backward()
    assert camera.grad is not None and camera.grad.abs().sum() > 0


def test_rasterize_bad_backend_and_device():
    means, quats, log_scales, opacities, sh, cam_from_world, K = random_scene(10)
    with pytest.raises(ConfigError, match="unknown rasterizer backend"):
        rasterize(means, quats, log_scales.exp(), opacities, sh, cam_from_world, K, 64, 48, sh_degree=3,
                  backend="opengl")
    with pytest.raises(ConfigError, match="CUDA only"):
        rasterize(means, quats, log_scales.exp(), opacities, sh, cam_from_world, K, 64, 48, sh_degree=3,
                  backend="gsplat")


@pytest.mark.skipif(not gsplat_available(), reason="gsplat rasterizes on CUDA only; no CUDA here")
def test_gsplat_matches_reference():
    """Forward max abs difference < 1e-3 and gradient cosine similarity > 0.99 (the issue's bands)."""
    scene = random_scene(3000, seed=3)
    bg = torch.ones(3)
    out = {}
    for backend, device in (("reference", "cpu"), ("gsplat", "cuda")):
        leaves = [t.clone().to(device).requires_grad_(True) for t in scene[:5]]
        rgb, alpha, _, _ = rasterize(leaves[0], leaves[1], leaves[2].exp(), leaves[3], leaves[4],
                                     scene[5].to(device), scene[6].to(device), 64, 48, sh_degree=3,
                                     background=bg.to(device), backend=backend)
        (rgb.sum() + alpha.sum()).backward()
        out[backend] = (rgb.detach().cpu(), alpha.detach().cpu(), [t.grad.cpu() for t in leaves])
    assert (out["reference"][0] - out["gsplat"][0]).abs().max() < 1e-3
    assert (out["reference"][1] - out["gsplat"][1]).abs().max() < 1e-3
    for ga, gb in zip(out["reference"][2], out["gsplat"][2], strict=True):
        assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), 0) > 0.99


def test_radix_depth_order_is_a_stable_argsort():
    from recon3d.radiance.gaussians import kernel

    keys = torch.tensor([3.0, -1.0, 2.0, 2.0, 0.0, -0.0, 1e-30, 5e8, 2.0, -7.5])
    keys = torch.cat([keys, torch.rand(5000, generator=torch.Generator().manual_seed(0)) * 10])
    order = torch.empty(len(keys), dtype=torch.int64)
    kernel.load().depth_order(len(keys), keys.data_ptr(), order.data_ptr())
    expected = torch.argsort(keys, stable=True)
    assert torch.equal(keys[order], keys[expected])
    ties = keys == 2.0
    assert torch.equal(order[torch.isin(order, torch.nonzero(ties).squeeze(1))], torch.nonzero(ties).squeeze(1))


def test_render_path_without_gradients_matches_reference():
    """No gradient wanted: projection and SH run in the C++ kernel (project_cpu); same images and visibility."""
    means, quats, log_scales, opacities, sh, cam_from_world, K = random_scene(3000, seed=5)
    args = (means, quats, log_scales.exp(), opacities, sh, cam_from_world, K, 64, 48)
    ref = rasterize(*args, sh_degree=3, background=torch.ones(3), backend="reference")
    with torch.no_grad():
        fast = rasterize(*args, sh_degree=3, background=torch.ones(3), backend="cpu")
        plain = rasterize(*args[:4], sh[:, 0] * 0.28 + 0.5, *args[5:], background=torch.ones(3), backend="cpu")
    for a, b in zip(ref[:3], fast[:3], strict=True):
        assert (a - b).abs().max() < 1e-4
    assert torch.equal(ref[3]["ids"], fast[3]["ids"])
    plain_ref = rasterize(*args[:4], sh[:, 0] * 0.28 + 0.5, *args[5:], background=torch.ones(3), backend="reference")
    assert (plain[0] - plain_ref[0]).abs().max() < 1e-4
