"""The mesh stage and `recon3d mesh`: a model of known surfaces meshed back to them, and the command as a user
types it on a trained run (files, report, bad inputs)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon3d.geometry.rotation import matrix_to_quat
from recon3d.io.files import write_json
from recon3d.io.mesh import read_mesh
from recon3d.radiance.gaussians.model import GaussianModel
from recon3d.radiance.sh import rgb_to_sh
from recon3d.scene import RadianceModel
from recon3d.stages import mesh as mesh_stage
from recon3d.stages.base import StageContext
from recon3d.surface import measure
from recon3d.synthetic.generate import make_scene
from recon3d.synthetic.surfaces import make_world, quad_mesh, surface_colour

HOME = Path(__file__).resolve().parents[1]
SPACING = 0.04  # world units between the discs laid on the true surfaces


def recon3d(*args):
    return subprocess.run([sys.executable, "-m", "recon3d.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=900)


def surface_gaussians(quads, spacing: float) -> dict[str, torch.Tensor]:
    """Opaque flat discs on a regular grid over each (rectangular) quad, in the quad's texture colour: a
    Gaussian model whose surface is the truth."""
    means, quats, scales, rgb = [], [], [], []
    for k, q in enumerate(quads):
        nu, nv = (max(2, math.ceil(np.linalg.norm(a) / spacing)) for a in (q.axis_u, q.axis_v))
        s, t = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv)
        st = np.column_stack([s.ravel(), t.ravel()])
        u, v = q.axis_u / np.linalg.norm(q.axis_u), q.axis_v / np.linalg.norm(q.axis_v)
        R = np.column_stack([u, v, np.cross(u, v)])
        means.append(q.point(st))
        quats.append(np.tile(matrix_to_quat(R), (len(st), 1)))
        scales.append(np.tile([0.6 * np.linalg.norm(q.axis_u) / nu, 0.6 * np.linalg.norm(q.axis_v) / nv, 1e-4],
                              (len(st), 1)))
        rgb.append(surface_colour(quads, np.full(len(st), k), st) / 255)
    n = sum(len(m) for m in means)
    return {"means": torch.tensor(np.concatenate(means), dtype=torch.float32),
            "scales": torch.log(torch.tensor(np.concatenate(scales), dtype=torch.float32)),
            "quats": torch.tensor(np.concatenate(quats), dtype=torch.float32),
            "opacities": torch.full((n,), 6.0),  # sigmoid: 0.998
            "sh0": rgb_to_sh(torch.tensor(np.concatenate(rgb), dtype=torch.float32))[:, None],
            "shN": torch.zeros(n, 0, 3)}


@pytest.fixture(scope="module")
def known_model(tmp_path_factory):
    """A scene of 8 orbit views (160 x 120) of the seed-0 world, its truth points, and a Gaussian model of the
    world's boxes and ground laid on the true surfaces (the backdrop wall left out)."""
    root = tmp_path_factory.mktemp("known")
    quads = make_world(0)[:-1]  # no wall: the region to mesh comes from the points on the ground and boxes
    scene, _ = make_scene(root, rig="orbit", n_images=8, width=160, height=120, world=quads, n_points=3000)
    model = GaussianModel.from_tensors(surface_gaussians(quads, SPACING), sh_degree=0)
    path = model.save(root / "model" / "model.safetensors")
    write_json(path.with_name("model.json"), {"kind": "gaussians", "background": "white", "seed": 0, "downscale": 1.0,
                                              "max_side": 0, "sh_degree": 0, "rasterizer": "cpu",
                                              "train": [im.name for im in scene.images], "test": []})
    return scene.replace(radiance={"gaussians": RadianceModel("gaussians", str(path))}), quads


@pytest.mark.parametrize("backend", ["tsdf", "poisson"])
def test_mesh_of_a_model_on_known_surfaces_finds_them(known_model, backend, tmp_path):
    scene, quads = known_model
    ctx = StageContext(node_id="mesh", workdir=tmp_path / "work", publish_dir=tmp_path / "out")
    cfg = mesh_stage.MeshConfig(backend=backend, resolution=256, depth="planar")  # exact on flat discs
    entry = mesh_stage.run(scene, cfg, ctx).metrics["mesh"]
    assert entry["kind"] == "mesh" and entry["views"] == 8 and entry["triangles"] > 1000
    assert set(entry["files"]) == {"ply", "obj", "glb"} and Path(entry["preview"]).is_file()
    mesh = read_mesh(tmp_path / "out" / "mesh.ply")
    truth = measure.o3d_mesh(*quad_mesh(quads))
    seen = scene.points.xyz  # true surface points, each seen by two views or more
    extent = float(np.linalg.norm(seen.max(0) - seen.min(0)))
    score = measure.score_surface(mesh, truth, seen, threshold=0.01 * extent, samples=50_000)
    assert score.fscore > 0.9, score
    assert score.chamfer < 0.004 * extent, score  # ~ a voxel (the region / 256) of this coarse test


