"""Labeled-scene figures (issue 9). Prints; not a test.

    .venv/bin/python benchmarks/labeled_scene.py [--only lift,detector,moving,moving_lift] [--out DIR]

All on synthetic labeled scenes (`recon3d.synthetic.dataset.write_labeled_dataset`: an orbit of views
round three textured boxes of classes crate / cabinet / pedestal on a textured ground before a wall, with
exact masks and boxes per view), through `pipelines/labeled_scene.yaml` with nodes left out per part:

1. lift: ingest (labels from labels.json, poses set aside) -> SfM -> gaussians (from the SfM points) ->
   lift_labels. Points: each sparse point's true object is the surface nearest to it once the
   reconstruction is aligned to the truth (Sim(3) of the camera centres); the figure is the share of all
   sparse points whose lifted class is that object's (background included), and per class. Gaussians: the
   class masks rendered from the labeled Gaussians on the held-out views (every 8th, never trained on)
   against their true masks: mIoU (background included).
2. detector: the detect stage trains YOLO from its yaml on the training views of a larger scene and is
   scored (COCO box mAP50, pycocotools) on the held-out views; wall time of the training.
3. moving: a car that moves through every other view. SfM on the static scene, on the moving one, and on
   the moving one with `features.mask_classes=[car]`: ATE (relative to the camera extent), rotation error,
   mean reprojection error, and the sparse points more than 5 cm from every static surface once aligned
   (points on the car, which is nowhere for long, or plain wrong ones).
4. moving_lift: the moving scene through SfM (masked) -> gaussians -> lift_labels, with and without
   `mask_classes=[car]` for gaussians and lift_labels: Gaussians lifted as car and the held-out mIoU
   (the held-out views show no car).
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before pycolmap is imported: COLMAP's progress log off

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from recon3d.dag.pipeline import PipelineSpec, build_nodes, read_spec
from recon3d.dag.runner import run_pipeline
from recon3d.geometry.align import camera_extent, pose_errors
from recon3d.labels.lift import BACKGROUND, UNDECIDED
from recon3d.scene import Scene
from recon3d.synthetic.dataset import write_labeled_dataset
from recon3d.synthetic.labeled import CLASS_NAMES, surface_objects
from recon3d.synthetic.surfaces import make_labeled_world

SFM = ["ingest", "features", "match", "essential", "triangulate", "bundle_adjust"]


def pipeline(keep: list[str], data: Path, sets: dict[str, dict[str, Any]] | None = None):
    """The nodes of labeled_scene.yaml named in `keep`, each running after its nearest kept ancestors."""
    spec, where = read_spec("labeled_scene")
    by_id = {n.id: n for n in spec.nodes}

    def kept_parents(node_id: str) -> list[str]:
        out: list[str] = []
        for p in by_id[node_id].after:
            out += [p] if p in keep else kept_parents(p)
        return list(dict.fromkeys(out))

    nodes = [n.model_copy(update={"after": kept_parents(n.id)}) for n in spec.nodes if n.id in keep]
    return build_nodes(PipelineSpec(name=spec.name, nodes=nodes), where, sets, data)


def dataset_dir(out: Path, kind: str, views: int, size: tuple[int, int]) -> Path:
    """Where a dataset of this kind and shape is written once (and reused by later runs)."""
    return out / f"{kind}-{views}-{size[0]}x{size[1]}"


def run(keep: list[str], data: Path, out: Path, sets=None) -> tuple[Any, float]:
    name, nodes = pipeline(keep, data, sets)
    start = time.perf_counter()
    result = run_pipeline(name, nodes, out)
    return result, time.perf_counter() - start


def sfm_errors(scene: Scene, truth: Scene) -> dict[str, float]:
    names = [n for n in truth.poses if n in scene.poses]
    gt = np.stack([truth.poses[n] for n in names])
    e = pose_errors(np.stack([scene.poses[n] for n in names]), gt)
    s = e.summary()
    return {"registered": f"{len(names)}/{len(truth.images)}", "ate_rel": s["ate_rmse"] / camera_extent(gt),
            "rot_mean_deg": float(np.mean(e.rotation_error_deg)), "reproj_px": float(scene.points.error.mean()),
            "points": len(scene.points), "_alignment": e.alignment}


def part_lift(out: Path, views: int, size: tuple[int, int], steps: int) -> None:
    data = dataset_dir(out, "static", views, size)
    if not (data / "labels.json").is_file():
        write_labeled_dataset(data, n_images=views, width=size[0], height=size[1])
    truth = Scene.load(data / "ground_truth")
    sets = {"gaussians": {"steps": steps, "refine_stop": int(steps * 0.8)}}
    result, seconds = run(SFM + ["gaussians", "lift_labels"], data, out / "run-lift", sets)
    scene = result.scene("lift_labels")
    err = sfm_errors(scene, truth)
    quads, quad_object = make_labeled_world(0, 3)
    objects, dist = surface_objects(quads, quad_object, err.pop("_alignment").apply(scene.points.xyz))
    true_class = objects - 1  # background (object 0) -> -1 = BACKGROUND
    lifted = scene.points.classes
    print(f"lift: {len(truth.images)} views {size[0]}x{size[1]}, SfM {err}; {seconds:.0f} s in all")
    print(f"  points: median distance to the nearest true surface after alignment {np.median(dist):.4f} "
          f"(camera extent {camera_extent(np.stack(list(truth.poses.values()))):.2f})")
    print(f"  points labeled with their true object: {np.mean(lifted == true_class):.2%} of all "
          f"{len(lifted)}; undecided {np.mean(lifted == UNDECIDED):.2%}")
    for c, name in [(BACKGROUND, "background"), *enumerate(CLASS_NAMES[:3])]:
        sel = true_class == c
        print(f"  {name:>10}: {sel.sum():5d} points, {np.mean(lifted[sel] == c):.2%} correct")
    entry = scene.metrics["lift_labels"]["gaussians"]
    held = entry["heldout"]
    print(f"  gaussians: {entry['total']} ({steps} steps, init from the SfM points), {entry['labeled']} of an "
          f"object, {entry['background']} background, {entry['undecided']} undecided")
    print(f"  held-out views {held['views']}: mIoU {held['mIoU']:.3f} (objects only {held['mIoU_objects']:.3f}), "
          f"pixel accuracy {held['pixel_accuracy']:.3f}")
    print("  per class IoU: " + ", ".join(f"{k} {v['IoU']:.3f}" for k, v in held["per_class"].items()
                                           if v["IoU"] is not None))


def part_detector(out: Path, views: int, size: tuple[int, int]) -> None:
    data = dataset_dir(out, "detector", views, size)
    if not (data / "labels.json").is_file():
        write_labeled_dataset(data, n_images=views, width=size[0], height=size[1], seed=0)
    result, seconds = run(["ingest", "detect"], data, out / "run-detector")
    entry = result.scene("detect").metrics["detect"]
    report = json.loads((result.folders["detect"] / "report.json").read_text())
    counts = report["counts"]
    print(f"detector (labeled_scene.yaml's detect node): {counts['epochs']} epochs on {counts['train_images']} "
          f"training views {size[0]}x{size[1]} in {counts['train_seconds']:.0f} s of training, {seconds:.0f} s "
          f"with prediction and scoring; {counts['held_out_images']} held-out views")
    box = entry["bbox"]
    print(f"  held-out box mAP50 {box['mAP50']:.3f}, mAP {box['mAP']:.3f}, mAP75 {box['mAP75']:.3f} "
          f"({box['n_truth']} boxes); AP50 per class: "
          + ", ".join(f"{k} {v['AP50']:.3f}" for k, v in box["per_class"].items() if v["AP50"] is not None))
    print(f"  PR curves: {result.out / 'detect' / 'pr_bbox.png'}")


def part_moving(out: Path, views: int, size: tuple[int, int]) -> None:
    static, moving = dataset_dir(out, "static", views, size), dataset_dir(out, "moving", views, size)
    for data, flag in ((static, False), (moving, True)):
        if not (data / "labels.json").is_file():
            write_labeled_dataset(data, n_images=views, width=size[0], height=size[1], moving=flag)
    truth = Scene.load(static / "ground_truth")
    rows = {}
    for label, data, sets in (("static", static, None), ("moving, no mask", moving, None),
                              ("moving, mask_classes=[car]", moving, {"features": {"mask_classes": ["car"]}})):
        result, seconds = run(SFM, data, out / f"run-{label.split(',')[0]}-{0 if sets is None else 1}", sets)
        scene = result.scene("bundle_adjust")
        err = sfm_errors(scene, truth)
        quads, quad_object = make_labeled_world(0, 3)
        _, dist = surface_objects(quads, quad_object, err.pop("_alignment").apply(scene.points.xyz))
        err["points_off_static_surfaces"] = int((dist > 0.05).sum())  # on the car, or wrong
        rows[label] = err
        print(f"moving: {label:>28}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in err.items()) + f", {seconds:.0f} s")
    base, bad = rows["static"], rows["moving, no mask"]
    print(f"  without the mask: ATE x{bad['ate_rel'] / base['ate_rel']:.2f}, "
          f"reprojection x{bad['reproj_px'] / base['reproj_px']:.2f} of the static scene's; "
          f"{bad['points_off_static_surfaces'] - base['points_off_static_surfaces']} more points off the static "
          "surfaces")


def part_moving_lift(out: Path, views: int, size: tuple[int, int], steps: int) -> None:
    data = dataset_dir(out, "moving", views, size)
    if not (data / "labels.json").is_file():
        write_labeled_dataset(data, n_images=views, width=size[0], height=size[1], moving=True)
    for masked in (False, True):
        car = ["car"] if masked else []
        sets = {"features": {"mask_classes": ["car"]}, "lift_labels": {"mask_classes": car},
                "gaussians": {"steps": steps, "refine_stop": int(steps * 0.8), "mask_classes": car}}
        result, seconds = run(SFM + ["gaussians", "lift_labels"], data, out / f"run-moving-lift-{int(masked)}", sets)
        entry = result.scene("lift_labels").metrics["lift_labels"]["gaussians"]
        held = entry["heldout"]
        print(f"moving lift, gaussians/lift_labels.mask_classes={car}: {entry['per_class']['car']} "
              f"Gaussians lifted as car; held-out (no car in them) mIoU {held['mIoU']:.3f}, objects "
              f"{held['mIoU_objects']:.3f}; " + ", ".join(f"{k} {v['IoU']:.3f}" for k, v in held["per_class"].items()
                                                         if v["IoU"] is not None) + f"; {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="lift,detector,moving,moving_lift")
    parser.add_argument("--out", type=Path, default=Path("out/bench-labeled"))
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--gaussian-steps", type=int, default=3000)
    parser.add_argument("--detector-views", type=int, default=48)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    parts = args.only.split(",")
    if "lift" in parts:
        part_lift(args.out, args.views, size, args.gaussian_steps)
    if "detector" in parts:
        part_detector(args.out, args.detector_views, size)
    if "moving" in parts:
        part_moving(args.out, args.views, size)
    if "moving_lift" in parts:
        part_moving_lift(args.out, args.views, size, args.gaussian_steps)


if __name__ == "__main__":
    main()
