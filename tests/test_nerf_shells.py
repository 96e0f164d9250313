"""The NeRF's shells: where rays cross them, how they composite, and that they hold a background with parallax
that the env map alone cannot."""

import dataclasses
import math

import pytest
import torch

from recon3d.radiance.envmap import EnvMap
from recon3d.radiance.nerf.shells import Shells
from recon3d.radiance.views import View, view_rays
from recon3d.synthetic.rigs import orbit

BOX = torch.tensor([-1.0, -1, -1, 1, 1, 1])


def test_shells_are_spaced_in_inverse_radius_beyond_the_box():
    shells = Shells.around_box(BOX + 0.5, 4, 16.0, 8)
    r0 = math.sqrt(3)
    torch.testing.assert_close(shells.center, torch.full((3,), 0.5))
    torch.testing.assert_close(1 / shells.radii, torch.linspace(1 / r0, 1 / (16 * r0), 5)[1:])


def test_rays_cross_each_sphere_once_beyond_the_box():
    """The crossing is on the sphere, in front of the origin and past the box; a camera outside a sphere that
    looks away from it does not cross it."""
    shells = Shells.around_box(BOX, 5, 8.0, 8)
    g = torch.Generator().manual_seed(0)
    origins = torch.cat([torch.rand(200, 3, generator=g) * 2 - 1, torch.randn(200, 3, generator=g) * 4])
    dirs = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=-1)
    points, crossed = shells.crossings(origins, dirs)
    torch.testing.assert_close(points.norm(dim=-1)[crossed], shells.radii[:, None].expand_as(crossed)[crossed])
    t = ((points - origins) * dirs).sum(-1)
    assert (t[crossed] > 0).all() and crossed[:, :200].all()  # from inside the box every sphere is crossed
    leave = torch.maximum((BOX[:3] - origins) / dirs, (BOX[3:] - origins) / dirs).amin(-1)  # where the box ends
    assert (t[crossed] >= leave.expand_as(t)[crossed] - 1e-5).all()
    away = shells.crossings(torch.tensor([[20.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]))[1][:, 0]
    assert away.tolist() == [r > 20 for r in shells.radii.tolist()]


def test_shells_composite_front_to_back_over_the_far_field():
    shells = Shells.around_box(BOX, 2, 8.0, 4)
    big = 30.0
    with torch.no_grad():
        shells.texture[0] = torch.tensor([big, -big, -big, 0.0])[:, None, None]  # red, alpha 0.5
        shells.texture[1] = torch.tensor([-big, big, -big, big])[:, None, None]  # green, opaque
    origins, dirs = torch.zeros(3, 3), torch.eye(3)
    far = torch.full((3, 3), 0.25)
    torch.testing.assert_close(shells(origins, dirs, far), torch.tensor([[0.5, 0.5, 0.0]]).expand(3, 3))
    with torch.no_grad():
        shells.texture[:, 3] = -big  # all transparent: the far field shows
    torch.testing.assert_close(shells(origins, dirs, far), far)


def striped_sphere(origins: torch.Tensor, dirs: torch.Tensor, radius: float = 6.0) -> torch.Tensor:
    """Colours (R, 3) of a sphere of `radius` about the origin, 12 stripes around, seen from inside it."""
    b = (origins * dirs).sum(-1)
    t = -b + (b**2 - (origins**2).sum(-1) + radius**2).sqrt()
    p = origins + t[:, None] * dirs
    s = 0.5 + 0.4 * torch.sin(6 * torch.atan2(p[:, 1], p[:, 0]))
    return torch.stack([s, 1 - s, 0.5 + 0.3 * p[:, 2] / radius], -1)


def fit(far: torch.nn.Module, train: tuple, test: tuple, steps: int = 300) -> float:
    """Fit `far` (env map + shells or the env map alone) to the training rays' colours; its test MSE."""
    opt = torch.optim.Adam(far.parameters(), lr=0.1)
    for _ in range(steps):
        loss = ((far(*train[:2]) - train[2]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((far(*test[:2]) - test[2]) ** 2).mean())


class _EnvOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.envmap = EnvMap(32)

    def forward(self, origins, dirs):
        return self.envmap(dirs)


class _WithShells(_EnvOnly):
    def __init__(self):
        super().__init__()
        self.shells = Shells.around_box(BOX, 8, 8.0, 32)

    def forward(self, origins, dirs):
        return self.shells(origins, dirs, self.envmap(dirs))


@pytest.mark.parametrize("seed", [0, 1])
def test_shells_hold_a_background_with_parallax_the_env_map_cannot(seed):
    """Cameras around the box see a striped sphere at 6 box radii: its stripes shift against the directions from
    one camera to the next, so one colour per direction fits them badly; the shells fit the held-out cameras
    several times better."""
    K = torch.tensor([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    cams = torch.as_tensor(orbit(16, radius=3.0, height=0.5, target=(0.0, 0.0, 0.0), seed=seed), dtype=torch.float32)

    def rays(indices):
        o, d = zip(*[view_rays(View("v", torch.zeros(0), None, cams[i], K, 32, 24))[:2] for i in indices],
                   strict=True)
        o, d = torch.cat(o), torch.cat(d)
        return o, d, striped_sphere(o, d)

    train, test = rays([i for i in range(16) if i % 4]), rays(range(0, 16, 4))
    torch.manual_seed(seed)
    env_only, with_shells = fit(_EnvOnly(), train, test), fit(_WithShells(), train, test)
    assert with_shells < 0.3 * env_only, (with_shells, env_only)


def test_photos_train_with_shells_save_load_and_resume(tmp_path):
    """The trainer's `shells` option: the model carries them, a saved model renders the same after loading,
    and a resumed run restores them with the rest."""
    from recon3d.radiance.nerf.model import NerfModel
    from recon3d.radiance.nerf.trainer import NerfTrainConfig, render_view, train
    from recon3d.radiance.views import load_views, split_views
    from recon3d.scene import Scene
    from recon3d.stages import ingest
    from recon3d.synthetic.splats import splat_world, write_splat_dataset
    from tests.test_gaussians_train import Interrupt, crash_at
    from tests.test_nerf_train import FAST

    data = write_splat_dataset(tmp_path / "data", 8, 48, 36, 200, 4, seed=2)
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(data)))
    train_names, test_names = split_views(scene, 8)
    sky = (0.4, 0.6, 0.9)
    photos = [dataclasses.replace(v, alpha=None) for v in load_views(scene, train_names, sky)]
    tests = [dataclasses.replace(v, alpha=None) for v in load_views(scene, test_names, sky)]
    points = splat_world(200, seed=2)["means"].double().numpy()
    cfg = NerfTrainConfig(**{**FAST, "steps": 80, "checkpoint_every": 40}, shells=4)
    straight = train(photos, cfg, torch.ones(3), tmp_path / "a", tests, points=points)
    model = straight.model
    assert model.shells is not None and model.shells.radii.shape == (4,)
    assert not torch.equal(model.shells.texture, Shells.around_box(model.grid.aabb, 4, 16.0, 32).texture)
    again = NerfModel.load(model.save(tmp_path / "model.safetensors"))
    torch.testing.assert_close(render_view(again, tests[0], torch.ones(3), "cpu")[0],
                               render_view(model, tests[0], torch.ones(3), "cpu")[0])

    with pytest.raises(Interrupt):
        train(photos, cfg, torch.ones(3), tmp_path / "b", tests, crash_at(60), points=points)
    resumed = train(photos, cfg, torch.ones(3), tmp_path / "b", tests, points=points)
    assert resumed.resumed_from == 40
    torch.testing.assert_close(resumed.model.shells.texture, model.shells.texture, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="--set nerf.shells=0 or --set nerf.space=box"):
        NerfTrainConfig(shells=4, space="contract")