def test_mesh_refuses_what_it_cannot_do(known_model, tmp_path):
    from recon3d.errors import StageError

    scene, _ = known_model
    ctx = StageContext(node_id="mesh", workdir=tmp_path / "w", publish_dir=tmp_path / "o")
    with pytest.raises(StageError, match="no trained radiance model"):
        mesh_stage.run(scene.replace(radiance={}), mesh_stage.MeshConfig(), ctx)
    with pytest.raises(StageError, match=r"would need .* GiB.*--set mesh.voxel="):
        mesh_stage.run(scene, mesh_stage.MeshConfig(voxel=1e-5), ctx)
    assert not (tmp_path / "o" / "mesh.ply").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`recon3d splat` on data/demo for a few steps: a finished run with a (blurry) Gaussian model."""
    out = tmp_path_factory.mktemp("splat") / "run"
    proc = recon3d("splat", "--data", HOME / "data/demo", "--out", out, "--steps", 40)
    assert proc.returncode == 0, proc.stderr
    return out


def test_recon3d_mesh_meshes_a_finished_run(trained_run):
    import trimesh

    proc = recon3d("mesh", trained_run, "--set", "mesh.resolution=128", "--set", "mesh.alpha_min=0.2")
    assert proc.returncode == 0, proc.stderr
    for suffix in ("ply", "obj", "glb"):
        assert f"mesh: {(trained_run / f'mesh.{suffix}').resolve()}" in proc.stdout
        assert len(trimesh.load(trained_run / f"mesh.{suffix}", force="mesh").faces) > 0
    assert "triangles" in proc.stderr and (trained_run / "mesh.png").is_file()
    report = (trained_run / "report.html").read_text()
    assert "<h2>Mesh: mesh</h2>" in report and "mesh.glb" in report
    assert re.search(r"mesh \(recon3d mesh\) \d+\.\d s", report)  # in the summary's time row


def test_recon3d_mesh_with_data_reuses_the_trained_model(trained_run):
    proc = recon3d("mesh", "--data", HOME / "data/demo", "--out", trained_run, "--steps", 40,
                   "--set", "mesh.resolution=128", "--set", "mesh.alpha_min=0.2", "--backend", "poisson")
    assert proc.returncode == 0, proc.stderr
    assert "ran 1 node(s)" in proc.stderr  # the mesh node; the SfM points and the training come from the cache
    assert "poisson of the gaussians model" in proc.stderr.replace("\n", " ")


def test_a_mesh_of_an_earlier_model_leaves_the_report_when_another_is_trained(trained_run, tmp_path):
    """`recon3d mesh OUT`, then a new `splat` into OUT: the report no longer shows the mesh of the model that is
    gone as this run's (mesh.json names the model file it meshed)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    (out / "mesh.json").unlink(missing_ok=True)
    assert recon3d("mesh", out, "--set", "mesh.resolution=64", "--set", "mesh.alpha_min=0.2").returncode == 0
    assert "<h2>Mesh: mesh</h2>" in (out / "report.html").read_text()
    proc = recon3d("splat", "--data", HOME / "data/demo", "--out", out, "--steps", 41)
    assert proc.returncode == 0, proc.stderr
    assert "<h2>Mesh: mesh</h2>" not in (out / "report.html").read_text()
    assert "mesh: what `recon3d render` / `recon3d mesh` wrote showed a model this run has replaced" in proc.stderr
    assert not any((out / f"mesh.{suffix}").exists() for suffix in ("json", "ply", "obj", "glb", "png"))


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "mesh.alpha_min=1.0"], "renders no pixel with opacity >= 1.0"),
    (["--set", "mesh.voxel=0.00001"], "--set mesh.voxel="),
    (["--set", "mesh.resolution=-3"], "--set mesh: resolution"),
    (["--set", "gaussians.steps=3"], "write the settings as --set mesh.KEY=VALUE"),
    (["--backend", "marching"], "--backend 'marching': use tsdf or poisson"),
])
def test_recon3d_mesh_bad_settings_are_one_line(trained_run, args, message):
    proc = recon3d("mesh", trained_run, *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_recon3d_mesh_on_folders_without_a_model(tmp_path):
    proc = recon3d("mesh", tmp_path)
    assert proc.returncode == 2 and "not a recon3d run folder" in proc.stderr
    proc = recon3d("mesh")
    assert proc.returncode == 2 and "nothing to mesh" in proc.stderr
    out = tmp_path / "ingested"
    assert recon3d("run", "demo", "--data", HOME / "data/demo", "--out", out).returncode == 0
    proc = recon3d("mesh", out)
    assert proc.returncode == 2 and "holds no trained radiance model" in proc.stderr
    assert "recon3d splat --data DATA" in proc.stderr
