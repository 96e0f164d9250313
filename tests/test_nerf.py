"""The voxel-grid NeRF: volume rendering against a closed form, the C++ kernels against the PyTorch
references, rays in the conventions, model files."""

import math

import numpy as np
import pytest
import torch

from recon3d.errors import DataError
from recon3d.radiance.nerf.field import (
    VoxelGrid,
    distortion,
    render_rays,
    sample_weights,
    trilinear_reference,
    tv_reference,
    volume_render,
)
from recon3d.radiance.nerf.model import NerfModel, march_reference
from recon3d.radiance.views import View, view_rays


def test_volume_render_closed_form():
    """A ray through n equal samples: T_final = exp(-n sigma dt), colour = (1 - T_final) c + T_final bg."""
    n, sigma, dt = 10, 3.0, 0.05
    s = torch.full((n,), sigma)
    rgb = torch.tensor([[0.2, 0.4, 0.6]]).repeat(n, 1)
    t = torch.arange(n) * dt
    bg = torch.ones(3)
    ray_of = torch.zeros(n, dtype=torch.int64)
    color, opacity, depth = volume_render(s, rgb, torch.full((n,), dt), t, ray_of, 1, bg)
    T_final = math.exp(-n * sigma * dt)
    torch.testing.assert_close(color[0], (1 - T_final) * rgb[0] + T_final * bg)
    torch.testing.assert_close(opacity[0], torch.tensor(1 - T_final))
    expected_depth = sum(math.exp(-i * sigma * dt) * (1 - math.exp(-sigma * dt)) * i * dt for i in range(n))
    assert math.isclose(float(depth[0]), expected_depth, rel_tol=1e-5)
    offsets = torch.tensor([0, n])
    c2, o2, d2 = render_rays(s, rgb, torch.full((n,), dt), t, offsets, bg)
    torch.testing.assert_close(c2, color)
    torch.testing.assert_close(o2, opacity)
    torch.testing.assert_close(d2, depth)


