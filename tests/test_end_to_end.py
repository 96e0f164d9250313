"""Synthetic datasets in each format and camera model go through ingest and pass the exact truth check."""

import json

import numpy as np
import pytest

from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.errors import ConfigError
from recon3d.scene import Scene
from recon3d.stages import evaluate
from recon3d.stages.base import StageContext
from recon3d.synthetic.dataset import write_dataset

CASES = [("nerfstudio", "PINHOLE", "orbit"), ("nerfstudio", "OPENCV_FISHEYE", "handheld"),
         ("colmap", "FULL_OPENCV", "random_in_box"), ("colmap", "SIMPLE_RADIAL", "forward_facing")]


@pytest.mark.parametrize("fmt, model, rig", CASES)
def test_dataset_ingests_exactly(tmp_path, fmt, model, rig):
    data = tmp_path / "data"
    write_dataset(data, fmt, rig, model, n_images=5, n_points=300, width=96, height=72, seed=3)
    name, nodes = load_pipeline("demo", data=data)
    result = run_pipeline(name, nodes, tmp_path / "out")
    metrics = result.scene().metrics["check"]
    assert metrics["passed"], metrics["failures"]
    assert metrics["images_compared"] == 5 and metrics["observations_compared"] > 100
    assert metrics["reprojection_max_px"] < 1e-3


def test_evaluate_catches_a_wrong_camera(tmp_path):
    """A focal length 1 % off must fail the exact band: the check is not vacuous."""
    data = tmp_path / "data"
    write_dataset(data, "nerfstudio", "orbit", "PINHOLE", n_images=4, n_points=200, width=96, height=72)
    text = (data / "transforms.json").read_text()
    fl = text.split('"fl_x": ')[1].split(",")[0]
    (data / "transforms.json").write_text(text.replace(f'"fl_x": {fl}', f'"fl_x": {float(fl) * 1.01}'))
    name, nodes = load_pipeline("demo", data=data, sets={"check": {"require_pass": False}})
    metrics = run_pipeline(name, nodes, tmp_path / "out").scene().metrics["check"]
    assert not metrics["passed"] and "reprojection" in metrics["failures"][0]
    assert metrics["reprojection_mean_px"] > 0.1
    report = json.loads((tmp_path / "out/reports/check.json").read_text())  # why, beside the terminal's row
    assert report["counts"]["failures"].startswith("reprojection ") and report["metrics"]["ate_rmse"] >= 0


def test_a_nan_reprojection_fails_the_check(tmp_path, monkeypatch):
    """A truth point behind a scene camera reprojects to NaN: the check fails on it (NaN > band is False)."""
    data = tmp_path / "data"
    write_dataset(data, "nerfstudio", "orbit", "PINHOLE", n_images=4, n_points=200, width=96, height=72)
    truth = Scene.load(data / "ground_truth")
    monkeypatch.setattr(evaluate, "reprojection_errors", lambda *args: np.array([np.nan, 0.1]))
    ctx = StageContext.standalone("check")
    metrics = evaluate.run(truth, evaluate.EvaluateConfig(truth=str(data / "ground_truth")), ctx).metrics["check"]
    assert metrics["position_rmse_rel"] < 1e-9 and not metrics["passed"]
    assert metrics["failures"] == ["reprojection nan px > 0.5"] and ctx.counts["failures"] == metrics["failures"][0]


def test_bad_dataset_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown rig 'spiral'"):
        write_dataset(tmp_path, rig="spiral")
    with pytest.raises(ConfigError, match="unknown camera model 'FISH'"):
        write_dataset(tmp_path, model="FISH")
