"""pipelines/labeled_scene.yaml end to end on a small labeled synthetic scene, and its report."""

from __future__ import annotations

import numpy as np

from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.io import ply
from recon3d.report.html import write_report
from recon3d.synthetic.dataset import write_labeled_dataset

QUICK = {"detect": {"epochs": 1, "imgsz": 64, "batch": 4}, "gaussians": {"steps": 60, "refine_start": 1000},
         "features": {"mask_classes": ["car"]}, "check": {"require_pass": False}}


def test_labeled_scene_pipeline(tmp_path):
    data = tmp_path / "data"
    truth = write_labeled_dataset(data, n_images=10, width=240, height=180, n_points=500, moving=True)
    name, nodes = load_pipeline("labeled_scene", data=data, sets=QUICK)
    out = tmp_path / "out"
    result = run_pipeline(name, nodes, out)
    scene = result.scene("export")
    assert scene.class_names == truth.class_names and scene.labels.keys() == truth.labels.keys()
    assert len(scene.poses) >= 8 and scene.points.classes is not None
    detect = scene.metrics["detect"]
    assert detect["kind"] == "labels" and detect["images"] == ["images/000.png", "images/008.png"]
    assert (out / "detect" / "pr_bbox.png").is_file()
    _, _, rest = ply.read_points(out / "points.ply")
    np.testing.assert_array_equal(rest["class"], scene.points.classes)
    lifting = scene.metrics["lift_labels"]
    assert lifting["points"]["total"] == len(scene.points) and "heldout" in lifting["gaussians"]
    assert (out / "labels" / "gaussians_labeled.ply").is_file()
    page = write_report(out).read_text()
    assert "Labels: detect" in page and "Labels: lift_labels" in page and "pr_bbox.png" in page
    # the viewer reads the classes of the points and of the Gaussians, for its colour toggle
    from recon3d.viewer import load_view

    view = load_view(out)
    assert view.class_names == truth.class_names and view.points.classes is not None
    assert view.gaussian_classes is not None and len(view.gaussian_classes) == len(view.gaussians["centers"])
    # and its colour toggle recolours them, and back (viser's own handles, no browser)
    import viser

    from recon3d.viewer import class_colours, recolour

    server = viser.ViserServer(port=0, verbose=False)
    try:
        layers = {"points": server.scene.add_point_cloud("/p", view.points.xyz, view.points.rgb),
                  "Gaussians": server.scene.add_gaussian_splats("/g", **view.gaussians)}
        recolour(view, layers, by_class=True)
        np.testing.assert_array_equal(layers["points"].colors, class_colours(view.points.classes))
        np.testing.assert_array_equal(layers["Gaussians"].rgbs, class_colours(view.gaussian_classes))
        recolour(view, layers, by_class=False)
        np.testing.assert_array_equal(layers["points"].colors, view.points.rgb)
    finally:
        server.stop()


def test_labels_pipeline_on_photos_of_different_scenes(tmp_path):
    """pipelines/labels.yaml: detection and segmentation alone, no SfM (coco8's unrelated photos are its use);
    the labels leave as COCO with masks, the scores reach the summary's counts."""
    import json

    data = tmp_path / "data"
    truth = write_labeled_dataset(data, n_images=8, width=160, height=120, n_points=300)
    (data / "transforms.json").unlink()  # photos and their labels only
    boxes_only = json.loads((data / "labels.json").read_text())
    for annotation in boxes_only["annotations"]:
        annotation.pop("segmentation")
    (data / "labels.json").write_text(json.dumps(boxes_only))
    name, nodes = load_pipeline("labels", data=data, sets={"detect": {"epochs": 1, "imgsz": 64, "batch": 4}})
    out = tmp_path / "out"
    result = run_pipeline(name, nodes, out)
    assert [n.id for n in nodes] == ["ingest", "detect", "segment"] and not result.scene().poses
    counts = json.loads((out / "reports" / "detect.json").read_text())["counts"]
    assert "bbox_mAP50" in counts and "bbox_mAP50_95" in counts
    written = json.loads((out / "segment" / "labels.json").read_text())
    assert len(written["annotations"]) == sum(len(lab) for lab in truth.labels.values())
    assert all("segmentation" in a for a in written["annotations"])  # GrabCut's masks (or the box kept as one)