def test_distortion_matches_the_double_sum():
    """The linear-time distortion loss equals mip-NeRF 360's double sum, ray by ray, and is smaller for the same
    weight in one interval than spread along the ray."""
    g = torch.Generator().manual_seed(5)
    counts = torch.tensor([3, 0, 12, 1])
    ray_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
    S = int(counts.sum())
    sigma, dt = torch.rand(S, generator=g) * 5, torch.rand(S, generator=g) * 0.2
    ds = torch.rand(S, generator=g) * 0.1
    s = torch.cat([torch.sort(torch.rand(int(c), generator=g))[0] for c in counts])
    got = distortion(sample_weights(sigma, dt, ray_of, len(counts)), s, ds, ray_of, len(counts))
    w = volume_render(sigma, torch.eye(3)[[0] * S], dt, s, ray_of, len(counts), torch.zeros(3))[0][:, 0]
    for r in range(len(counts)):
        on = ray_of == r
        tau = (sigma * dt)[on]
        wr = torch.exp(-(torch.cumsum(tau, 0) - tau)) * (1 - torch.exp(-tau))
        sr = s[on]
        want = (wr[:, None] * wr[None] * (sr[:, None] - sr[None]).abs()).sum() + (wr**2 * ds[on]).sum() / 3
        torch.testing.assert_close(got[r], want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(wr.sum(), w[r], atol=1e-6, rtol=1e-5)
    one = torch.tensor([50.0, 0, 0, 0])
    spread = torch.full((4,), math.log(2) / 0.1)  # alpha 0.5 at each: opacity 0.94 along the ray
    ray = torch.zeros(4, dtype=torch.int64)
    s4, d4 = torch.tensor([0.1, 0.4, 0.7, 0.9]), torch.full((4,), 0.1)
    assert distortion(sample_weights(one, d4, ray, 1), s4, d4, ray, 1) < \
        0.5 * distortion(sample_weights(spread, d4, ray, 1), s4, d4, ray, 1)


def test_render_rays_kernel_gradients_match_reference():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([0, 5, 17, 1, 30])
    S = int(counts.sum())
    ray_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    sigma0, rgb0 = torch.rand(S, generator=g) * 20, torch.rand(S, 3, generator=g)
    dt, t = torch.rand(S, generator=g) * 0.05 + 0.01, torch.rand(S, generator=g)
    bg = torch.tensor([1.0, 0.5, 0.0])
    gc, go = torch.randn(len(counts), 3, generator=g), torch.randn(len(counts), generator=g)
    gd = torch.randn(len(counts), generator=g)
    grads = []
    for fn in ("reference", "kernel"):
        sigma, rgb = sigma0.clone().requires_grad_(True), rgb0.clone().requires_grad_(True)
        if fn == "reference":
            color, opacity, depth = volume_render(sigma, rgb, dt, t, ray_of, len(counts), bg)
        else:
            color, opacity, depth = render_rays(sigma, rgb, dt, t, offsets, bg)
        ((color * gc).sum() + (opacity * go).sum() + (depth * gd).sum()).backward()
        grads.append((color.detach(), sigma.grad, rgb.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gather_and_scatter_match_trilinear_reference():
    g = torch.Generator().manual_seed(1)
    R, C = 9, 5
    aabb = torch.tensor([-1.0, -2.0, -0.5, 1.0, 2.0, 1.5])
    values = torch.randn(R**3, C, generator=g)
    points = torch.rand(400, 3, generator=g) * (aabb[3:] - aabb[:3]) * 1.2 + aabb[:3] - 0.1 * (aabb[3:] - aabb[:3])
    grid = VoxelGrid(values.clone(), aabb)
    out = grid.gather(points)
    ref_values = values.clone().requires_grad_(True)
    ref = trilinear_reference(ref_values.reshape(R, R, R, C), points, aabb)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weights = torch.randn(400, C, generator=g)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(grid.grad, ref_values.grad, atol=1e-5, rtol=1e-5)
    touched = set(grid.touched_list[:grid.n_touched].tolist())
    assert touched == set(torch.nonzero(ref_values.grad.abs().sum(-1)).squeeze(1).tolist())


def test_total_variation_kernel_matches_reference_on_touched_voxels():
    """The C++ TV gradient equals the reference's autograd gradient on the voxels a batch touched, and leaves the
    others' gradient alone."""
    g = torch.Generator().manual_seed(3)
    R, C = 7, 4
    aabb = torch.tensor([0.0, 0, 0, 1, 1, 1])
    values = torch.randn(R**3, C, generator=g) * 2  # differences beyond 1: the linear part of the Huber too
    weight = torch.tensor([1e-2, 3e-3, 1e-3, 0.0])
    grid = VoxelGrid(values.clone(), aabb)
    grid.gather(torch.rand(30, 3, generator=g)).sum().backward()
    data_grad = grid.grad.clone()
    grid.add_tv(weight)
    ref_values = values.clone().requires_grad_(True)
    tv_reference(ref_values.reshape(R, R, R, C), weight).backward()
    touched = torch.zeros(R**3, dtype=torch.bool)
    touched[grid.touched_list[:grid.n_touched]] = True
    assert 0 < touched.sum() < R**3
    torch.testing.assert_close(grid.grad[touched], data_grad[touched] + ref_values.grad[touched], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grid.grad[~touched], data_grad[~touched])


def test_lazy_adam_updates_only_touched_voxels():
    grid = VoxelGrid(torch.zeros(4**3, 2), torch.tensor([0.0, 0, 0, 1, 1, 1]))
    out = grid.gather(torch.tensor([[0.1, 0.1, 0.1]]))
    out.sum().backward()
    n = grid.adam_step(lr=0.1, step=1)
    assert n == 8
    moved = torch.nonzero(grid.values.abs().sum(-1)).squeeze(1)
    assert len(moved) == 8 and torch.allclose(grid.values[moved], torch.full((8, 2), -0.1))
    assert grid.grad.abs().sum() == 0 and grid.touched.sum() == 0


def _view(width=8, height=6):
    K = torch.tensor([[10.0, 0, width / 2], [0, 10.0, height / 2], [0, 0, 1]])
    cam_from_world = torch.eye(4)
    cam_from_world[2, 3] = 3.0  # camera at (0, 0, -3) looking along +z
    return View("v", torch.zeros(height, width, 3), None, cam_from_world, K, width, height)


def test_view_rays_follow_the_pixel_convention():
    origins, dirs, z_per_t = view_rays(_view())
    torch.testing.assert_close(origins[0], torch.tensor([0.0, 0, -3]))
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(48))
    # pixel (row 0, column 0) centre (0.5, 0.5): direction ((0.5 - 4) / 10, (0.5 - 3) / 10, 1), normalised
    d = torch.tensor([-0.35, -0.25, 1.0])
    torch.testing.assert_close(dirs[0], d / d.norm())
    torch.testing.assert_close(z_per_t[0], 1 / d.norm())


def test_march_kernel_matches_reference():
    g = torch.Generator().manual_seed(2)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    occupancy = (torch.rand(16, 16, 16, generator=g) > 0.5).to(torch.uint8)
    model = NerfModel.create(aabb, 33, 4, 16, 0.01, occupancy)
    origins = torch.randn(50, 3, generator=g) * 0.2 + torch.tensor([0.0, 0, -3])
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=g) * 0.2 + torch.tensor([0.0, 0, 1]), dim=-1)
    jitter = torch.rand(50, generator=g)
    t1, o1, _ = model._march_cpu(origins, dirs, jitter)
    t2, o2 = march_reference(origins, dirs, jitter, aabb, occupancy, model.step)
    assert abs(len(t1) - len(t2)) <= 2  # a sample exactly on a cell face may fall either way
    if len(t1) == len(t2):
        torch.testing.assert_close(t1, t2, atol=1e-5, rtol=0)


