"""export: COLMAP binary model, PLY cloud and transforms.json read back to the scene; the runner publishes them."""

import json

import numpy as np
import open3d as o3d
import pycolmap
import pytest

from recon3d import stages
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.errors import StageError
from recon3d.io import colmap, nerfstudio, ply
from recon3d.scene import Scene
from recon3d.stages import export
from recon3d.stages.base import Stage, StageConfig, StageContext
from recon3d.synthetic.generate import make_scene


class LoadConfig(StageConfig):
    path: str = ""


def load_run(scene, cfg, ctx=None):
    loaded = Scene.load(cfg.path)
    return scene.replace(**{f: getattr(loaded, f) for f in ("source", "images", "cameras", "poses", "features",
                                                             "points")})


stages.register(Stage("load_scene", 1, LoadConfig, load_run, reads=(), summary="test",
                      writes=("source", "images", "cameras", "poses", "features", "points")))


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    scene, _ = make_scene(tmp_path_factory.mktemp("export"), model="OPENCV", n_images=5, n_points=300, seed=4)
    return scene


def test_files_read_back_to_the_scene(truth):
    ctx = StageContext.standalone("export")
    out = export.run(truth, export.ExportConfig(), ctx)
    assert out is truth and ctx.results["files"] == ["sparse/0", "points.ply", "transforms.json"]
    root = ctx.published
    rec = pycolmap.Reconstruction(str(root / "sparse/0"))
    assert rec.num_reg_images() == 5 and rec.num_points3D() == len(truth.points)
    back = colmap.read_model(root / "sparse/0", truth.source.path + "/images")
    for name, pose in truth.poses.items():
        np.testing.assert_allclose(back.poses[name], pose, atol=1e-12)
    xyz, rgb, rest = ply.read_points(root / "points.ply")
    np.testing.assert_array_equal(xyz, truth.points.xyz)
    np.testing.assert_array_equal(rgb, truth.points.rgb)
    np.testing.assert_array_equal(rest["track_length"], np.diff(truth.points.track_offsets))
    assert len(o3d.io.read_point_cloud(str(root / "points.ply")).points) == len(truth.points)
    meta = json.loads((root / "transforms.json").read_text())
    assert meta["ply_file_path"] == "points.ply" and meta["frames"][0]["file_path"].startswith("/")
    ns = nerfstudio.read_transforms(root)  # images named by their absolute paths now
    for im, back_im in zip(truth.images, ns.images, strict=True):
        assert back_im.path == im.path
        np.testing.assert_allclose(ns.poses[back_im.name], truth.poses[im.name], atol=1e-9)


def test_unposed_images_are_left_out_and_no_poses_is_an_error(truth):
    first = truth.images[0].name
    ctx = StageContext.standalone("export")
    export.run(truth.replace(poses={n: p for n, p in truth.poses.items() if n != first}),
               export.ExportConfig(ply="", transforms=""), ctx)
    assert ctx.dropped == [{"item": first, "reason": "not posed: left out of the exported model"}]
    assert not (ctx.published / "points.ply").exists()
    with pytest.raises(StageError, match="no posed images"):
        export.run(truth.replace(poses={}), export.ExportConfig())


def test_the_runner_publishes_into_out_also_from_the_cache(truth, tmp_path):
    saved = tmp_path / "truth"
    truth.save(saved)
    (tmp_path / "p.yaml").write_text(f"""
name: t
nodes:
  - {{id: load, stage: load_scene, overrides: {{path: "{saved}"}}}}
  - {{id: export, stage: export, after: [load]}}
""")
    _, nodes = load_pipeline(tmp_path / "p.yaml", {})
    out = tmp_path / "out"
    run_pipeline("t", nodes, out)
    assert pycolmap.Reconstruction(str(out / "sparse/0")).num_reg_images() == 5
    (out / "points.ply").unlink()
    second = run_pipeline("t", nodes, out)
    assert second.executed == [] and (out / "points.ply").is_file()
    assert Scene.load(saved).poses.keys() == truth.poses.keys()