@pytest.mark.parametrize("contracted", [False, True])
def test_march_prunes_as_the_reference(contracted):
    """The C++ march with a density grid keeps the samples the PyTorch reference keeps (march every ray to
    its end, then prune by weight and transmittance): same t, same grid-space points, rays stopped early."""
    from recon3d.radiance.nerf.space import GRID_BOX, Contraction

    g = torch.Generator().manual_seed(5)
    con = Contraction(torch.tensor([0.0, 0.0, 0.0]), 1.0) if contracted else None
    box = GRID_BOX if contracted else torch.tensor([-1.0, -1, -1, 1, 1, 1])
    occupancy = (torch.rand(16, 16, 16, generator=g) > 0.3).to(torch.uint8)
    model = NerfModel.create(box, 33, 4, 16, 0.05, occupancy, contraction=con)
    model.grid.values[:, 0] = torch.randn(33**3, generator=g) * 4 + 2  # clouds: some rays end, some pass
    origins = torch.randn(300, 3, generator=g) * 0.3 + torch.tensor([0.0, 0, -3])
    dirs = torch.nn.functional.normalize(torch.randn(300, 3, generator=g) * 0.3 + torch.tensor([0.0, 0, 1]), dim=-1)
    jitter = torch.rand(300, generator=g)
    t, offsets, points = model._march_cpu(origins, dirs, jitter, 1e-3)
    t_all, off_all, _ = model._march_cpu(origins, dirs, jitter)
    t_ref, ray_ref, off_ref, points_ref = model._samples(origins, dirs, jitter, "torch", 1e-3)
    assert len(t) < 0.5 * len(t_all)  # pruned and stopped
    assert abs(len(t) - len(t_ref)) <= 3  # float32 transmittance at the 1e-4 / min_weight thresholds
    if len(t) == len(t_ref):
        torch.testing.assert_close(t, t_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(points, points_ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(offsets, off_ref)


@pytest.mark.parametrize("contracted", [False, True])
def test_model_render_backends_agree_and_round_trip(tmp_path, contracted):
    """Both backends render the same, in a box or in contracted space, and a saved model renders the same."""
    from recon3d.radiance.nerf.space import GRID_BOX, Contraction

    g = torch.Generator().manual_seed(3)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    con = Contraction(torch.tensor([0.0, 0.0, 1.0]), 2.0) if contracted else None
    occupancy = torch.ones(8, 8, 8, dtype=torch.uint8)
    model = NerfModel.create(GRID_BOX if contracted else aabb, 17, 6, 16, 0.05, occupancy, contraction=con,
                             near=0.25 if contracted else 0.0)
    model.grid.values[:, 0] = torch.randn(17**3, generator=g) * 3
    origins, dirs, _ = view_rays(_view(12, 10))
    with torch.no_grad():
        a = model.render(origins, dirs, torch.ones(3), "cpu", with_distortion=True)
        b = model.render(origins, dirs, torch.ones(3), "torch", with_distortion=True)
    samples, colour = (0.02, 5e-3) if contracted else (0.01, 2e-3)  # float32 sums along far longer rays
    assert abs(a[3].shaded - b[3].shaded) <= samples * a[3].shaded
    torch.testing.assert_close(a[0], b[0], atol=colour, rtol=0)
    torch.testing.assert_close(a[3].distortion, b[3].distortion, atol=colour, rtol=0)
    assert a[3].distortion.max() > 0
    model.save(tmp_path / "m.safetensors")
    back = NerfModel.load(tmp_path / "m.safetensors")
    assert back.shift == model.shift and torch.equal(back.grid.values, model.grid.values)
    assert back.near == model.near and (back.contraction is None) == (con is None)
    if contracted:
        assert back.contraction.radius == 2.0 and torch.equal(back.contraction.center, con.center)
    with torch.no_grad():
        torch.testing.assert_close(back.render(origins, dirs, torch.ones(3))[0], a[0])
    with pytest.raises(DataError, match="no NeRF model"):
        NerfModel.load(tmp_path / "missing.safetensors")


def test_resize_keeps_the_field():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    model = NerfModel.create(aabb, 9, 3, 16, 0.05, torch.ones(4, 4, 4, dtype=torch.uint8))
    xs = torch.linspace(-1, 1, 9)
    model.grid.values[:, 0] = (xs[:, None, None] + 0 * xs[None, :, None] + 0 * xs[None, None, :]).reshape(-1)
    before = float(model.grid.gather(torch.tensor([[0.3, 0.1, -0.2]]))[0, 0].detach()) + model.shift
    model.resize(17, 0.05)
    after = float(model.grid.gather(torch.tensor([[0.3, 0.1, -0.2]]))[0, 0].detach()) + model.shift
    assert model.grid.res == 17 and abs(before - after) < 1e-5
    assert np.isfinite(model.step)


def test_contraction_keeps_the_box_and_squeezes_the_world_into_the_shell():
    from recon3d.radiance.nerf.space import Contraction

    con = Contraction.of_box(torch.tensor([0.0, 0, 0, 4, 4, 4]))  # centre (2, 2, 2), radius 2
    inside = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(con(inside), (inside - 2) / 2)
    far = torch.tensor([[2.0 + 2 * 4, 2.0, 2.0], [2.0, 2.0 - 2 * 1e4, 2.0 + 2 * 5e3]])
    torch.testing.assert_close(con(far), torch.tensor([[1.75, 0.0, 0.0], [0.0, -1.9999, 0.99995]]))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) * torch.logspace(-1, 3, 500)[:, None]
    c = con(x)
    assert float(c.abs().max()) < 2
    torch.testing.assert_close(con.inverse(c), x, rtol=1e-3, atol=1e-4)


def test_contracted_march_matches_reference_and_respects_near():
    from recon3d.radiance.nerf.space import GRID_BOX, Contraction

    g = torch.Generator().manual_seed(4)
    occupancy = (torch.rand(16, 16, 16, generator=g) > 0.3).to(torch.uint8)
    con = Contraction(torch.tensor([0.0, 0.0, 0.0]), 1.0)
    model = NerfModel.create(GRID_BOX, 33, 4, 16, 0.01, occupancy, contraction=con, near=0.5)
    origins = torch.randn(40, 3, generator=g) * 0.3 + torch.tensor([0.0, 0, -3])
    dirs = torch.nn.functional.normalize(torch.randn(40, 3, generator=g) * 0.5 + torch.tensor([0.0, 0, 1]), dim=-1)
    jitter = torch.rand(40, generator=g)
    t1, o1, _ = model._march_cpu(origins, dirs, jitter)
    t2, o2 = march_reference(origins, dirs, jitter, GRID_BOX, occupancy, model.step, 0.5, con)
    assert abs(len(t1) - len(t2)) <= 2 and len(t1) > 40 * 15
    if len(t1) == len(t2):
        torch.testing.assert_close(t1, t2, rtol=1e-4, atol=1e-4)
    assert float(t1.min()) >= 0.5  # nothing before near
    # with every cell occupied, samples reach the far field (|u| up to 1000), spaced ever wider in the world and
    # about a step apart in grid space (up to 2 steps where a ray from the shell runs inwards)
    model.occupancy = torch.ones_like(occupancy)
    t, offsets, _ = model._march_cpu(origins[:1], dirs[:1], jitter[:1])
    points = con(origins[0] + t[:, None] * dirs[0])
    assert float(points[-1].abs().max()) > 1.99 and float(t[-1] - t[-2]) > 100 * float(t[1] - t[0])
    assert float((points[1:] - points[:-1]).norm(dim=-1).max()) <= 2 * model.step


def test_orbit_views_stand_upright_and_look_at_the_scene():
    """The orbit cameras keep the training cameras' up (OpenCV y points down), with a proper rotation, and
    look at the point the training cameras look at."""
    from recon3d.radiance.views import orbit_views
    from recon3d.synthetic.rigs import make_rig

    K = torch.tensor([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    views = [View(f"{i}", torch.zeros(0), None, torch.as_tensor(p, dtype=torch.float32), K, 160, 120)
             for i, p in enumerate(make_rig("orbit", 12))]  # z-up world, cameras level with the ground
    for orbit in orbit_views(views, 6):
        R = orbit.cam_from_world[:3, :3].double().numpy()
        assert np.isclose(np.linalg.det(R), 1.0)
        assert R[1] @ np.array([0, 0, 1.0]) < -0.5  # camera y (down) against the world's up
        center = -R.T @ orbit.cam_from_world[:3, 3].double().numpy()
        to_target = np.array([0, 0, 0.5]) - center  # the orbit rig's target
        assert R[2] @ to_target / np.linalg.norm(to_target) > 0.99


def test_orbit_sweeps_the_arc_the_cameras_cover_and_circles_where_they_surround_the_scene():
    """A capture from one side (a facade, a tree): the orbit stays on the arc the photos cover, reaches both of
    its ends and comes back (so the video loops), also where the arc crosses the angle origin; a ring of
    cameras gets the whole turn."""
    from recon3d.radiance.views import orbit_angles, orbit_views
    from recon3d.synthetic.rigs import make_rig

    arc = np.radians([350.0, 0.0, 15.0, 40.0])  # 50 degrees, across 0
    angles = orbit_angles(arc, 24)
    offset = np.mod(angles - np.radians(350.0), 2 * np.pi)  # from the arc's first camera, counter-clockwise
    assert offset.max() <= np.radians(50.0) + 1e-9 and offset.min() < 1e-9
    assert np.isclose(offset[12], np.radians(50.0)) and np.allclose(offset[1:12], offset[:12:-1])  # there and back
    ring = np.radians(np.arange(0.0, 360.0, 30.0))
    assert np.allclose(orbit_angles(ring, 8), 2 * np.pi * np.arange(8) / 8)
    for one_way in (np.radians([100.0, 100.0, 100.0]), np.radians([100.0])):  # a walk towards the scene
        swept = np.degrees(orbit_angles(one_way, 8))
        assert np.isclose(swept.min(), 85.0) and np.isclose(swept.max(), 115.0)  # 30 degrees about them

    K = torch.tensor([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    poses = make_rig("orbit", 12)  # 30 degrees apart around a z-up target; keep a quarter of the ring
    views = [View(f"{i}", torch.zeros(0), None, torch.as_tensor(p, dtype=torch.float32), K, 160, 120)
             for i, p in enumerate(poses[:4])]
    def azimuth(cfw):
        c = -cfw[:3, :3].T @ cfw[:3, 3]
        return np.arctan2(c[1], c[0])
    seen = np.array([azimuth(p) for p in poses[:4]])
    swept = np.array([azimuth(v.cam_from_world.double().numpy()) for v in orbit_views(views, 16)])
    lo, hi = seen.min(), seen.max()
    assert hi - lo < np.radians(100)  # the test's arc does not cross the atan2 cut
    assert swept.min() > lo - 0.05 and swept.max() < hi + 0.05
    assert swept.min() < lo + 0.05 and swept.max() > hi - 0.05


def test_colour_head_shade_is_forward_per_sample():
    """`shade` (directions once per ray, in-place activations) gives `forward`'s colours and gradients."""
    from recon3d.radiance.nerf.field import ColourHead

    g = torch.Generator().manual_seed(6)
    head = ColourHead(5, 16)
    ray_of = torch.tensor([0, 0, 0, 2, 2, 3])
    dirs = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=-1)
    feats = torch.randn(6, 5, generator=g, requires_grad=True)
    a = head(feats, dirs[ray_of])
    (ga,) = torch.autograd.grad(a.square().sum(), feats)
    b = head.shade(feats, dirs, ray_of)
    (gb,) = torch.autograd.grad(b.square().sum(), feats)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)
